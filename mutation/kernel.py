"""Mutate the numba-compiled RMSprop kernel with mutmut's operators and run the conformance check on each.

mutmut cannot reach ``lucid.optim._kernel_numba``'s compiled functions
(``_element_step``, ``_rmsprop_step``) itself: its trampoline replaces each
function by a Python-level dispatch that numba cannot
compile, so ``pyproject.toml`` excludes the file.  This script makes the same
mutants (:func:`mutmut.mutation.file_mutation.create_mutations`, mutmut's own
operators, one mutation per mutant), and for each one, in a forked child:

1. executes the mutated module under a file name numba cannot cache for (so
   no cached compilation of the original is ever loaded for it);
2. compiles both dtypes' specialisations: a mutant numba refuses to type
   (``fused(None, ...)``, a missing argument) is ``no compile``, like mutmut's
   ``caught by type check``, and counted apart;
3. records whether Lucid's own self-check (``lucid.optim._kernel._self_check``)
   would have refused the mutant, then bypasses it, so that the harness, not
   the self-check, has to catch the mutant;
4. runs the deterministic probes of every case of
   :func:`mutation.test_check.mutation_cases` with ``LUCID_ACCELERATOR=numba``,
   stopping at the first failing case: ``killed`` (with the case and checks),
   else ``survived``; a child past ``--timeout`` seconds is ``timeout``.

Results go to ``mutation/results/kernel.json`` (read by :mod:`mutation.report`).
``python -m mutation.kernel [--jobs N] [--only 3,17] [--timeout S]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import types
from dataclasses import dataclass
from difflib import unified_diff
from pathlib import Path

__all__ = ["KERNEL_FUNCTIONS", "KERNEL_PATH", "KernelMutant", "kernel_mutants", "main", "run_mutant"]

#: The kernel's source, relative to the repository root.
KERNEL_PATH = Path("lucid/optim/_kernel_numba.py")
#: The functions of it that are compiled: one element's step and the loops over the elements
#: (``fused`` is an ``@intrinsic``, which mutmut skips as decorated).
KERNEL_FUNCTIONS = ("_element_step", "_rmsprop_step")
#: Where the results are written.
RESULTS = Path(__file__).resolve().parent / "results" / "kernel.json"


@dataclass(frozen=True)
class KernelMutant:
    """One mutation of the kernel: its number, the one-line change, the mutated module's source, its function."""

    number: int
    change: str
    source: str
    function: str = "_rmsprop_step"

    @property
    def name(self) -> str:
        """The mutant's name, in mutmut's spelling."""
        return f"lucid.optim._kernel_numba.x_{self.function}__mutmut_{self.number}"

    def diff(self, original: str) -> str:
        """Return the unified diff of the module against ``original``."""
        lines = unified_diff(original.splitlines(), self.source.splitlines(), str(KERNEL_PATH), str(KERNEL_PATH), n=0)
        return "\n".join(line for line in lines if not line.startswith(("---", "+++")))


def kernel_mutants(root: Path) -> tuple[str, list[KernelMutant]]:
    """Return the kernel's source and the mutants mutmut's operators make of :data:`KERNEL_FUNCTIONS`."""
    from mutmut.mutation.file_mutation import create_mutations

    source = (root / KERNEL_PATH).read_text()
    module, mutations, _, _ = create_mutations(str(KERNEL_PATH), source)
    mutants = []
    for mutation in mutations:
        function = mutation.contained_by_top_level_function
        if function is None or function.name.value not in KERNEL_FUNCTIONS:
            continue
        before = module.code_for_node(mutation.original_node)
        after = module.code_for_node(mutation.mutated_node)
        code = module.deep_replace(mutation.original_node, mutation.mutated_node).code
        change = f"{' '.join(before.split())} -> {' '.join(after.split())}"
        mutants.append(KernelMutant(len(mutants) + 1, change, code, function.name.value))  # numbered across both
    return source, mutants


def _install(source: str, tag: str) -> types.ModuleType:
    """Execute ``source`` as ``lucid.optim._kernel_numba`` and make every later import see it."""
    import lucid.optim

    module = types.ModuleType("lucid.optim._kernel_numba")
    module.__file__ = f"<kernel mutant {tag}>"
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # the mutant under test
    sys.modules[module.__name__] = module
    lucid.optim._kernel_numba = module  # type: ignore[attr-defined]
    return module


