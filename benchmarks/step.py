"""Time Lucid's RMSprop step against torch.optim.RMSprop on the CPU, beside the memory-bandwidth floor.

Run ``python -m benchmarks.step`` (about three minutes on 2 cores) or ``--quick``
(seconds; a smoke check).  For every workload x dtype x flag set it times, in
one process, the median over rounds of consecutive steps (see :func:`run_config`):

* ``lucid numba`` and ``lucid numpy``: ``lucid.optim.RMSprop.step`` with
  ``num_threads`` threads, with each accelerator (``RMSprop.accelerator``;
  numba's compiled kernel only where it runs: the ``fast`` extra);
* ``torch foreach``: ``torch.optim.RMSprop(foreach=True)``, ``torch.set_num_threads`` the same;
* ``torch loop``: ``torch.optim.RMSprop(foreach=False)``.

Beside the ratios: the bytes a step must move (each of param, grad and the
state buffers read once, param and state written once), the memory bandwidth
measured in the same run (a threaded NumPy ``a += b`` over arrays far larger
than the caches, counting 3 arrays: like the step, it writes only arrays it
reads, so no write-allocate traffic goes uncounted), the time that traffic
needs at that bandwidth (the floor), the fraction of the floor Lucid and torch
reach, and the peak memory one warmed-up Lucid step allocates (tracemalloc,
which sees NumPy's buffers).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from lucid.nn import Parameter
from lucid.optim import RMSprop
from lucid.optim._fast import resolve_num_threads
from lucid.optim._kernel import resolve_accelerator

#: torchvision's resnet18() parameter shapes, in model order (62 tensors, 11,689,512 elements).
RESNET18_SHAPES: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
for _cin, _cout, _down in [(64, 64, False), (64, 128, True), (128, 256, True), (256, 512, True)]:
    for _block in range(2):
        _first_in = _cin if _block == 0 else _cout
        RESNET18_SHAPES += [(_cout, _first_in, 3, 3), (_cout,), (_cout,), (_cout, _cout, 3, 3), (_cout,), (_cout,)]
        if _block == 0 and _down:
            RESNET18_SHAPES += [(_cout, _cin, 1, 1), (_cout,), (_cout,)]
RESNET18_SHAPES += [(1000, 512), (1000,)]
assert len(RESNET18_SHAPES) == 62 and sum(int(np.prod(s)) for s in RESNET18_SHAPES) == 11_689_512

FLAG_SETS: dict[str, dict[str, float | bool]] = {
    "plain": {},
    "centered": {"centered": True},
    "momentum": {"momentum": 0.9},
    "c+m+wd": {"centered": True, "momentum": 0.9, "weight_decay": 1e-4},
}


@dataclass(frozen=True)
class Workload:
    """A named list of parameter shapes."""

    name: str
    shapes: list[tuple[int, ...]]

    @property
    def elements(self) -> int:
        """Total elements over all shapes."""
        return sum(int(np.prod(s)) for s in self.shapes)


def workloads(quick: bool) -> list[Workload]:
    """Return the issue's three workloads; ``quick`` shrinks them (16M/64, 1/16 of ResNet-18, 100 x 100)."""
    if quick:
        return [
            Workload("16M/64 (quick)", [(1 << 18,)]),
            Workload("ResNet-18 shapes[::16] (quick)", RESNET18_SHAPES[::16]),
            Workload("100 x 100 (quick)", [(100,)] * 100),
            Workload("30 x 1000 (quick)", [(1000,)] * 30),
        ]
    return [
        Workload("16M", [(1 << 24,)]),
        Workload("ResNet-18 (62 tensors)", RESNET18_SHAPES),
        Workload("1000 x 100", [(100,)] * 1000),
        Workload("300 x 1000", [(1000,)] * 300),
    ]


def step_bytes(workload: Workload, dtype: np.dtype, flags: dict[str, float | bool]) -> int:
    """Bytes one step must move: param, grad, state read once; param and state written once."""
    state = 1 + bool(flags.get("centered")) + bool(flags.get("momentum"))
    reads, writes = 2 + state, 1 + state
    return workload.elements * np.dtype(dtype).itemsize * (reads + writes)


