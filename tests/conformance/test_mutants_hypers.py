"""The probes catch what goes wrong on hyperparameters and hand-overs, by the named check.

Each mutant of ``mutants_hypers.py`` runs through the probes ``python -m
conformance check`` runs (its deterministic floor, no drawn examples) on the
cases where its error shows; the test fails if it survives, or if the check
expected to catch it does not fail.  The honest variant must pass every case.
"""

from __future__ import annotations

import mutants
import mutants_hypers
import pytest
from gating import assert_caught, covering_cases, foreach0_cases

from conformance.checks import run_checks
from conformance.checks.state_dict import reordering
from conformance.matrix import cases
from conformance.probes import hyper_probe
from conformance.scenario import Scenario

#: mutant -> (the check that must catch it, the part of the case id where it shows)
CATALOGUE: dict[type, tuple[str, str]] = {
    # alpha = 1 - 1e-6: the weight 1 - alpha from float32(alpha) is 1.3% off.
    mutants_hypers.OneMinusAlphaInDtype: ("lockstep", "c0-m0-wd0-max0-float32"),
    mutants_hypers.FalsyAlphaDefault: ("lockstep", "c0-m0-wd0-max0-float64"),
    # eps = 0 against 1e-8 moves the update by 1e-8 relative: below float32's rounding, not float64's.
    mutants_hypers.FalsyEpsDefault: ("lockstep", "c0-m0-wd0-max0-float64"),
    mutants_hypers.ZeroLrSkipsStep: ("lockstep", "c0-m0-wd0-max0-float32"),
    mutants_hypers.AlphaFrozen: ("lockstep", "c0-m0-wd0-max0-float32"),
    mutants_hypers.EpsFrozen: ("lockstep", "c0-m0-wd0-max0-float64"),
    mutants_hypers.MomentumFrozen: ("lockstep", "c0-m1-wd0-max0-float32"),
    mutants_hypers.WeightDecayFrozen: ("lockstep", "c0-m0-wd1-max0-float32"),
    mutants_hypers.StaleHypersInStateDict: ("state_dict", "c0-m0-wd0-max0-float32"),
    mutants_hypers.LoadKeepsOwnHypers: ("torch_to_candidate", "c0-m0-wd0-max0-float32"),
    mutants_hypers.LoadByStateOrder: ("torch_to_candidate", "c0-m0-wd0-max0-float32"),
    mutants_hypers.LoadIndexAsPosition: ("reordered_load", "c0-m0-wd0-max0-float32"),
}


def test_catalogue_lists_every_mutant() -> None:
    assert set(CATALOGUE) == set(mutants_hypers.MUTANTS)


@pytest.mark.parametrize("mutant", list(CATALOGUE), ids=lambda m: m.__name__)
def test_mutant_is_caught(mutant: type, record_property) -> None:
    expected, where = CATALOGUE[mutant]
    assert_caught(mutant, expected, foreach0_cases(where), record_property)


@pytest.mark.parametrize("variant", [*mutants_hypers.HONEST, *mutants.LEGITIMATE], ids=lambda m: m.__name__)
def test_honest_variants_pass_the_hyperparameter_probe(variant: type) -> None:
    """Every honest variant passes the hyperparameter probe on the covering cases (Lucid: every case, test_matrix)."""
    failures = [
        f"{case.id}: {outcome}"
        for case in covering_cases()
        for outcome in run_checks(hyper_probe(case), variant)
        if not outcome.passed
    ]
    assert not failures, "\n".join(failures[:12])


def test_the_hyperparameter_probe_covers_its_ground() -> None:
    """Boundary values, both lerp branches, every hyperparameter changed, a save after changes, a reordering."""
    case = next(c for c in cases("cpu") if c.id.startswith("c1-m1-wd1-max0-float32"))
    probe = hyper_probe(case)
    assert Scenario.from_id(probe.to_id()) == probe
    alphas = {g.alpha for g in probe.groups} | {c.value for c in probe.changes if c.name == "alpha"}
    assert any(a > 0.5 for a in alphas) and any(a <= 0.5 for a in alphas)  # both lerp branches
    assert {0.0, 1.0} <= alphas and any(0 < 1 - a < 1e-5 for a in alphas)
    assert {c.name for c in probe.changes} == {"lr", "alpha", "eps", "momentum", "weight_decay"}
    split = probe.steps // 2  # where the state_dict family saves
    assert {c.name for c in probe.changes if c.step < split} == {c.name for c in probe.changes}
    assert 0.0 in {g.eps for g in probe.groups} and 0.0 in {c.value for c in probe.changes if c.name == "lr"}
    assert reordering(probe) is not None
