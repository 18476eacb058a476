"""The contract family catches each API mutant by the check named for it, and passes torch and the honest.

Every item of :mod:`conformance.checks.contract` runs against
``torch.optim.RMSprop`` itself too: an item torch fails would be a contract of
our own making, not torch's.  The mutants (``mutants_contract.py``) step
torch's arithmetic bit for bit where the numerical families look, so the
contract check named here is what must catch each one; the default probes run
the family (on the first probe of every case).
"""

from __future__ import annotations

import mutants
import mutants_contract as mc
import numpy as np
import pytest
import torch

import lucid
from conformance.checks import FAMILIES, run_checks
from conformance.checks import contract as contract_family
from conformance.matrix import cases
from conformance.probes import probe_scenarios
from conformance.scenario import ParamSpec, Scenario

#: mutant -> the contract check that must catch it
CATALOGUE: dict[type, str] = {
    mc.PositionalAlphaEpsSwapped: "contract_positional",
    mc.PositionalMomentumFirst: "contract_positional",
    mc.ZeroGradZeroesByDefault: "contract_zero_grad",
    mc.ZeroGradNewArrays: "contract_zero_grad",
    mc.ClosureCalledTwice: "contract_closure",
    mc.ClosureWithoutEnableGrad: "contract_closure",
    mc.ClosureLossDropped: "contract_closure",
    mc.ClosureAfterUpdate: "contract_closure",
    mc.GradDecayedInPlace: "contract_grad_untouched",
    mc.GradNegatedInPlace: "contract_grad_untouched",
    mc.SharedBuffersByShape: "contract_state_isolation",
    mc.SharedBuffersAcrossOptimizers: "contract_state_isolation",
    mc.LoadKeepsOwnHypers: "contract_load_hypers",
    mc.LoadMapsReversed: "contract_load_mapping",
    mc.LoadMapsByShape: "contract_load_mapping",
    mc.LoadMapsByEntryOrder: "contract_load_mapping",
    mc.NamedParamsRefused: "contract_named_params",
    mc.ParamNamesDropped: "contract_named_params",
    mc.ParamNamesNotLoaded: "contract_named_params",
    mc.ParamNamesAlwaysWritten: "contract_named_params",
    mc.ParamInTwoGroupsAccepted: "contract_param_groups",
    mc.GroupKeysDroppedOnSave: "contract_param_groups",
    mc.TensorLrRefused: "contract_param_groups",
    mc.GradBroadcast: "contract_bad_grad",
    mc.GradCastToParam: "contract_bad_grad",
    mc.RefusesAfterUpdating: "contract_bad_grad",
    mc.NewArraysEachStep: "contract_in_place",
    mc.BuffersCached: "contract_in_place",
    mc.StepsWithInitialLr: "contract_param_groups",
    mc.StateCopiesOut: "contract_in_place",
}

#: Mutants whose fault touches nothing but the one item: every other contract check must pass them
#: (so an exception or a failure inside one item does not spill into the others).  Not
#: SharedBuffersByShape: contract_in_place edits one parameter's state, which moves its twin's too.
ONLY_THEIR_CHECK = (
    mc.PositionalAlphaEpsSwapped,
    mc.ZeroGradZeroesByDefault,
    mc.ClosureCalledTwice,
    mc.GradNegatedInPlace,
    mc.LoadKeepsOwnHypers,
    mc.LoadMapsByShape,
    mc.NamedParamsRefused,
    mc.ParamNamesAlwaysWritten,
    mc.GroupKeysDroppedOnSave,
    mc.TensorLrRefused,
    mc.GradCastToParam,
)

#: One case with every flag off, one with every flag on (another dtype and torch implementation).
_TWO_CASES = ("c0-m0-wd0-max0-float32-cpu-foreach0-cap0-tlr0", "c1-m1-wd1-max1-float64-cpu-foreach1-cap0-tlr0")

#: Every flag configuration and dtype once (the family does not depend on torch's implementation).
_EVERY_CONFIG = [c for c in cases("cpu") if "foreach0" in c.id]