def measure_bandwidth(threads: int, mib: int, repeats: int) -> float:
    """Bytes per second of a threaded ``a += b`` on float64 arrays of ``mib`` MiB each (3 arrays counted).

    In place, as the step writes its parameter and state: every array written
    is read first, so the count of 3 arrays is the traffic.  (An ``a = b + c``
    also reads ``a`` into the cache before writing it, which a count of 3
    arrays misses: it measured 35.5 GB/s against this probe's 49.5 GB/s on the
    2-core EPYC, a floor a third too high.)
    """
    n = mib * 2**20 // 8
    a, b = np.ones(n), np.full(n, 2.0**-30)
    bounds = np.linspace(0, n, threads + 1).astype(int)

    def part(k: int) -> None:
        lo, hi = bounds[k], bounds[k + 1]
        np.add(a[lo:hi], b[lo:hi], out=a[lo:hi])

    with ThreadPoolExecutor(threads) as pool:
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            list(pool.map(part, range(threads)))
            times.append(time.perf_counter() - t0)
    return 3 * a.nbytes / min(times[1:])  # the best repeat: what the memory system can do


def timed(step: Callable[[], object]) -> float:
    """Return the seconds one call of ``step`` takes."""
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Problem:
    """One configuration's starting values, gradients and hyperparameters, the same for every implementation."""

    values: list[np.ndarray]
    grads: list[np.ndarray]
    hyper: dict[str, float | bool]

    @classmethod
    def of(cls, workload: Workload, dtype: np.dtype, flags: dict[str, float | bool]) -> Problem:
        """Draw the values and gradients (seed 0) of ``workload`` in ``dtype``, with ``flags`` set."""
        rng = np.random.default_rng(0)
        values = [rng.standard_normal(s).astype(dtype) for s in workload.shapes]
        grads = [rng.standard_normal(s).astype(dtype) for s in workload.shapes]
        return cls(values, grads, {"lr": 1e-4, "alpha": 0.99, "eps": 1e-8, **flags})

    def lucid_rmsprop(self, threads: int, accelerator: str | None = None) -> RMSprop:
        """Return Lucid's RMSprop over copies of the values, each with its gradient (the arrays all read)."""
        params = [Parameter(v.copy()) for v in self.values]
        for p, g in zip(params, self.grads):
            p.grad = g
        opt = RMSprop(params, **self.hyper)
        opt.num_threads = threads
        opt.accelerator = accelerator
        return opt

    def torch_rmsprop(self, foreach: bool) -> torch.optim.RMSprop:
        """Return torch's RMSprop over copies of the values, each gradient a tensor sharing its array."""
        tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in self.values]
        for tp, g in zip(tparams, self.grads):
            tp.grad = torch.from_numpy(g)
        return torch.optim.RMSprop(tparams, foreach=foreach, **self.hyper)


@dataclass
class Row:
    """One configuration's measurements."""

    workload: str
    dtype: str
    flags: str
    lucid_s: dict[str, float]  # per accelerator
    foreach_s: float
    loop_s: float
    nbytes: int
    floor_s: float
    peak_bytes: int


def run_config(
    workload: Workload,
    dtype: np.dtype,
    flags: dict[str, float | bool],
    threads: int,
    warmup: int,
    rounds: int,
    block: int,
    bandwidth: float,
    flag_name: str,
    accelerators: Sequence[str],
) -> Row:
    """Time Lucid and both torch implementations on the same values: ``rounds`` rounds of ``block`` steps each.

    In each round every implementation, in an order that rotates from round
    to round, takes one untimed step and then ``block`` timed consecutive
    steps; its time is the median of all its timed steps.  Consecutive steps
    are how a training loop runs an optimizer, and the untimed step absorbs
    what the implementation before it left behind: torch's OpenMP threads
    (libgomp) spin for milliseconds after a parallel region, and on 2 cores a
    Lucid step that followed a torch step directly took 11.6-12.9 ms for
    ResNet-18 float32 against 6.4-6.8 ms when it followed its own (measured
    here; no pause length between the two helped reliably, as the machine's
    idle cores come back slowly too).  The rounds spread every implementation
    over the same stretch of the run, so a machine that slows down mid-run
    slows all of them.
    """
    problem = Problem.of(workload, dtype, flags)
    lucid_opts = [problem.lucid_rmsprop(threads, accelerator) for accelerator in accelerators]
    torch_opts = [problem.torch_rmsprop(foreach) for foreach in (True, False)]

    steps = [opt.step for opt in lucid_opts] + [torch_opts[0].step, torch_opts[1].step]
    times: list[list[float]] = [[] for _ in steps]
    with torch.no_grad():
        for _ in range(warmup):
            for step in steps:
                step()
        for r in range(rounds):
            for k in [(r + j) % len(steps) for j in range(len(steps))]:  # rotate who goes first
                steps[k]()  # untimed: after the previous implementation
                times[k] += [timed(steps[k]) for _ in range(block)]

    tracemalloc.start()
    lucid_opts[0].step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    nbytes = step_bytes(workload, dtype, flags)
    *lucid_s, foreach_s, loop_s = (statistics.median(t) for t in times)
    return Row(
        workload.name,
        np.dtype(dtype).name,
        flag_name,
        dict(zip(accelerators, lucid_s)),
        foreach_s,
        loop_s,
        nbytes,
        nbytes / bandwidth,
        peak,
    )


