"""Count false alarms: seeded runs of ``check`` against honest RMSprop variants, which must all pass.

Run ``python -m benchmarks.false_alarms`` (the default ``check`` for 20 seeds
on each variant: probes, then 120 s of search, about 5 hours on 2 cores) or
with ``--budget 20 --no-probes`` (the drawn search alone, 20 s a seed: about
20 minutes).  The honest variants are the test suite's
(``tests/conformance/mutants.py``): Lucid itself, ``Unfused`` (every step
written out in NumPy, separate roundings) and ``WiderIntermediates`` (float32
computed in float64 and rounded once: nearer the exact step than torch).  Each
differs from torch by rounding only, so every failure the harness reports on
one is a false alarm; each is printed with its replay command.  A run that
drew no scenario (a budget too short for one) is no pass either.  Exit status 0
when every run passed, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from conformance.candidate import resolve
from conformance.harness import check_candidate, replay_command, search_share, usable_cpus
from conformance.matrix import select_cases

#: The honest variants, as ``--optimizer`` spells them (the suite's module is put on the path).
HONEST = ("lucid.optim:RMSprop", "mutants:Unfused", "mutants:WiderIntermediates")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.false_alarms", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds per variant (default 20)")
    parser.add_argument("--first-seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--budget", type=float, default=120.0, help="search seconds per run (default 120, check's)")
    parser.add_argument("--no-probes", action="store_true", help="the drawn search only, not the probes")
    parser.add_argument("--variants", nargs="+", default=list(HONEST), help=f"default: {' '.join(HONEST)}")
    parser.add_argument("--jobs", type=int, default=0, help="worker processes (default: one per usable CPU)")
    args = parser.parse_args(argv)
    for flag, value, ok, rule in (
        ("--seeds", args.seeds, args.seeds >= 1, ">= 1"),
        ("--budget", args.budget, args.budget > 0, "> 0"),
        ("--first-seed", args.first_seed, args.first_seed >= 0, ">= 0"),
    ):
        if not ok:
            parser.error(f"{flag} must be {rule}, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the seeded checks and print one line per run, then the totals; return the exit status."""
    args = _parse(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "conformance"))
    jobs = args.jobs or usable_cpus()
    if args.no_probes:
        torch.set_num_threads(1)  # one process, as each of check's search workers
    cases = select_cases("", "cpu")
    alarms = 0
    print(f"{len(cases)} CPU cases, budget {args.budget:g} s, {'search only' if args.no_probes else 'probes + search'}")
    for variant in args.variants:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            start = time.perf_counter()
            if args.no_probes:
                summary = search_share(resolve(variant), cases, args.budget, seed)
                failures = [
                    f"{f.scenario.case}: {'; '.join(str(o) for o in f.outcomes if not o.passed)}\n"
                    f"      replay: {replay_command(f.scenario, variant)}"
                    for f in summary.found
                ]
                drawn = summary.scenarios
            else:
                report = check_candidate(variant, budget=args.budget, seed=seed, jobs=jobs)
                failures = report.failure_lines()
                drawn = report.search.scenarios if report.search else 0
            # A run that drew nothing searched nothing: not a pass.
            verdict = "FALSE ALARM" if failures else "pass" if drawn else "NOTHING DRAWN"
            alarms += verdict != "pass"
            print(
                f"{variant:28} seed {seed:2}: {verdict:11} {drawn:4} drawn  {time.perf_counter() - start:6.1f} s",
                flush=True,
            )
            for line in failures:
                print(f"    {line}")
    runs = len(args.variants) * args.seeds
    print(f"false alarms (or nothing drawn): {alarms} of {runs} runs")
    return 1 if alarms else 0


if __name__ == "__main__":
    sys.exit(main())
