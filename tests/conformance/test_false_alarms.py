"""Scenarios on which the seeded search once failed an honest variant; each passes now.

Each was a flaw of the harness, not of the variant (the oracle put the variant
nearer the exact step than torch), mended in the error scales of
:mod:`conformance.compare`; the comments say which.
"""

from __future__ import annotations

import mutants
import pytest

from conformance.checks import run_checks
from conformance.scenario import GroupSpec, ParamSpec, Scenario

_OFF = GroupSpec(lr=0.0, alpha=0.0, eps=0.0, momentum=0.0, weight_decay=0.0)

FOUND = {
    # Centered, alpha = 1e-6: lerp makes a small grad_avg out of a large old one, so the error of
    # grad_avg^2 is at the scale of the old one (S_ga), not of grad_avg; the conditioning counted
    # |v| / var and the bound was 18.7 units short (Unfused, search seed 5).
    "lerp_cancels": Scenario(
        case="c1-m0-wd1-max1-complex128-cpu-foreach0-cap0-tlr0",
        groups=(_OFF, GroupSpec(lr=1.0, alpha=1e-6, eps=0.0, momentum=0.0, weight_decay=0.0)),
        params=(ParamSpec(shape=()), ParamSpec(shape=(3,), group=1)),
        steps=2,
        checks=("lockstep",),
    ),
    # A subnormal gradient squared: a subnormal mean square with few significant bits, whose root
    # torch takes in float32 (5e4 ULP from exact, a float64 variant 0.25); the mean square's error
    # scale had no underflow term (WiderIntermediates, search seed 1).
    "subnormal_square": Scenario(
        case="c0-m0-wd0-max0-float32-cpu-foreach0-cap0-tlr0",
        groups=(_OFF, GroupSpec(lr=1.0, alpha=0.0, eps=0.0, momentum=0.0, weight_decay=0.0)),
        params=(
            ParamSpec(shape=()),
            ParamSpec(shape=(), group=1),
            ParamSpec(shape=()),
            ParamSpec(shape=(1, 8), group=1, special="subnormal"),
        ),
        steps=2,
        checks=("lockstep", "state_dict"),
    ),
}


@pytest.mark.parametrize("variant", mutants.LEGITIMATE, ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", list(FOUND))
def test_found_scenario_passes_the_honest_variants(name: str, variant: type) -> None:
    failed = [str(o) for o in run_checks(FOUND[name], variant) if not o.passed]
    assert not failed, "\n".join(failed)