def header(accelerators: Sequence[str]) -> str:
    """Return the Markdown header: per accelerator its time, its ratios to torch and its share of the floor."""
    lucid = "".join(f" lucid {a} ms | {a}/torch(foreach) | {a}/torch(loop) | {a} % of floor |" for a in accelerators)
    return (
        f"| workload | dtype | flags |{lucid} torch foreach ms | torch loop ms "
        f"| MB moved | floor ms | torch foreach % of floor | lucid {accelerators[0]} peak extra KiB |"
    )


def format_row(row: Row) -> str:
    """One Markdown table row."""
    lucid = "".join(
        f" {t * 1e3:.2f} | {t / row.foreach_s:.2f} | {t / row.loop_s:.2f} | {100 * row.floor_s / t:.0f}% |"
        for t in row.lucid_s.values()
    )
    return (
        f"| {row.workload} | {row.dtype} | {row.flags} |{lucid} {row.foreach_s * 1e3:.2f} | {row.loop_s * 1e3:.2f} "
        f"| {row.nbytes / 1e6:.1f} | {row.floor_s * 1e3:.2f} | {100 * row.floor_s / row.foreach_s:.0f}% "
        f"| {row.peak_bytes / 1024:.0f} |"
    )


def cpu_model() -> str:
    """Return the CPU's model name (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats: a smoke check")
    parser.add_argument("--threads", type=int, default=None, help="threads for Lucid and torch (default: as Lucid)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per configuration (default 3, quick 1)")
    parser.add_argument("--block", type=int, default=3, help="timed consecutive steps per implementation and round")
    parser.add_argument("--dtype", choices=["float32", "float64"], action="append", help="repeatable; default both")
    parser.add_argument(
        "--accelerator",
        choices=["numba", "numpy"],
        action="append",
        help="repeatable; default both where numba runs, else numpy",
    )
    args = parser.parse_args(argv)

    threads = resolve_num_threads(args.threads)
    torch.set_num_threads(threads)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if rounds < 1 or args.block < 1:
        parser.error(f"--rounds and --block must be at least 1, got {rounds} and {args.block}")
    warmup = 1 if args.quick else 2
    dtypes = [np.dtype(d) for d in (args.dtype or ["float32", "float64"])]
    bandwidth = measure_bandwidth(threads, mib=16 if args.quick else 256, repeats=1 if args.quick else 5)

    print(f"CPU: {cpu_model()} ({os.cpu_count()} CPUs); threads: {threads} (torch.set_num_threads and Lucid)")
    print(f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"memory bandwidth (threaded numpy a += b, 3 arrays counted): {bandwidth / 1e9:.1f} GB/s")
    print(
        f"median of {rounds} round(s) x {args.block} consecutive timed steps (each round: one untimed step first, "
        f"the order rotating), after {warmup} warm-up step(s); ratios < 1: Lucid faster"
    )
    print()
    numba = resolve_accelerator("auto")
    accelerators = args.accelerator or (["numba", "numpy"] if numba.name == "numba" else ["numpy"])
    print(f"accelerators: {', '.join(accelerators)}; auto would take {numba}")
    table_header = header(accelerators)
    print(table_header)
    print("|" + "---|" * (table_header.count("|") - 1))
    for workload in workloads(args.quick):
        for dtype in dtypes:
            for name, flags in FLAG_SETS.items():
                row = run_config(
                    workload, dtype, flags, threads, warmup, rounds, args.block, bandwidth, name, accelerators
                )
                print(format_row(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
