"""``python -m conformance run``: measure drift from torch over the case matrix and write the reports.

Writes ``drift.json`` (the schema-versioned result ``compare`` and ``merge``
read), ``drift.md`` and a self-contained ``drift.html`` into ``--out`` as one
set (all three from this run, swapped in together; an interrupted or failed
run leaves ``--out`` as it was), and prints agreement per configuration as a
table.  ``--out`` is checked before anything is measured: it must be a new or
empty directory or hold only a previous report set, and its file system must
have room for the reports.

Exit status: 0 when every case stays within the derived bounds, 1 when a
case leaves one (the candidate disagrees with torch), 2 for bad usage (an
unusable ``--out``, settings that cannot be measured, a malformed or
unimportable ``--optimizer`` path, a ``--cases`` filter that selects
nothing), 3 when the candidate could not run (it raised on import, lacks a
required method, or raised while some cases were measured: those are listed
in the report, which says it is incomplete, and the others are measured), 130
on Ctrl-C.  A failing or disagreeing case prints the command that measures it
alone again.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time

from conformance.candidate import candidate_options
from conformance.commands.candidate_options import add_candidate_options, resolve_candidate
from conformance.report.cases import FULL, QUICK, Shard, build_cases, check_settings, parse_shard

__all__ = ["EXTRA", "register"]

#: The install extra this command needs (named when one of its dependencies is missing).
EXTRA = "report"


def _scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be comma-separated numbers, got {text!r}") from None
    if not scales or any(not s > 0 or s == float("inf") for s in scales):
        raise argparse.ArgumentTypeError(f"scales must be finite and > 0, got {text!r}")
    return scales


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _run(args: argparse.Namespace) -> int:
    settings = QUICK if args.quick else FULL
    overrides = {k: getattr(args, k) for k in ("seed", "steps", "size", "scales") if getattr(args, k) is not None}
    if args.device:
        overrides["devices"] = tuple(dict.fromkeys(args.device))
    settings = dataclasses.replace(settings, **overrides)
    try:
        check_settings(settings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # The heavy imports (torch, the harness) come after the cheap checks and before --out is touched.
    import conformance.report.measure  # noqa: F401 - imports torch: fail on a missing one now
    from conformance.candidate import CandidateError, CandidateSpecError
    from conformance.report.document import run_drift, select_drift_cases
    from conformance.report.markdown import summary_table
    from conformance.report.output import OutputError, reserve_size, stage_reports
    from conformance.report.summary import verdict

    if any(d.startswith("cuda") for d in settings.devices):
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda requested but torch.cuda.is_available() is False", file=sys.stderr)
            return 2
    try:
        candidate = resolve_candidate(args)
    except CandidateSpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CandidateError as err:
        print(f"error: the candidate could not run: {err}; nothing was written", file=sys.stderr)
        return 3
    total = len(build_cases(settings))
    count = len(select_drift_cases(settings, args.shard, args.cases))
    if not count:
        print(f"error: --cases {args.cases!r} selects none of the {total} cases of this run", file=sys.stderr)
        return 2
    try:
        staged = stage_reports(args.out, reserve=reserve_size(count, settings.steps, html=not args.no_html))
    except OutputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with staged:
        print(
            f"drift run of {candidate.name} {candidate.version}: {count} of {total} cases "
            f"({settings.steps} steps x {settings.size} elements each)",
            file=sys.stderr,
        )
        start = time.perf_counter()
        try:
            result = run_drift(
                settings,
                candidate,
                args.optimizer,
                shard=args.shard,
                progress=not args.no_progress,
                case_filter=args.cases,
                diagnosis=not args.no_diagnosis,
            )
        except CandidateError as err:
            print(f"error: the candidate could not run: {err}; nothing was written", file=sys.stderr)
            return 3
        elapsed = time.perf_counter() - start
        if not result["cases"]:  # nothing measured: no report that could pass for one
            first = result["failures"][0]
            print(
                f"error: the candidate could not run on any of the {len(result['failures'])} case(s); "
                f"nothing was written. {first['id']}: {first['error']}",
                file=sys.stderr,
            )
            return 3
        try:
            written = staged.commit(result, html=not args.no_html)
        except OutputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    for kept in staged.kept:
        print(f"note: the previous {args.out} held more than reports; it was kept as {kept}", file=sys.stderr)
    env = result["environment"]
    print(
        f"harness {env['lucid']}, numpy {env['numpy']}, torch {env['torch']}, python {env['python']}, "
        f"CPU {env['cpu_model']} ({env['cpu_capability']})"
    )
    print(f"verdict: {verdict(result)[1]}")
    print(summary_table(result))
    outside = [
        c["id"] for c in result["cases"] if not (c["lockstep"]["within_bound"] and c["free_run"]["within_bound"])
    ]
    print(f"measured {len(result['cases'])} cases in {elapsed:.1f} s; wrote " + ", ".join(map(str, written.values())))
    failures = result.get("failures", [])
    for failure in failures:
        print(f"could not measure {failure['id']}: {failure['error']}")
        print(f"  replay: {_replay(args, failure['id'])}")
    if outside:
        print(f"{len(outside)} case(s) outside the derived bounds, e.g. {outside[0]}")
        print(f"  replay: {_replay(args, outside[0])}")
        return 1
    if failures:
        print(f"{candidate.name} could not run on {len(failures)} case(s); the report lists them and is incomplete")
        return 3
    print("every case within the derived lockstep and free-running bounds")
    return 0


def _replay(args: argparse.Namespace, case_id: str) -> str:
    """Return the command that measures exactly case ``case_id`` of this run again."""
    words = ["python -m conformance run", "--cases", shlex.quote(case_id), "--out", shlex.quote(f"{args.out}-replay")]
    if args.quick:
        words.append("--quick")
    for name in ("seed", "steps", "size"):
        if getattr(args, name) is not None:
            words += [f"--{name}", str(getattr(args, name))]
    if args.scales is not None:
        words += ["--scales", ",".join(f"{x:g}" for x in args.scales)]
    return " ".join(words + candidate_options(args.optimizer, args.candidate_python))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    run = subparsers.add_parser(
        "run",
        help="measure drift from torch over the case matrix and write JSON, Markdown and HTML reports",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_candidate_options(run)
    run.add_argument(
        "--out",
        default="drift-report",
        help="directory for drift.json/.md/.html, replaced as a whole (default drift-report)",
    )
    run.add_argument(
        "--cases",
        default="",
        metavar="TEXT",
        help="measure only the cases whose id contains TEXT (a drift or matrix case id, or part of one); "
        "selecting none is an error",
    )
    run.add_argument("--quick", action="store_true", help="a smoke run of seconds: 3 scales, 12 steps x 64 elements")
    run.add_argument("--shard", type=_shard, metavar="I/N", help="measure only slice I of N (1-based); join with merge")
    run.add_argument("--seed", type=int, help=f"root seed (default {FULL.seed})")
    run.add_argument("--steps", type=_positive, help=f"steps per case (default {FULL.steps}; quick {QUICK.steps})")
    run.add_argument("--size", type=_positive, help=f"elements per parameter (default {FULL.size}; quick {QUICK.size})")
    run.add_argument("--scales", type=_scales, help="comma-separated gradient scales (default 1e-10,...,1e4)")
    run.add_argument(
        "--device", action="append", choices=("cpu", "cuda"), help="torch device, repeatable (default cpu)"
    )
    run.add_argument("--no-html", action="store_true", help="skip the HTML report (and matplotlib)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="do not name why configurations out of bounds disagree (by checking and diagnosing their probes)",
    )
    run.set_defaults(func=_run, extra=EXTRA)
