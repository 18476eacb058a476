"""Proof that the harness catches what matters: every mutant caught, by the named check.

Each mutant (``mutants.py``) runs through the same probes ``python -m
conformance check`` runs, on the cases where its error is visible (a centered
mistake needs a centered case); the test fails if it survives, or if the check
expected to catch it does not fail.  The legitimate variants, a different but
honest rounding, must pass every case: the harness must not cry wolf.
"""

from __future__ import annotations

import mutants
import pytest
from gating import assert_caught, covering_cases, foreach0_cases

from conformance.harness import check_candidate

#: mutant -> (the check that must catch it, the flag configuration where it shows)
CATALOGUE: dict[type, tuple[str, str]] = {
    mutants.EpsInsideRoot: ("lockstep", "c0-m0-wd0-max0"),
    mutants.LrInsideMomentum: ("lockstep", "c0-m1-wd0-max0"),
    mutants.AlphaSwapped: ("lockstep", "c0-m0-wd0-max0"),
    mutants.CenteredWithoutMean: ("lockstep", "c1-m0-wd0-max0"),
    mutants.DecoupledWeightDecay: ("lockstep", "c0-m0-wd1-max0"),
    mutants.MomentumNotSaved: ("state_dict", "c0-m1-wd0-max0"),
    mutants.StepNotIncremented: ("state_dict", "c0-m0-wd0-max0"),
    mutants.LoadForgetsSquareAvg: ("torch_to_candidate", "c0-m0-wd0-max0"),
    mutants.KeptAsFloat64: ("dtype", "c0-m0-wd0-max0-float32"),
    # A one-ULP bias per step is below every max-ULP bound; only the sign test sees it.
    mutants.OneUlpBias: ("sign", "c1-m1-wd1-max1-float32"),
    mutants.MaximizeIgnored: ("lockstep", "c0-m0-wd0-max1"),
    mutants.WeightDecayIgnored: ("lockstep", "c0-m0-wd1-max0"),
    mutants.GradAvgWrongWeight: ("lockstep", "c1-m0-wd0-max0"),
    mutants.EpsDropped: ("lockstep", "c0-m0-wd0-max0"),
    mutants.NoneGradAsZero: ("state_dict", "c0-m0-wd0-max0"),
    mutants.LrFrozen: ("lockstep", "c0-m0-wd0-max0"),
}


def test_catalogue_lists_every_mutant() -> None:
    assert set(CATALOGUE) == set(mutants.MUTANTS)


@pytest.mark.parametrize("mutant", list(CATALOGUE), ids=lambda m: m.__name__)
def test_mutant_is_caught(mutant: type, record_property) -> None:
    expected, where = CATALOGUE[mutant]
    assert_caught(mutant, expected, foreach0_cases(where), record_property)


@pytest.mark.parametrize("variant", mutants.LEGITIMATE, ids=lambda m: m.__name__)
def test_legitimate_variant_passes_the_covering_cases(variant: type) -> None:
    """Every probe of 32 cases meeting every flag, dtype and torch implementation (``covering_cases``).

    Among them the complex cases with weight decay on torch's ``foreach=True``
    path, where torch decays a complex parameter per part, not in complex
    arithmetic as its default path does.
    """
    report = check_candidate(variant, selected=covering_cases())
    assert report.ok, "\n".join(report.failure_lines()[:20])
