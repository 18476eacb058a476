"""``python -m conformance check``: run the harness against an optimizer class; non-zero exit on disagreement.

Examples::

    python -m conformance check                                   # Lucid's RMSprop, every CPU case
    python -m conformance check --optimizer mypkg.optim:RMSprop --examples 20
    python -m conformance check --replay v1-eJy...                 # exactly one failing scenario again

Exit status: 0 when every check passed, 1 when a check failed (each failure is
printed with the check's name, the oracle's verdict where there is one, and the
command that replays it), 2 for bad usage (an unimportable candidate, a
corrupt replay id, a device that is not there).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np
import torch

from conformance.candidates import load_candidate
from conformance.checks import DeviceUnavailableError, run_checks
from conformance.harness import DEFAULT_CANDIDATE, CandidateReport, ScenarioResult, check_candidate, replay_command
from conformance.scenario import Scenario

__all__ = ["register"]


def _describe_machine() -> str:
    return (
        f"numpy {np.__version__}, torch {torch.__version__}, python {platform.python_version()}, "
        f"CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )


def _run(args: argparse.Namespace) -> int:
    print(f"candidate {args.optimizer}; {_describe_machine()}")
    started = time.perf_counter()
    try:
        if args.replay:
            scenario = Scenario.from_id(args.replay)
            report = CandidateReport(args.optimizer)

            report.results.append(ScenarioResult(scenario, run_checks(scenario, load_candidate(args.optimizer))))
            print(f"replaying {scenario.case}, checks {', '.join(scenario.checks)}")
            for outcome in report.results[0].outcomes:
                print(f"  {outcome}")
        else:
            report = check_candidate(
                args.optimizer,
                device=args.device,
                case_filter=args.cases,
                examples=args.examples,
                seed=args.seed,
                progress=print if args.verbose else None,
            )
    except (ValueError, ImportError, TypeError, KeyError, DeviceUnavailableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    scenarios = len(report.results)
    checks = sum(len(r.outcomes) for r in report.results)
    elapsed = time.perf_counter() - started
    if report.ok:
        print(f"all {checks} checks passed on {scenarios} scenario(s) in {elapsed:.1f} s")
        return 0
    print("\n".join(report.failure_lines()))
    failed = [r for r in report.results if r.failed]
    print(f"{len(failed)} of {scenarios} scenario(s) DISAGREE; failing checks: {', '.join(sorted(report.caught_by))}")
    if not args.replay:
        print(f"first replay: {replay_command(failed[0].scenario, args.optimizer)}")
    return 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``check`` subcommand."""
    cmd = subparsers.add_parser(
        "check",
        help="run the conformance checks against an optimizer class (non-zero exit on disagreement)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cmd.add_argument(
        "--optimizer",
        default=DEFAULT_CANDIDATE,
        metavar="MODULE:CLASS",
        help=f"the class under test: RMSprop's constructor, Lucid's Optimizer interface (default {DEFAULT_CANDIDATE})",
    )
    cmd.add_argument("--replay", metavar="ID", help="run exactly the scenario with this id (printed by a failure)")
    cmd.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="the cases' device (default cpu)")
    cmd.add_argument("--cases", default="", metavar="TEXT", help="only cases whose id contains TEXT")
    cmd.add_argument(
        "--examples", type=int, default=0, help="Hypothesis-drawn scenarios per case after the probes (default 0)"
    )
    cmd.add_argument("--seed", type=int, default=0, help="seed of the probes and the search (default 0)")
    cmd.add_argument("-v", "--verbose", action="store_true", help="print one line per case")
    cmd.set_defaults(func=_run)
