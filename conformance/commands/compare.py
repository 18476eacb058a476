"""``python -m conformance compare BASELINE CURRENT``: fail when the numbers moved beyond the thresholds.

Exit status: 0 when nothing regressed (improvements are listed), 1 when a
case regressed (a NaN where the baseline has a number included) or a
baseline case is missing from CURRENT, 2 when the two results are not
comparable (different settings), no baseline can be compared with CURRENT,
a file is unreadable or not a drift result, or ``--update-baseline`` refuses
CURRENT.  The thresholds and their reasons are in
:mod:`conformance.report.drift`.  Results of older schema versions (the
committed baselines may be older than the harness) are read, and the
comparison says which environment fields they do not record; torch is not
needed.

BASELINE may be a directory of baselines, one per stack, named
``<devices>-<cpu capability>-torch<version>.json``.  The file for CURRENT's
stack is taken; where there is none, the nearest: of the same devices, CPU
capability and settings, the closest torch release (an older one on a tie).
The output says which file was taken and why, and which environment fields
differ.  A baseline of another CPU capability is never chosen (torch rounds
some elements differently there); name the file to compare with it anyway.
``--baseline-torch VERSION`` takes the file of that torch release instead:
"what moved since VERSION" after an upgrade.

``--out DIR`` writes the comparison as ``comparison.md`` and
``comparison.html`` (figures of baseline against current, the environment
differences at the top, what moved highlighted), as one set: a failed
command leaves DIR as it was.

``--update-baseline`` first prints the comparison with the baseline it
replaces (the file for CURRENT's stack) or, for a new stack, with the
nearest one, then writes CURRENT as the stack's baseline (atomically) and the
comparison beside it as ``<baseline>.comparison.md``.  It refuses (exit 2,
nothing written) a ``--quick`` run, a run of other than the default settings
(unless ``--any-settings``), one shard of a run not yet merged, a ``--cases``
selection, and a run the candidate failed on.  It is legitimate only when the
move is understood and intended: a deliberate change of the pinned torch or
NumPy, a fix that moves Lucid closer to the oracle, a change of the run's
settings, or a new CI CPU (a new file for its capability).  Commit the
comparison with it.  It is not a way to make a red CI green on a move nobody
can explain.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["EXTRA", "register"]

#: The install extra this command needs (named when one of its dependencies is missing).
EXTRA = "report"


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _write_baseline(path: Path, text: str, comparison: str) -> bool:
    """Write the baseline and the comparison beside it; on failure print why, leave both as they were, return False.

    Each file is replaced atomically; the comparison goes first, and is put
    back as it was (or removed) when the baseline cannot be written, so a
    comparison never describes a baseline that is not there, and a baseline
    never sits beside the comparison of the one it replaced.
    """
    from conformance.report.schema import atomic_write

    beside = path.with_name(path.stem + ".comparison.md")
    try:
        previous = beside.read_bytes() if beside.exists() else None
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(beside, comparison)
        try:
            atomic_write(path, text)
        except OSError:
            if previous is None:
                beside.unlink(missing_ok=True)
            else:
                atomic_write(beside, previous)
            raise
    except OSError as err:
        print(f"error: cannot write baseline {path}: {err.strerror or err}; nothing was changed", file=sys.stderr)
        return False
    return True


def _write_uncompared(target: Path, current: dict[str, Any], label: str, why: str, done: str) -> int:
    """Write ``current`` as the baseline ``target`` with no comparison (``why`` says so beside it); exit status."""
    from conformance.report.schema import dumps

    note = f"# Baseline written without a comparison\n\nFrom `{label}`: {why}.\n"
    if not _write_baseline(target, dumps(current), note):
        return 2
    print(done)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from conformance.report.baselines import (
        NoBaselineError,
        baseline_name,
        baseline_problems,
        choose_baseline,
        foreign_stack,
    )
    from conformance.report.comparison import COMPARISON_FILES, DriftDiff, comparison_markdown, environment_notes
    from conformance.report.drift import NotComparableError, compare_results
    from conformance.report.output import OutputError, stage_reports
    from conformance.report.schema import dumps, load

    if args.update_baseline and args.baseline_torch:
        return _fail(
            "--baseline-torch and --update-baseline do not go together: an update is compared with the "
            "baseline it replaces (or, for a new stack, the nearest one)"
        )
    try:
        current = load(args.current)
    except (OSError, ValueError) as err:
        return _fail(str(err))
    problems = baseline_problems(current, any_settings=args.any_settings)
    if args.update_baseline and problems:
        return _fail(f"{args.current} cannot become a baseline: " + "; ".join(problems) + ". Nothing was written")
    baseline_path = Path(args.baseline)
    # A directory, or a path that names no .json file: the baselines folder (created on update).
    directory = baseline_path.is_dir() or (not baseline_path.exists() and baseline_path.suffix != ".json")
    if args.baseline_torch and not directory:
        return _fail(f"--baseline-torch takes a directory of baselines, not the file {args.baseline}")
    target = baseline_path / baseline_name(current) if directory else baseline_path
    if args.update_baseline and (foreign := foreign_stack(target, current)):
        return _fail(f"{foreign}: a baseline describes one stack. Nothing was written")
    choice, notes = None, ()
    try:
        if directory:
            chosen = choose_baseline(baseline_path, current, torch=args.baseline_torch)
            baseline, baseline_path = chosen.result, chosen.path
            choice = None if chosen.exact else chosen.reason
            notes = tuple(f"skipped {skipped}" for skipped in chosen.skipped)
        else:
            baseline = load(baseline_path)
        comparison = compare_results(baseline, current)
    except NoBaselineError as err:
        if args.update_baseline and err.unreadable:
            return _fail(f"{err}; fix or remove the unreadable file(s) first: one may be the baseline to compare with")
        if args.update_baseline:
            print(f"note: {err}")
            return _write_uncompared(
                target,
                current,
                args.current,
                f"no baseline to compare with ({err})",
                f"created baseline {target}, with no baseline to compare it with (see the note above)",
            )
        # The way to create one, where the result may become a baseline (with --any-settings where needed).
        hint = ""
        if not args.baseline_torch and not baseline_problems(current, any_settings=True):
            flags = "--update-baseline" + (" --any-settings" if problems else "")
            hint = f"; create one with `python -m conformance compare {args.baseline} {args.current} {flags}`"
        return _fail(f"{err}{hint}")
    except FileNotFoundError:
        if args.update_baseline:
            return _write_uncompared(
                target,
                current,
                args.current,
                f"{target} did not exist",
                f"created baseline {target} (it did not exist: nothing to compare with)",
            )
        return _fail(f"no baseline {baseline_path}")
    except NotComparableError as err:
        if args.update_baseline and baseline_path == target:
            print(f"note: {baseline_path} is not comparable: {err}; it is replaced without a comparison")
            return _write_uncompared(
                target,
                current,
                args.current,
                f"not comparable with the baseline it replaced: {err}",
                f"updated baseline {target}",
            )
        return _fail(str(err))
    except (ValueError, OSError) as err:
        return _fail(str(err))
    except (KeyError, TypeError) as err:  # only without jsonschema, which would have named the field
        return _fail(f"{baseline_path} or {args.current} is not a complete drift result: {err!r}")
    diff = DriftDiff(baseline, current, comparison, str(baseline_path), str(args.current), choice, notes)
    staged = None
    if args.out:
        try:
            staged = stage_reports(args.out, names=COMPARISON_FILES.values())
        except OutputError as err:
            return _fail(str(err))
    with staged if staged is not None else contextlib.nullcontext():
        print(f"baseline {baseline_path} vs {args.current}")
        for note in (*([choice] if choice else []), *notes, *environment_notes(baseline, current)):
            print(f"note: {note}")
        print(comparison.render())
        if staged is not None:
            texts = {COMPARISON_FILES["markdown"]: comparison_markdown(diff)}
            if not args.no_html:
                from conformance.report.comparison import comparison_html  # matplotlib is imported only here

                texts[COMPARISON_FILES["html"]] = comparison_html(diff)
            try:
                written = staged.commit_texts(texts)
            except OutputError as err:
                return _fail(str(err))
            print("wrote " + ", ".join(map(str, written.values())))
    if args.update_baseline:
        if not _write_baseline(target, dumps(current), comparison_markdown(diff)):
            return 2
        verb = "updated" if baseline_path == target else "created"
        print(f"{verb} baseline {target}; the comparison is in {target.stem}.comparison.md beside it")
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
        "--update-baseline",
        action="store_true",
        help="print the comparison, then write CURRENT as its stack's baseline and the comparison beside it",
    )
    cmd.add_argument(
        "--any-settings", action="store_true", help="with --update-baseline: accept a run of non-default settings"
    )
    cmd.add_argument(
        "--baseline-torch",
        metavar="VERSION",
        help="compare with the baseline of this torch release (same devices and CPU capability)",
    )
    cmd.add_argument("--out", metavar="DIR", help="write the comparison as comparison.md and comparison.html")
    cmd.add_argument("--no-html", action="store_true", help="with --out: skip the HTML report (and matplotlib)")
    cmd.set_defaults(func=_compare, extra=EXTRA)
