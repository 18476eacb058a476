"""``python -m conformance merge SHARD.json ...``: join ``run --shard I/N`` results into one.

The merged ``drift.json`` is byte-identical to what the unsharded run writes;
the Markdown and HTML reports are written next to it, the three as one set
(see ``run``).  ``--out`` is checked before any shard is read.

Exit status: 0 when the shards merged, 2 when ``--out`` cannot take the
reports or the shards are unreadable, overlap, miss a slice, come from
different runs or hold cases their settings do not make; 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["EXTRA", "register"]

#: The install extra this command needs (named when one of its dependencies is missing).
EXTRA = "report"


def _merge(args: argparse.Namespace) -> int:
    from conformance.report.document import merge_results
    from conformance.report.output import OutputError, stage_reports
    from conformance.report.schema import load

    try:
        staged = stage_reports(args.out)
    except OutputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with staged:
        try:
            merged = merge_results([load(path) for path in args.shards])
        except (OSError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        try:
            written = staged.commit(merged, html=not args.no_html)
        except OutputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(
        f"merged {len(args.shards)} shard(s), {len(merged['cases'])} cases; wrote "
        + ", ".join(map(str, written.values()))
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``merge`` subcommand."""
    cmd = subparsers.add_parser(
        "merge",
        help="join sharded drift results into the unsharded result",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("shards", nargs="+", help="drift.json of each shard (1/N .. N/N)")
    cmd.add_argument(
        "--out",
        default="drift-report",
        help="directory for the merged reports, replaced as a whole (default drift-report)",
    )
    cmd.add_argument("--no-html", action="store_true", help="skip the HTML report")
    cmd.set_defaults(func=_merge, extra=EXTRA)
