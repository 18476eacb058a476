"""``python -m conformance merge SHARD.json ...``: join ``run --shard I/N`` results into one.

The merged ``drift.json`` is byte-identical to what the unsharded run writes;
the Markdown and HTML reports are written next to it.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register"]


def _merge(args: argparse.Namespace) -> int:
    from conformance.report.document import merge_results
    from conformance.report.output import write_reports
    from conformance.report.schema import load

    try:
        merged = merge_results([load(path) for path in args.shards])
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    written = write_reports(merged, args.out, html=not args.no_html)
    print(
        f"merged {len(args.shards)} shard(s), {len(merged['cases'])} cases; wrote "
        + ", ".join(map(str, written.values()))
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``merge`` subcommand."""
    cmd = subparsers.add_parser(
        "merge", help="join sharded drift results into the unsharded result", description=__doc__
    )
    cmd.add_argument("shards", nargs="+", help="drift.json of each shard (1/N .. N/N)")
    cmd.add_argument("--out", default="drift-report", help="directory for the merged reports (default drift-report)")
    cmd.add_argument("--no-html", action="store_true", help="skip the HTML report")
    cmd.set_defaults(func=_merge)
