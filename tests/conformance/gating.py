"""Helpers of the conformance suite: device gating, the seed switch and the example counter."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import seed as hypothesis_seed

from conformance.checks import DeviceUnavailableError, require_device
from conformance.harness import check_candidate
from conformance.matrix import CASE_DTYPES, Case, cases

#: Set to an integer to run the Hypothesis searches from that seed instead of the
#: profile's derandomized one (``ci`` is derandomized, which ignores --hypothesis-seed).
SEED_ENV = "CONFORMANCE_SEED"


def cuda_required(config: pytest.Config) -> bool:
    """``--require-cuda`` or ``LUCID_REQUIRE_CUDA=1``: a missing GPU fails instead of skipping."""
    return bool(config.getoption("--require-cuda")) or os.environ.get("LUCID_REQUIRE_CUDA", "") == "1"


def gate_device(case: Case, config: pytest.Config) -> None:
    """Skip (or, when CUDA is required, fail) a case whose device torch cannot use, with the reason."""
    try:
        require_device(case.device)
    except DeviceUnavailableError as err:
        if cuda_required(config):
            pytest.fail(f"{err}; CUDA is required here (--require-cuda / LUCID_REQUIRE_CUDA=1)")
        pytest.skip(str(err))


def seeded(test):
    """Apply ``CONFORMANCE_SEED`` to a Hypothesis test, if set."""
    value = os.environ.get(SEED_ENV)
    return hypothesis_seed(int(value))(test) if value else test


@pytest.fixture
def count_examples(request: pytest.FixtureRequest):
    """A callable that counts one Hypothesis example; the total lands in the terminal summary."""
    counter = {"n": 0}

    def count() -> None:
        counter["n"] += 1

    yield count
    request.node.user_properties.append(("conformance_examples", counter["n"]))


def covering_cases() -> list[Case]:
    """A quarter of the CPU matrix that still meets every flag and dtype: 32 of its 128 cases.

    Every flag combination once on each torch implementation (``foreach`` 0 and
    1), the dtype rotating so that each single flag's setting, on each
    implementation, meets all four dtypes (dtype index ``2 (c ^ wd ^ foreach) +
    (m ^ max)`` in :data:`~conformance.matrix.CASE_DTYPES`).  For the suites that
    run an honest variant's probes to show the bounds leave room for it: a bound
    too tight for a dtype or a flag shows on every case that has them, and the
    whole matrix costs four times as long (Lucid itself runs every probe of every
    case in ``test_matrix.py``).
    """
    chosen = []
    for case in cases("cpu"):
        f, i = case.flags, int(case.impl.foreach)
        index = 2 * (f.centered ^ (f.weight_decay > 0) ^ i) + ((f.momentum > 0) ^ f.maximize)
        if np.dtype(CASE_DTYPES[index]) == case.np_dtype:
            chosen.append(case)
    return chosen


def foreach0_cases(where: str) -> list[Case]:
    """The CPU cases compared with torch's ``foreach=False`` path whose id contains ``where``."""
    return [c for c in cases("cpu") if where in c.id and not c.impl.foreach]


def assert_caught(mutant: type, expected: str, selected: list[Case], record_property=None) -> None:
    """Run the probes of ``selected`` against ``mutant``; assert it fails, and by the check ``expected``.

    ``record_property`` (pytest's fixture) records which checks caught it, for the test report.
    """
    assert selected, f"no case selected for {mutant.__name__}"
    report = check_candidate(mutant, selected=selected, diagnosis=False)  # caught, by which check (test_diagnosis: why)
    if record_property is not None:
        record_property("caught_by", sorted(report.caught_by))
    assert not report.ok, f"{mutant.__name__} SURVIVED every probe of {[c.id for c in selected]}"
    assert expected in report.caught_by, (
        f"{mutant.__name__} was caught by {sorted(report.caught_by)}, not by {expected!r}:\n"
        + "\n".join(report.failure_lines()[:12])
    )