def _probe(case_id: str) -> Scenario:
    return probe_scenarios(next(c for c in cases("cpu") if c.id == case_id))[0]


def _failed(candidate: type, scenario: Scenario) -> dict[str, str]:
    return {o.check: o.detail for o in contract_family.run(scenario, candidate) if not o.passed}


def test_catalogue_lists_every_contract_mutant() -> None:
    assert set(CATALOGUE) == set(mc.MUTANTS)
    assert set(CATALOGUE.values()) == set(FAMILIES["contract"])  # every item has a mutant it catches


def test_the_default_probes_run_the_family() -> None:
    for case in cases("cpu"):
        assert "contract" in probe_scenarios(case)[0].checks


def test_a_scenario_id_with_every_family_replays() -> None:
    scenario = Scenario(case=_TWO_CASES[0], checks=tuple(FAMILIES))
    assert Scenario.from_id(scenario.to_id()).checks == tuple(FAMILIES)


@pytest.mark.parametrize("case_id", _TWO_CASES)
@pytest.mark.parametrize("mutant", list(CATALOGUE), ids=lambda m: m.__name__)
def test_contract_mutant_is_caught_by_its_check(mutant: type, case_id: str) -> None:
    failed = _failed(mutant, _probe(case_id))
    expected = CATALOGUE[mutant]
    assert expected in failed, f"{mutant.__name__} not caught by {expected} on {case_id} (failed: {sorted(failed)})"
    assert "torch" in failed[expected], f"the message does not say what torch does: {failed[expected]}"
    if mutant in ONLY_THEIR_CHECK:
        assert set(failed) == {expected}, f"{mutant.__name__} also failed {sorted(set(failed) - {expected})}"


def test_the_probe_reports_contract_failures_under_their_names() -> None:
    """Through run_checks, as ``check`` runs the first probe: the contract outcome named, the rest passing."""
    outcomes = run_checks(_probe(_TWO_CASES[0]), mc.ClosureCalledTwice)
    failed = {o.check for o in outcomes if not o.passed}
    assert failed == {"contract_closure"}
    assert {o.check for o in outcomes} >= set(FAMILIES["lockstep"] + FAMILIES["state_dict"] + FAMILIES["contract"])


@pytest.mark.parametrize(
    "candidate",
    [torch.optim.RMSprop, lucid.optim.RMSprop, mutants.Unfused, mutants.WiderIntermediates],
    ids=["torch", "lucid", "Unfused", "WiderIntermediates"],
)
def test_torch_and_the_honest_keep_the_contract_in_every_configuration(candidate: type) -> None:
    problems = {case.id: failed for case in _EVERY_CONFIG if (failed := _failed(candidate, probe_scenarios(case)[0]))}
    assert not problems, problems


def test_an_exception_inside_an_item_fails_that_item_only() -> None:
    class ZeroGradRaises(lucid.optim.RMSprop):
        def zero_grad(self, set_to_none: bool = True) -> None:
            raise RuntimeError("zero_grad is broken")

    failed = _failed(ZeroGradRaises, _probe(_TWO_CASES[0]))
    assert set(failed) == {"contract_zero_grad"}
    assert failed["contract_zero_grad"].startswith(
        "the candidate raised RuntimeError: zero_grad is broken; torch: zero_grad() sets"
    )


def test_grad_untouched_runs_on_the_scenarios_own_gradients() -> None:
    """A write into the gradient only past 1e5 elements (as a chunked path's bug) shows on a large parameter."""

    class WritesLargeGrads(mutants.Unfused):
        def _update(self, p, grad, state, group, **changes):
            if grad.size > 100_000:
                np.negative(grad[..., -1:], out=grad[..., -1:])  # flips a sign bit: changed bits, NaN and 0 included
            super()._update(p, grad, state, group, **changes)

    small = _probe(_TWO_CASES[0])
    large = Scenario(case=small.case, params=(small.params[0], ParamSpec(shape=(3, 33_343))))
    assert "contract_grad_untouched" not in _failed(WritesLargeGrads, small)
    assert "contract_grad_untouched" in _failed(WritesLargeGrads, large)
