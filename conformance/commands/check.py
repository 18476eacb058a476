"""``python -m conformance check``: run the harness against an RMSprop; non-zero exit on disagreement.

Examples::

    python -m conformance check                                   # Lucid's RMSprop: probes, then 2 min of search
    python -m conformance check --optimizer mypkg.optim:RMSprop --budget 600
    python -m conformance check --budget 0                        # the deterministic probes only
    python -m conformance check --examples 20                     # exactly 20 drawn scenarios per case
    python -m conformance check --cases c1-m1-wd0-max0-float32    # the cases whose id contains it
    python -m conformance check --replay v1-eJy...                 # exactly one failing scenario again

Case ids are spelled ``c1-m0-wd1-max0-float32-cpu-foreach0-cap0-tlr0`` (flags,
dtype, device, torch implementation).  ``--cases`` takes any part of one, and
also a case id of a drift report (``...-tlr0-scale=1e-08``, whose scale it
ignores) or its schema-1 spelling (``c1-m0-wd1-max0/float32/foreach0/cpu``).

Every case first runs its fixed probes (the deterministic floor), then
Hypothesis searches all selected cases for ``--budget`` seconds (drawn
hyperparameters, streams, shapes, groups and schedules), seeded by ``--seed``:
the same sequence of scenarios on every machine, as far along it as the
budget reaches.  A failure is shrunk to a minimal scenario and printed with the
command that replays it; ``--examples N`` draws exactly N scenarios per case
instead (the same scenarios on every machine, whatever its speed).

The candidate is ``--optimizer module:attr``, else the environment variable
``CONFORMANCE_CANDIDATE``, else ``lucid.optim:RMSprop``: a ``torch.optim.Optimizer``
subclass, a class with Lucid's Optimizer interface, a function of optax, or an
adapter (``conformance.adapters.optax:rmsprop``).  Cases that need what the
candidate does not support (``maximize``, complex parameters, a dtype,
per-group hyperparameters) are listed as not supported, not judged;
``--strict`` fails them.

Exit status: 0 when every judged check passed, 1 when a check disagreed (each
failure is printed with the check's name, the oracle's verdict where there is
one, and the command that replays it; also with ``--strict`` and an
unsupported case), 2 for bad usage (a malformed or unimportable
``--optimizer`` path, a ``--cases`` filter that selects no case, a corrupt or
out-of-bounds replay id, a device that is not there), 3 when the candidate
could not run and nothing disagreed (it raised on import, while built or
stepped, lacks a required method, or a worker process running it died), 130
on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from conformance.commands.candidate_options import add_candidate_options, resolve_candidate
from conformance.search import DEFAULT_BUDGET

__all__ = ["EXTRA", "register"]

#: The install extra this command needs (named when one of its dependencies is missing).
EXTRA = "test"


def _nonnegative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"must be a number of seconds in 0..86400, got {text!r}")
    return value


def _describe_machine() -> str:
    import platform

    import numpy as np
    import torch

    return (
        f"numpy {np.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )


def _run(args: argparse.Namespace) -> int:
    import torch  # noqa: F401 - a missing torch is named before anything else

    from conformance.candidate import CandidateError, CandidateSpecError
    from conformance.checks import DeviceUnavailableError, require_device
    from conformance.harness import CandidateReport, check_candidate, judge, usable_cpus
    from conformance.matrix import describe_no_match, select_cases
    from conformance.scenario import Scenario

    try:
        if args.replay:
            scenario = Scenario.from_id(args.replay)
            require_device(scenario.matrix_case.device)
        else:
            selected = select_cases(args.cases, args.device)
            if not selected:
                print(f"error: {describe_no_match(args.cases, args.device)}", file=sys.stderr)
                return 2
            require_device(args.device)
        candidate = resolve_candidate(args)
    except (CandidateSpecError, ValueError, DeviceUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except CandidateError as err:
        print(f"error: the candidate could not run: {err}", file=sys.stderr)
        return 3
    print(f"candidate {candidate.name} {candidate.version} ({args.optimizer}); {_describe_machine()}")
    started = time.perf_counter()
    if args.replay:
        report = CandidateReport(candidate.name, spec=args.optimizer, python=args.candidate_python)
        report.results.append(judge(scenario, candidate, diagnosis=not args.no_diagnosis))
        print(f"replaying {scenario.case}, checks {', '.join(scenario.checks)}")
        for outcome in report.results[0].outcomes:
            print(f"  {outcome}")
    else:
        from tqdm import tqdm

        # On stderr, only on a terminal (disable=None), and not beside -v's lines.
        bar = tqdm(
            total=len(selected),
            desc="check",
            unit="case",
            disable=True if args.no_progress or args.verbose else None,
            leave=False,
        )
        try:
            report = check_candidate(
                candidate,
                examples=args.examples,
                budget=args.budget,
                seed=args.seed,
                jobs=args.jobs or usable_cpus(),
                progress=print if args.verbose else None,
                selected=selected,
                advance=lambda: _advanced(bar, args.budget if not args.examples else 0),
                diagnosis=not args.no_diagnosis,
            )
        except CandidateError as err:
            print(f"error: the candidate could not run: {err}", file=sys.stderr)
            return 3
        finally:
            bar.close()
        report.spec, report.python = args.optimizer, args.candidate_python
    return _verdict(args, report, candidate.name, time.perf_counter() - started)


def _advanced(bar: Any, budget: float) -> None:
    """Count one finished case; after the last, say that the search (if any) is running."""
    bar.update(1)
    if bar.n == bar.total and budget > 0:
        bar.set_description_str(f"probes done; searching for {budget:g} s")


def _verdict(args: argparse.Namespace, report: Any, name: str, elapsed: float) -> int:
    """Print the summary and return the exit status: 1 disagreement, 3 crash only, 0 agreement."""
    from conformance.harness import replay_command
    from conformance.rmsprop import REFERENCE

    if report.search is not None:
        print(
            f"searched {report.search.scenarios} drawn scenario(s) in {report.search.seconds:.0f} s "
            f"(seed {args.seed}, budget {args.budget:g} s, {report.search.rounds} round(s))"
        )
    scenarios = len(report.results)
    if report.search is not None:
        scenarios += report.search.scenarios - len(report.search.found)
    checks = sum(len(r.outcomes) for r in report.results)
    lacking = report.unsupported_lines()
    if lacking:
        print(
            f"not supported by {name} ({'failures: --strict' if args.strict else 'not judged; --strict fails them'}):"
        )
        print("\n".join(f"  {line}" for line in lacking))
    if report.ok and not (args.strict and lacking):
        ran = f"{len(report.results)} scenario(s)" if args.replay else f"{report.probes} probe scenario(s)"
        drawn = f" and {report.search.scenarios} drawn scenario(s)" if report.search else ""
        judged = checks - sum(len(r.unsupported) for r in report.results)
        print(f"{name}: all {judged} judged checks passed on {ran}{drawn} in {elapsed:.1f} s")
        return 0
    disagree, crashed = report.disagreements, report.crashes
    configs = {r.scenario.matrix_case.flags.name for r in report.results}
    failing = {r.scenario.matrix_case.flags.name for r in report.results if r.failed}
    causes = "; ".join(f"{g.cause} ({len(g.configurations)})" for g in report.failure_groups())
    if disagree or crashed:
        print(
            f"verdict: FAIL: {name} {'disagrees with' if disagree else 'could not run beside'} {REFERENCE} in "
            f"{len(failing)} of {len(configs)} configurations; causes (configurations): {causes or 'none named'}"
        )
    else:
        print(f"verdict: FAIL (--strict): {name} does not support every selected case; every judged check passed")
    if args.verbose or args.replay:
        print("\n".join(report.failure_lines()))
    else:
        print("\n".join(report.summary_lines()))
        print("(-v lists every failing scenario with its checks)")
    if disagree:
        print(
            f"{name}: {len(disagree)} of {scenarios} scenario(s) DISAGREE; "
            f"failing checks: {', '.join(sorted(report.caught_by))}"
        )
    if crashed:
        print(f"{name}: could not run on {len(crashed)} of {scenarios} scenario(s) (it raised; nothing compared)")
    if not args.replay and (disagree or crashed):
        first = (disagree or crashed)[0].scenario
        print(f"first replay: {replay_command(first, args.optimizer, args.candidate_python)}")
    if disagree or (args.strict and lacking and not crashed):
        return 1
    return 3


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``check`` subcommand."""
    cmd = subparsers.add_parser(
        "check",
        help="run the conformance checks against an optimizer class (non-zero exit on disagreement)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_candidate_options(cmd)
    cmd.add_argument(
        "--strict",
        action="store_true",
        help="cases the candidate does not support (maximize, complex, a dtype, per-group hyperparameters) fail",
    )
    cmd.add_argument("--replay", metavar="ID", help="run exactly the scenario with this id (printed by a failure)")
    cmd.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="the cases' device (default cpu)")
    cmd.add_argument(
        "--cases",
        default="",
        metavar="TEXT",
        help="only cases whose id contains TEXT (a drift report's case id selects its case); "
        "selecting none is an error",
    )
    cmd.add_argument(
        "--budget",
        type=_seconds,
        default=DEFAULT_BUDGET,
        metavar="SECONDS",
        help=f"seconds of Hypothesis search across the cases after the probes (default {DEFAULT_BUDGET:g}; "
        "0: the probes only)",
    )
    cmd.add_argument(
        "--examples",
        type=_nonnegative,
        default=0,
        help="draw exactly this many scenarios per case after the probes, instead of --budget (default 0)",
    )
    cmd.add_argument(
        "--jobs",
        type=_nonnegative,
        default=0,
        help="worker processes, each case's probes and a share of the search in one (default 0: one per usable CPU; "
        "1: all in this process)",
    )
    cmd.add_argument("--seed", type=_nonnegative, default=0, help="seed of the probes and the search (default 0)")
    cmd.add_argument(
        "--no-diagnosis",
        action="store_true",
        help="do not replay failures through the known departures to name their cause (faster)",
    )
    cmd.add_argument(
        "--no-progress", action="store_true", help="no progress bar (there is none when stderr is not a terminal)"
    )
    cmd.add_argument(
        "-v", "--verbose", action="store_true", help="print one line per case, and every failing scenario in full"
    )
    cmd.set_defaults(func=_run, extra=EXTRA)
