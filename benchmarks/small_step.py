"""Where a step over many small parameters spends its time, part by part, beside torch's step.

Run ``python -m benchmarks.small_step`` (about a minute on 2 cores) or
``--quick`` (seconds; a smoke check).  Lucid packs each group's small real
parameters into flat storage, and a step that finds everything as the last
one left it repeats that step's plan: it checks that nothing it relied on
changed, gathers the gradients into the pack, and updates the pack in one
kernel call.  For the small workloads of ``benchmarks.step`` this times, in
the same rounds (see :func:`benchmarks.step.run_config` for why rounds of
consecutive calls):

* ``step``: ``lucid.optim.RMSprop.step``, the whole of it;
* ``replay``: the step's plan prepared again (``FastStep.replay``, after the
  groups' hyperparameters are checked): the checks and the gather, which
  write nothing visible, timed right before the update, as in a step;
* ``gather``: the pack's gather of the gradients alone (``np.concatenate`` into
  its flat storage), timed right after an update, as in a step;
* ``update``: the update ``replay`` returns: the kernel over the pack, and the
  copies back of any parameter that is not its pack's view;
* ``torch foreach``: ``torch.optim.RMSprop(foreach=True).step``.

From these: ``checks`` = replay - gather, the checks (the groups' hyperparameters
and every parameter's); and ``floor`` = (gather + update) / torch foreach, the
ratio below which no saving in the checks could take the step, as long as
NumPy gathers the gradients.  What else separates ``step`` from replay +
update (the step counters, SIGINT held back) is not a column: each part is a
median over calls of its own, and on a busy machine the medians need not add
up to a remainder that means anything.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from benchmarks.step import FLAG_SETS, Problem, Workload, timed, workloads
from lucid.optim._fast import SMALL, resolve_num_threads
from lucid.optim._kernel import resolve_accelerator

#: The parts timed, each a column of the table.
PARTS = ("step", "replay", "gather", "update", "torch foreach")


def small_workloads(quick: bool) -> list[Workload]:
    """Return the workloads of ``benchmarks.step`` whose every parameter is packed (fewer than SMALL elements)."""
    return [w for w in workloads(quick) if all(0 < int(np.prod(s)) < SMALL for s in w.shapes)]


def time_parts(
    workload: Workload, dtype: np.dtype, flags: dict[str, float | bool], threads: int, rounds: int, block: int
) -> dict[str, float]:
    """Return each of :data:`PARTS`' median seconds over ``rounds`` rounds of ``block`` timed calls."""
    problem = Problem.of(workload, dtype, flags)
    opt = problem.lucid_rmsprop(threads)
    kernel = opt.backend.kernel
    opt.step()  # the first step packs the parameters and records the plan that the next ones replay
    fast = opt._fast_step
    (pack,) = [pack for pack, *_ in fast._plan.packs]  # one group of one dtype: one pack

    def replay() -> Callable[[], None]:
        replayed = fast.replay(opt.param_groups, opt._checked_groups(), opt.state, threads, kernel)
        if replayed is None:
            raise RuntimeError(f"{workload.name}: the step did not replay its plan, so its parts cannot be timed")
        return replayed[1]

    update = replay()
    torch_step = problem.torch_rmsprop(foreach=True).step

    def as_in_a_step() -> dict[str, float]:
        """Time replay then update, as a step runs them: each after the other, the caches as a step leaves them."""
        t0 = time.perf_counter()
        replayed_update = replay()
        t1 = time.perf_counter()
        replayed_update()
        return {"replay": t1 - t0, "update": time.perf_counter() - t1}

    def gather_after_update() -> dict[str, float]:
        """Time the gather alone, after an update, as the step's gather runs."""
        update()
        return {"gather": timed(lambda: pack.gather_grads(problem.grads))}

    sequences: list[Callable[[], dict[str, float]]] = [
        lambda: {"step": timed(opt.step)},
        as_in_a_step,
        gather_after_update,
        lambda: {"torch foreach": timed(torch_step)},
    ]
    times: dict[str, list[float]] = {part: [] for part in PARTS}
    with torch.no_grad():
        for sequence in sequences:
            sequence()  # warm-up
        for r in range(rounds):
            for sequence in sequences[r % len(sequences) :] + sequences[: r % len(sequences)]:
                sequence()  # untimed: after whatever ran before
                for _ in range(block):
                    for part, seconds in sequence().items():
                        times[part].append(seconds)
    return {part: statistics.median(t) for part, t in times.items()}


def format_row(workload: Workload, dtype: np.dtype, flag_name: str, s: dict[str, float]) -> str:
    """One Markdown row: each part in ms, the checks derived, and the ratios to torch's foreach step."""
    checks = s["replay"] - s["gather"]
    torch_s = s["torch foreach"]
    ms = [s["step"], s["replay"], checks, s["gather"], s["update"], torch_s]
    return (
        f"| {workload.name} | {np.dtype(dtype).name} | {flag_name} | "
        + " | ".join(f"{t * 1e3:.2f}" for t in ms)
        + f" | {s['step'] / torch_s:.3f} | {checks / torch_s:.3f} | {(s['gather'] + s['update']) / torch_s:.3f} |"
    )


HEADER = (
    "| workload | dtype | flags | step ms | replay ms | checks ms | gather ms | update ms | torch foreach ms "
    "| step/torch | checks/torch | floor: (gather+update)/torch |"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the breakdown and print the Markdown table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.small_step", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick workloads, one round: a smoke check")
    parser.add_argument("--threads", type=int, default=None, help="threads for Lucid and torch (default: as Lucid)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per configuration (default 5, quick 1)")
    parser.add_argument("--block", type=int, default=5, help="timed consecutive calls per part and round")
    parser.add_argument("--dtype", choices=["float32", "float64"], action="append", help="repeatable; default float32")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 5)
    if rounds < 1 or args.block < 1:
        parser.error(f"--rounds and --block must be at least 1, got {rounds} and {args.block}")
    threads = resolve_num_threads(args.threads)
    torch.set_num_threads(threads)
    print(f"threads: {threads}; accelerator: {resolve_accelerator('auto')}; torch {torch.__version__}")
    print(f"median of {rounds} round(s) x {args.block} consecutive timed calls per part")
    print()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for workload in small_workloads(args.quick):
        for dtype in [np.dtype(d) for d in (args.dtype or ["float32"])]:
            for name, flags in FLAG_SETS.items():
                parts = time_parts(workload, dtype, flags, threads, rounds, args.block)
                print(format_row(workload, dtype, name, parts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