def run_mutant(source: str, tag: str) -> dict[str, str]:
    """Compile ``source`` as the kernel, self-check it, run the probes through it; return the verdict.

    Run in a child process: it replaces the kernel module of the process.
    """
    import warnings

    from conformance.harness import check_candidate
    from lucid.optim import _kernel
    from mutation.test_check import _probes_only, mutation_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's, about caching
        module = _install(source, tag)
        try:  # the self-check compiles both dtypes' specialisations with the step's own argument types
            self_check = _kernel._self_check(module.rmsprop_kernel)
        except Exception as err:  # numba's typing errors: a mutant that cannot run at all
            return {"status": "no compile", "detail": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    _kernel._self_check = lambda kernel: ""  # the harness, not Lucid's self-check, must catch it
    _kernel._numba = None
    os.environ["LUCID_ACCELERATOR"] = "numba"
    for case in mutation_cases():
        report = check_candidate("lucid.optim:RMSprop", selected=[case], **_probes_only())
        if not report.ok:
            caught = f"{case.id}: {', '.join(sorted(report.caught_by))}"
            return {"status": "killed", "detail": caught, "self_check": self_check}
    return {"status": "survived", "detail": "", "self_check": self_check}


def _fork(source: str, tag: str) -> tuple[int, int]:
    """Start :func:`run_mutant` in a forked child; return its pid and the read end of its result pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        try:
            verdict = run_mutant(source, tag)
        except BaseException as err:  # whatever the mutant did, report it
            verdict = {"status": "killed", "detail": f"raised {type(err).__name__}: {err}"}
        os.write(write, json.dumps(verdict).encode())
        os._exit(0)
    os.close(write)
    return pid, read


def _collect(pid: int, read: int, timeout: float, started: float) -> dict[str, str]:
    """Wait for the child (killing it past ``timeout`` seconds) and read its verdict."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - started > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            return {"status": "timeout", "detail": f"past {timeout:.0f} s"}
        time.sleep(0.05)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    if not chunks:
        return {"status": "killed", "detail": f"the child died (wait status {status})"}
    return json.loads(b"".join(chunks))


def main(argv: list[str] | None = None) -> int:
    """Run every kernel mutant (or ``--only`` some); write :data:`RESULTS`; return 1 if the original fails."""
    parser = argparse.ArgumentParser(prog="python -m mutation.kernel", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--only", default="", help="comma-separated mutant numbers (default: all)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant before it is a timeout")
    args = parser.parse_args(argv)

    root = Path(__file__).resolve().parent.parent
    import torch  # noqa: F401 - imported once here, inherited by every forked child

    import conformance.harness  # noqa: F401
    import lucid.optim._kernel  # noqa: F401

    original, mutants = kernel_mutants(root)
    if args.only:
        wanted = {int(n) for n in args.only.split(",")}
        mutants = [m for m in mutants if m.number in wanted]
    started = time.monotonic()
    baseline = _collect(*_fork(original, "original"), args.timeout, time.monotonic())
    if baseline["status"] != "survived" or baseline.get("self_check"):
        print(f"the unmutated kernel does not pass: {baseline}", file=sys.stderr)
        return 1
    results: dict[str, dict[str, str]] = {}
    pending = list(mutants)
    running: list[tuple[KernelMutant, int, int, float]] = []
    while pending or running:
        while pending and len(running) < args.jobs:
            mutant = pending.pop(0)
            running.append((mutant, *_fork(mutant.source, str(mutant.number)), time.monotonic()))
        mutant, pid, read, t0 = running.pop(0)
        verdict = _collect(pid, read, args.timeout, t0)
        seconds = f"{time.monotonic() - t0:.1f}"
        verdict = {"change": mutant.change, **verdict, "diff": mutant.diff(original), "seconds": seconds}
        results[mutant.name] = verdict
        print(f"{mutant.number:3d} {verdict['status']:10s} {mutant.change}  {verdict.get('detail', '')}", flush=True)
    previous = json.loads(RESULTS.read_text()) if args.only and RESULTS.exists() else {}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({**previous, **results}, indent=1, sort_keys=True) + "\n")
    print(f"{len(results)} kernel mutants in {time.monotonic() - started:.0f} s -> {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
