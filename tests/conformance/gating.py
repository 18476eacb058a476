"""Helpers of the conformance suite: device gating, the seed switch and the example counter."""

from __future__ import annotations

import os

import pytest
from hypothesis import seed as hypothesis_seed

from conformance.checks import DeviceUnavailableError, require_device
from conformance.matrix import Case

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
