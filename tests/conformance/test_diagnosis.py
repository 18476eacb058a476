"""The diagnosis names the cause: each mutant's own departure, the textbook's two, nothing for honest candidates.

Every test here asserts the *named* cause (the departures of
:func:`conformance.diagnosis.diagnose`, or the observed cause), not only that
a check failed; the honest candidates (Lucid, the unfused and the
wider-intermediates variants, torch against itself) must be diagnosed as
following torch's formula, with no cause, on 20 seeds.
"""

from __future__ import annotations

import subprocess
import sys

import mutants
import mutants_hypers
import mutants_tensors
import numpy as np
import pytest

from conformance.candidate import resolve
from conformance.checks import CheckOutcome, run_checks
from conformance.departures import CATALOGUE, CONDITIONS, DEPARTURES, FORMULA, combinations_upto, describe, relevant
from conformance.diagnosis import HONEST_DISTANCE, diagnose
from conformance.examples.textbook import TextbookRMSprop
from conformance.matrix import select_cases
from conformance.oracle import oracle_step
from conformance.probes import probe_scenarios
from conformance.rmsprop import Hyper

RICH = "c1-m1-wd1-max1-float32-cpu-foreach0"
HYPERS = "hyperparameter probe"

#: mutant -> (its case, the departures the diagnosis must name[, the probe to diagnose: default the first failing])
FORMULA_MUTANTS = {
    mutants.EpsInsideRoot: (RICH, {"eps_inside_root"}),
    mutants.LrInsideMomentum: (RICH, {"lr_inside_momentum"}),
    mutants.AlphaSwapped: (RICH, {"alpha_swapped"}),
    mutants.CenteredWithoutMean: (RICH, {"centered_ignored"}),
    mutants.DecoupledWeightDecay: (RICH, {"decoupled_weight_decay"}),
    mutants.WeightDecayIgnored: (RICH, {"weight_decay_ignored"}),
    mutants.MaximizeIgnored: (RICH, {"maximize_ignored"}),
    mutants.GradAvgWrongWeight: (RICH, {"grad_avg_alpha_swapped"}),
    mutants.EpsDropped: ("c0-m0-wd0-max0-float64-cpu-foreach1", {"eps_ignored"}),
    mutants.LrFrozen: (RICH, {"lr_changes_ignored"}),
    mutants.NoneGradAsZero: (RICH, {"none_grad_as_zero"}),
    # the hyperparameter probe changes every hyperparameter mid-run, to 0 among others
    mutants_hypers.AlphaFrozen: (RICH, {"alpha_changes_ignored"}, HYPERS),
    mutants_hypers.EpsFrozen: (RICH, {"eps_changes_ignored"}, HYPERS),
    mutants_hypers.MomentumFrozen: (RICH, {"momentum_changes_ignored"}, HYPERS),
    mutants_hypers.WeightDecayFrozen: (RICH, {"weight_decay_changes_ignored"}, HYPERS),
    mutants_hypers.FalsyAlphaDefault: (RICH, {"zero_alpha_as_default"}, HYPERS),
    mutants_hypers.FalsyEpsDefault: ("c0-m0-wd0-max0-float64-cpu-foreach0", {"zero_eps_as_default"}, HYPERS),
    mutants_hypers.ZeroLrSkipsStep: (RICH, {"zero_lr_skips_step"}, HYPERS),
    mutants_tensors.AllZeroGradSkipped: (RICH, {"zero_grad_skipped"}),
    mutants_tensors.InfClipped: (RICH, {"inf_grad_clipped"}),
}

#: mutant -> (its case, a phrase the observed cause must hold)
OBSERVED_MUTANTS = {
    mutants.KeptAsFloat64: (RICH, "float32 values stored in float64"),
    mutants.StepNotIncremented: (RICH, "the step counter does not advance"),
    mutants.LoadForgetsSquareAvg: (RICH, "load_state_dict() does not restore square_avg"),
    mutants.MomentumNotSaved: (RICH, "state_dict() leaves out momentum_buffer"),
    mutants_tensors.SubnormalsFlushed: ("c0-m0-wd0-max0-float32-cpu-foreach0", "subnormal results flushed to zero"),
}


def _failing_probe(candidate: type, case_filter: str, label: str = "", seed: int = 0):
    """The first probe scenario of the case (with ``label``) on which ``candidate`` fails a check, and its outcomes."""
    case = select_cases(case_filter, "cpu")[0]
    adapter = resolve(candidate)
    for scenario in probe_scenarios(case, seed):
        if label and scenario.label != label:
            continue
        outcomes = run_checks(scenario, adapter)
        if any(not o.passed for o in outcomes):
            return scenario, adapter, outcomes
    raise AssertionError(f"{candidate.__name__} passes every probe of {case.id}")


@pytest.mark.parametrize("mutant", list(FORMULA_MUTANTS), ids=lambda m: m.__name__)
def test_formula_mutant_is_named(mutant: type) -> None:
    case, expected, *label = FORMULA_MUTANTS[mutant]
    scenario, adapter, outcomes = _failing_probe(mutant, case, *label)
    found = diagnose(scenario, adapter, outcomes)
    assert found is not None and found.explained, found
    assert set(found.causes) == expected, str(found)
    assert describe(expected) in str(found)


