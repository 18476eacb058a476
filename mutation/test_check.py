"""The test mutmut runs against each mutant: the conformance ``check`` on Lucid's RMSprop.

One test per (step path, matrix case).  The cases: CPU, torch's
``foreach=False`` implementation (Lucid's step does not depend on which of
torch's implementations it is compared with, so the ``foreach=True`` twins add
nothing), every dtype of the matrix, and the six flag combinations of
:data:`PAIRWISE_FLAGS`, in which every pair of the four flags takes all four of
its value pairs (a strength-2 covering array: 6 runs instead of 16, so that a
surviving mutant costs 24 probe batteries, not 64, on this 2-core machine).
Each case runs twice, once per step path of Lucid
(``LUCID_ACCELERATOR=numpy``: the blocked NumPy step of ``lucid.optim._fast``;
``numba``: the compiled kernel).  Each test runs the deterministic probes only
(:func:`conformance.harness.check_candidate` with ``selected=``), so the same
mutant gives the same verdict on every run, and new probes and new matrix cases
are picked up without changes here.

mutmut forks each mutant's run from a process that has already stepped, so the
numba kernel's once-per-process compile-and-self-check would otherwise be
skipped; :func:`fresh_kernel_choice` forgets it before every numba test, which
runs the self-check (with whatever mutant is active) as a new process would.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

from conformance.harness import check_candidate
from conformance.matrix import Case, cases

#: Lucid's two step paths, by the value of ``LUCID_ACCELERATOR`` that selects each.
ACCELERATORS = ("numpy", "numba")

#: Flag combinations (centered, momentum > 0, weight_decay > 0, maximize) covering every value pair of
#: every two flags: 0000 and 1111 give the pairs 00 and 11, the other four 01 and 10 for each pair.
PAIRWISE_FLAGS = (
    "c0-m0-wd0-max0",
    "c1-m1-wd1-max1",
    "c0-m0-wd1-max1",
    "c1-m1-wd0-max0",
    "c0-m1-wd0-max1",
    "c1-m0-wd1-max0",
)


def mutation_cases() -> list[Case]:
    """Return the matrix cases each mutant runs: CPU, torch's ``foreach=False``, :data:`PAIRWISE_FLAGS`, any dtype."""
    return [case for case in cases("cpu") if not case.impl.foreach and case.flags.name in PAIRWISE_FLAGS]


def _probes_only() -> dict[str, int]:
    """Keyword arguments that make :func:`check_candidate` run the deterministic probes and nothing drawn."""
    names = inspect.signature(check_candidate).parameters
    return {name: 0 for name in ("examples", "budget") if name in names}


@pytest.fixture(autouse=True)
def fresh_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Forget the process's cached accelerator choice, so this test compiles and self-checks anew."""
    from lucid.optim import _kernel

    monkeypatch.setattr(_kernel, "_numba", None)
    yield


@pytest.mark.parametrize("case", mutation_cases(), ids=lambda case: case.id)
@pytest.mark.parametrize("accelerator", ACCELERATORS)
def test_check(accelerator: str, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness's probes of ``case`` pass on Lucid's RMSprop stepping through ``accelerator``."""
    monkeypatch.setenv("LUCID_ACCELERATOR", accelerator)
    report = check_candidate("lucid.optim:RMSprop", selected=[case], **_probes_only())
    assert report.ok, "\n".join(report.failure_lines())
