"""``python -m conformance compare BASELINE CURRENT``: fail when the numbers moved beyond the thresholds.

Exit status: 0 when nothing regressed (improvements are listed), 1 when a
case regressed or a baseline case is missing from CURRENT, 2 when the two
results are not comparable (different settings) or unreadable.  The
thresholds and their reasons are in :mod:`conformance.report.drift`.

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
from pathlib import Path
from typing import Any

__all__ = ["baseline_name", "register"]


def baseline_name(result: dict[str, Any]) -> str:
    """File name of the baseline for ``result``'s stack, e.g. ``cpu-avx512-torch2.13.0.json``."""
    env = result["environment"]
    devices = "-".join(result["settings"]["devices"])
    return f"{devices}-{env['cpu_capability'].lower()}-torch{env['torch'].split('+')[0]}.json"


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
        if args.update_baseline:
            baseline_path.parent.mkdir(parents=True, exist_ok=True)
    if args.update_baseline and not baseline_path.exists():
        atomic_write(baseline_path, dumps(current))
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
    print(f"baseline {baseline_path} vs {args.current}")
    print(comparison.render())
    if args.update_baseline:
        atomic_write(baseline_path, dumps(current))
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
    cmd.set_defaults(func=_compare)
