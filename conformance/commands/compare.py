"""``python -m conformance compare BASELINE CURRENT``: fail when the numbers moved beyond the thresholds.

Exit status: 0 when nothing regressed (improvements are listed), 1 when a
case regressed (a NaN where the baseline has a number included) or a
baseline case is missing from CURRENT, 2 when the two results are not
comparable (different settings) or a file is unreadable or not a drift
result.  The thresholds and their reasons are in
:mod:`conformance.report.drift`.  Results of schema version 1 (the committed
baselines may be older than the harness) are read and their case ids
respelled; torch is not needed.

BASELINE may be a directory: the file for CURRENT's stack,
``cpu-<capability>-torch<version>.json``, is taken from it.

``--update-baseline`` writes CURRENT over BASELINE (atomically) after the
comparison.  It is legitimate only when the move is understood and intended:
a deliberate change of the pinned torch or NumPy, a fix that moves Lucid
closer to the oracle, a change of the run's settings, or a new CI CPU (a new
file for its capability).  Commit the printed comparison with it.  It is not
a way to make a red CI green on a move nobody can explain.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["EXTRA", "baseline_name", "register"]

#: The install extra this command needs (named when one of its dependencies is missing).
EXTRA = "report"


def baseline_name(result: dict[str, Any]) -> str:
    """File name of the baseline for ``result``'s stack, e.g. ``cpu-avx512-torch2.13.0.json``."""
    env = result["environment"]
    devices = "-".join(result["settings"]["devices"])
    return f"{devices}-{env['cpu_capability'].lower()}-torch{env['torch'].split('+')[0]}.json"


def _write_baseline(path: Path, text: str, atomic_write: Callable[[Path, str], Path]) -> bool:
    """Write the baseline (creating its directory); on failure print why and return False."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)
    except OSError as err:
        print(f"error: cannot write baseline {path}: {err.strerror or err}", file=sys.stderr)
        return False
    return True


def _compare(args: argparse.Namespace) -> int:
    from conformance.report.drift import NotComparableError, compare_results
    from conformance.report.schema import atomic_write, dumps, load

    try:
        current = load(args.current)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    baseline_path = Path(args.baseline)
    # A directory, or a path that names no .json file: the baselines folder, created on update.
    if baseline_path.is_dir() or (not baseline_path.exists() and baseline_path.suffix != ".json"):
        baseline_path = baseline_path / baseline_name(current)
    if args.update_baseline and not baseline_path.exists():
        if not _write_baseline(baseline_path, dumps(current), atomic_write):
            return 2
        print(f"created baseline {baseline_path}")
        return 0
    try:
        baseline = load(baseline_path)
        comparison = compare_results(baseline, current)
    except FileNotFoundError:
        print(
            f"error: no baseline {baseline_path} for this stack; create it with "
            f"`python -m conformance compare {args.baseline} {args.current} --update-baseline`",
            file=sys.stderr,
        )
        return 2
    except (NotComparableError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyError, TypeError) as err:  # only without jsonschema, which would have named the field
        print(f"error: {baseline_path} or {args.current} is not a complete drift result: {err!r}", file=sys.stderr)
        return 2
    print(f"baseline {baseline_path} vs {args.current}")
    print(comparison.render())
    if args.update_baseline:
        if not _write_baseline(baseline_path, dumps(current), atomic_write):
            return 2
        print(f"updated baseline {baseline_path}")
        return 0
    return 1 if comparison.failed else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``compare`` subcommand."""
    cmd = subparsers.add_parser(
        "compare",
        help="compare a drift result with a baseline; exit 1 on drift beyond the documented thresholds",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument("baseline", help="baseline drift.json, or a directory of baselines")
    cmd.add_argument("current", help="drift.json of the run to judge")
    cmd.add_argument(
        "--update-baseline", action="store_true", help="write CURRENT over BASELINE after comparing (see above)"
    )
    cmd.set_defaults(func=_compare, extra=EXTRA)