@pytest.mark.parametrize("mutant", list(OBSERVED_MUTANTS), ids=lambda m: m.__name__)
def test_observed_cause_is_named(mutant: type) -> None:
    case, phrase = OBSERVED_MUTANTS[mutant]
    scenario, adapter, outcomes = _failing_probe(mutant, case)
    found = diagnose(scenario, adapter, outcomes)
    assert found is not None and not found.causes, str(found)  # the trajectory is torch's
    assert any(phrase in cause for cause in found.observed), str(found)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("c0-m0-wd0-max0-float32-cpu-foreach0", {"eps_inside_root"}),
        # lr inside the buffer is invisible while lr is constant: the diagnosis finds it on a scenario with an lr change
        ("c0-m1-wd0-max0-float32-cpu-foreach0", {"eps_inside_root", "lr_inside_momentum"}),
    ],
)
def test_textbook_departures_are_both_named(case: str, expected: set[str]) -> None:
    scenario, adapter, outcomes = _failing_probe(TextbookRMSprop, case)
    found = diagnose(scenario, adapter, outcomes)
    assert found is not None and set(found.causes) == expected, str(found)


HONEST = [
    pytest.param("lucid.optim:RMSprop", id="lucid"),
    pytest.param(mutants.Unfused, id="unfused"),
    pytest.param(mutants.WiderIntermediates, id="wider"),
    pytest.param("torch.optim:RMSprop", id="torch"),
]


@pytest.mark.parametrize("candidate", HONEST)
@pytest.mark.parametrize("case", [RICH, "c0-m1-wd1-max0-float64-cpu-foreach1"])
def test_honest_candidates_get_no_cause_in_20_seeds(candidate: object, case: str) -> None:
    adapter = resolve(candidate)
    matrix_case = select_cases(case, "cpu")[0]
    distances = []
    # As if the lockstep and a hand-over had failed: every search the diagnosis has runs, and must name nothing.
    forced = [CheckOutcome("lockstep", False, "forced"), CheckOutcome("torch_to_candidate", False, "forced")]
    for seed in range(20):
        scenario = probe_scenarios(matrix_case, seed)[0]
        found = diagnose(scenario, adapter, forced)
        assert found is not None and found.explained and not found.causes and not found.observed, (seed, str(found))
        assert not found.first_difference, str(found)  # its steps from torch's state stay within the lockstep bound
        distances.append(found.torch_distance)
    assert max(distances) <= HONEST_DISTANCE, distances  # the measured floor the closer-variant rule relies on


def test_no_departure_is_reported_when_none_explains() -> None:
    scenario, adapter, outcomes = _failing_probe(mutants.OneUlpBias, RICH)
    found = diagnose(scenario, adapter, outcomes)
    assert found is not None and not found.causes
    assert any("lean one way" in o for o in found.observed), str(found)


class SquareAvgTooLarge(mutants._Honest):
    """No departure of the catalogue: square_avg one and a half times torch's after every step."""

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group, **changes)
        state["square_avg"] *= state["square_avg"].dtype.type(1.5)


def test_unexplained_disagreement_names_where_the_step_first_differs() -> None:
    scenario, adapter, outcomes = _failing_probe(SquareAvgTooLarge, "c0-m0-wd0-max0-float64-cpu-foreach0")
    found = diagnose(scenario, adapter, outcomes)
    assert found is not None and not found.explained and not found.causes, str(found)
    assert str(found).startswith("no known departure explains this")
    assert found.first_difference.startswith("square_avg at step 0, parameter #0, element (0,)"), str(found)


def test_every_formula_departure_changes_the_step() -> None:
    """Each departure of the oracle computes something else than torch's formula on a step that exercises it."""
    rng = np.random.default_rng(0)
    p, g = rng.normal(size=64), rng.normal(size=64)
    state = {k: np.abs(rng.normal(size=64)) * 0.1 for k in ("square_avg", "momentum_buffer")}
    state["grad_avg"] = rng.normal(size=64) * 0.01
    hyper = Hyper(lr=0.1, alpha=0.9, eps=1e-2, weight_decay=0.1, momentum=0.9, centered=True, maximize=True)
    torch_step = oracle_step(hyper, p, g, state)
    for name in sorted(FORMULA):
        fresh = {} if name == "square_avg_starts_at_one" else state
        base = oracle_step(hyper, p, g, fresh) if fresh is not state else torch_step
        other = oracle_step(hyper, p, g, fresh, {name})
        changed = [
            not np.array_equal(getattr(base, k), getattr(other, k))
            for k in ("param", "square_avg", "grad_avg", "momentum_buffer")
            if getattr(base, k) is not None and getattr(other, k) is not None
        ]
        assert any(changed), name
    with pytest.raises(ValueError, match="unknown departures"):
        oracle_step(hyper, p, g, state, {"eps_outside"})


def test_catalogue_is_consistent() -> None:
    assert len(DEPARTURES) == len(CATALOGUE)
    everything = relevant(CONDITIONS)
    assert {d.name for d in everything} == set(DEPARTURES)
    assert {n for d in CATALOGUE for n in d.needs} == CONDITIONS  # every condition is some departure's
    assert not any(d.needs for d in relevant(()))
    assert {d.name for d in relevant({"momentum"})} >= {"lr_inside_momentum", "momentum_ignored"}
    with pytest.raises(ValueError, match="unknown conditions"):
        relevant({"lr_changed"})
    pairs = combinations_upto(everything, 2)
    assert frozenset({"eps_inside_root", "eps_ignored"}) not in pairs
    assert frozenset({"eps_inside_root", "lr_inside_momentum"}) in pairs


def test_check_prints_the_cause_in_at_most_30_lines() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "check",
            "--budget",
            "0",
            "--cases",
            "float32-cpu-foreach0",
            "--optimizer",
            "conformance.examples.textbook:TextbookRMSprop",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) <= 30, done.stdout
    verdict = next(line for line in lines if line.startswith("verdict: FAIL"))
    assert "eps inside the square root and lr inside the momentum buffer" in verdict
    assert sum(line.startswith("  replay: ") for line in lines) == sum(line.startswith("cause: ") for line in lines)
