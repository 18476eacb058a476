"""Time lucid.serialization and measure the memory it needs beyond the state, for many small arrays and one large.

Run ``python -m benchmarks.serialization`` (about a minute, and 1 GiB of free
disk and 1.5 GiB of memory) or ``--quick`` (seconds; a smoke check).  Two
states are saved with :func:`lucid.serialization.save_state_dict` and loaded
with :func:`lucid.serialization.load_state_dict`:

* ``small``: 100 000 parameters, each with a ``step`` and a ``square_avg`` of
  10 float64 (the cost per array);
* ``large``: one parameter whose ``square_avg`` holds 512 MiB of float64 (the
  cost per byte and the memory beyond the state).

Every measurement runs in a fresh subprocess, so that one cannot disturb the
next: the time (wall clock and CPU, median of the repeats), the peak memory
beyond the state (``tracemalloc``, which sees NumPy's buffers, in one process;
the peak resident set size in the timed one, reset before the call on Linux,
less the resident size before it, less the state's bytes when loading).  The file goes to a temporary
directory (``--dir`` to choose where): the wall clock includes ``fsync``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lucid import serialization

MiB = 1 << 20
#: name: (parameters, float64 elements in each square_avg); the quick sizes after them.
CASES: dict[str, tuple[int, int]] = {"small": (100_000, 10), "large": (1, 512 * MiB // 8)}
QUICK_CASES: dict[str, tuple[int, int]] = {"small": (10_000, 10), "large": (1, 32 * MiB // 8)}


def make_state(parameters: int, elements: int) -> dict[str, Any]:
    """Return a state_dict of ``parameters`` entries, each a ``step`` and a ``square_avg`` of ``elements`` float64."""
    return {
        "state": {i: {"step": float(i), "square_avg": np.full(elements, float(i))} for i in range(parameters)},
        "param_groups": [{"lr": 0.01, "alpha": 0.99, "params": list(range(parameters))}],
    }


def _status(field: str) -> int | None:
    """Return a size from ``/proc/self/status`` in bytes (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """Reset the peak resident set size where Linux allows it; return the baseline to subtract from the peak.

    Linux: the current RSS, after writing 5 to ``/proc/self/clear_refs`` (which
    resets the peak to it).  Elsewhere: the peak so far, ``ru_maxrss``.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        current = _status("VmRSS")
        if current is not None:
            return current
    except OSError:
        pass
    return _max_rss()


def _max_rss() -> int:
    """Return the process's peak resident set size in bytes (``VmHWM`` on Linux, else ``ru_maxrss``)."""
    peak = _status("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _timed(action: Callable[[], Any]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def child(operation: str, meter: str, path: str, parameters: int, elements: int, repeats: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process: ``operation`` is save or load, ``meter`` time or tracemalloc."""
    state = make_state(parameters, elements) if operation == "save" else None

    def action() -> Any:
        if state is not None:
            return serialization.save_state_dict(state, path)
        return serialization.load_state_dict(path)

    if meter == "tracemalloc":
        tracemalloc.start()
        action()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {"tracemalloc_peak": peak}
    before = _reset_peak_rss()
    wall, cpu = _timed(action)
    rss = _max_rss() - before
    walls, cpus = [wall], [cpu]
    for _ in range(repeats - 1):
        wall, cpu = _timed(action)  # a load's result is dropped before the next one starts
        walls.append(wall)
        cpus.append(cpu)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus), "rss_peak": rss}


def _run_child(operation: str, meter: str, path: str, parameters: int, elements: int, repeats: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.serialization", "--child", operation, meter, path]
    command += [str(parameters), str(elements), str(repeats)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def _per_array(seconds: float, parameters: int) -> str:
    return f"{seconds / parameters * 1e6:.1f}" if parameters > 1 else "-"


def measure(name: str, parameters: int, elements: int, repeats: int, directory: str) -> list[str]:
    """Save and load one state, each timed, traced and RSS-measured in its own process; return table rows."""
    path = os.path.join(directory, f"{name}.npz")
    state_bytes = parameters * elements * 8
    rows = []
    for operation in ("save", "load"):  # save first: load reads what it wrote
        timing = _run_child(operation, "time", path, parameters, elements, repeats)
        traced = _run_child(operation, "tracemalloc", path, parameters, elements, 1)
        result = state_bytes if operation == "load" else 0  # a load's result is the state, not overhead
        rows.append(
            f"| {name} | {parameters} x {elements} float64 | {state_bytes / MiB:.1f} | {operation} "
            f"| {timing['wall_s']:.3f} | {timing['cpu_s']:.3f} | {_per_array(timing['wall_s'], parameters)} "
            f"| {_per_array(timing['cpu_s'], parameters)} | {state_bytes / MiB / timing['wall_s']:.0f} "
            f"| {(traced['tracemalloc_peak'] - result) / MiB:.1f} | {(timing['rss_peak'] - result) / MiB:.1f} |"
        )
    with zipfile.ZipFile(path) as zf:
        members = len(zf.infolist())
    rows.append(f"|  | file: {os.path.getsize(path) / MiB:.1f} MiB, {members} zip members |  |  |  |  |  |  |  |  |  |")
    os.unlink(path)
    return rows


HEADER = (
    "| state | arrays | state MiB | operation | wall s | CPU s | wall us per array | CPU us per array | MiB/s "
    "| tracemalloc peak extra MiB | RSS peak extra MiB |"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print a Markdown table (or, with ``--child``, one measurement as JSON)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 000 small arrays and a 32 MiB state: a smoke check")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 3, quick 1)")
    parser.add_argument("--dir", default=None, help="where the files go (default: a temporary directory)")
    parser.add_argument("--only", choices=sorted(CASES), action="append", help="repeatable; default both states")
    parser.add_argument("--child", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        operation, meter, path, parameters, elements, repeats = args.child
        print(json.dumps(child(operation, meter, path, int(parameters), int(elements), int(repeats))))
        return 0

    repeats = args.repeats or (1 if args.quick else 3)
    cases = QUICK_CASES if args.quick else CASES
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, {platform.platform()}")
    print(f"median of {repeats} runs each; every figure from a fresh process; extra: beyond the state's own bytes")
    print()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for name in args.only or list(cases):
            parameters, elements = cases[name]
            for row in measure(name, parameters, elements, repeats, directory):
                print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
