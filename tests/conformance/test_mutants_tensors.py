"""The tensor mutants (``mutants_tensors.py``) are caught by the probes, by the check named for each.

As in ``test_mutants.py``: each mutant runs through the probes ``python -m
conformance check`` runs (no drawn scenarios), on the one case named for it,
and must fail there, by the named check.  The honest variants (Lucid, and the
unfused and wider ones of ``mutants.py``) must pass the complex cases on torch's
``foreach=True`` path too.
"""

from __future__ import annotations

import math

import mutants_tensors
import numpy as np
import pytest
from gating import assert_caught
from hypothesis import HealthCheck, given, settings

from conformance.matrix import cases
from conformance.probes import tensor_probe
from conformance.scenario import ParamSpec, Scenario, ScenarioIdError
from conformance.strategies import large_shapes, scenarios
from conformance.streams import SPECIALS, as_real, materialize

_PLAIN = "c0-m0-wd0-max0-float32-cpu-foreach0"

#: mutant -> (the check that must catch it, the case it runs on)
CATALOGUE: dict[type, tuple[str, str]] = {
    # The probe's zeros move every step, so a skipped element has a mean square to decay.
    mutants_tensors.ZeroGradSkipped: ("lockstep", _PLAIN),
    # Whole steps of zeros (2, 6, 10): square_avg must decay on them.
    mutants_tensors.AllZeroGradSkipped: ("lockstep", _PLAIN),
    mutants_tensors.InfClipped: ("nonfinite", _PLAIN),
    # Gradients whose square is subnormal keep square_avg subnormal, which a flush zeroes.
    mutants_tensors.SubnormalsFlushed: ("lockstep", _PLAIN),
    mutants_tensors.TailBlockDropped: ("lockstep", _PLAIN),
    mutants_tensors.StateKeyedByShape: ("lockstep", _PLAIN),
    # Two parameters get their first gradient after the hand-over at step 6.
    mutants_tensors.EagerState: ("state_dict", _PLAIN),
    mutants_tensors.LexicographicStateOrder: ("torch_to_candidate", _PLAIN),
    mutants_tensors.ComplexAsMagnitude: ("lockstep", "c0-m0-wd0-max0-complex64-cpu-foreach0"),
    mutants_tensors.ComplexRefused: ("lockstep", "c0-m0-wd0-max0-complex128-cpu-foreach0"),
    mutants_tensors.EmptyGradCrashes: ("lockstep", _PLAIN),
}


def test_catalogue_lists_every_mutant() -> None:
    assert set(CATALOGUE) == set(mutants_tensors.MUTANTS)


@pytest.mark.parametrize("mutant", list(CATALOGUE), ids=lambda m: m.__name__)
def test_mutant_is_caught(mutant: type, record_property) -> None:
    expected, where = CATALOGUE[mutant]
    selected = [c for c in cases("cpu") if where in c.id]
    assert len(selected) == 1, where
    assert_caught(mutant, expected, selected, record_property)


# ------------------------------------------------------------------ the tensor scenario space itself


def _stream(spec: ParamSpec, dtype: str = "float32", steps: int = 12) -> list:
    case = next(c for c in cases("cpu") if c.dtype == dtype)
    return materialize(Scenario(case=case.id, params=(spec,), steps=steps, seed=7))[1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_specials_are_in_the_stream(dtype: str) -> None:
    tiny = np.finfo(dtype).smallest_normal
    zeros = [g[0] for g in _stream(ParamSpec(shape=(4000,), special="zeros"), dtype)]
    fractions = [np.mean(g == 0) for g in zeros]
    assert all(0.22 < f < 0.28 for f in fractions), fractions  # a quarter, 4000 draws: sd 0.007
    assert any(np.signbit(g[g == 0]).any() and (~np.signbit(g[g == 0])).any() for g in zeros)
    assert not np.array_equal(zeros[0] == 0, zeros[1] == 0)  # the positions move
    sub = [g[0] for g in _stream(ParamSpec(shape=(4000,), special="subnormal"), dtype)]
    subnormal = [(g != 0) & (np.abs(g) < tiny) for g in sub]
    square = [(g != 0) & (np.abs(g) >= tiny) & (g.astype(np.float64) ** 2 < tiny) for g in sub]
    assert 0.1 < np.mean(subnormal[0]) < 0.15 and 0.1 < np.mean(square[0]) < 0.15  # an eighth each
    assert all(np.array_equal(s, subnormal[0]) for s in subnormal)  # fixed positions
    steps = [g[0] for g in _stream(ParamSpec(shape=(50,), special="zero_steps"), dtype)]
    assert [i for i, g in enumerate(steps) if not g.any()] == [2, 6, 10]


def test_late_first_gradient_and_mixed_nonfinite() -> None:
    stream = [g[0] for g in _stream(ParamSpec(shape=(30,), first_step=5, nonfinite="mixed"))]
    assert all(g is None for g in stream[:5]) and all(g is not None for g in stream[5:])
    values = np.concatenate(stream[5:])
    assert np.isnan(values).sum() == 1 and (values == np.inf).sum() == 1 and (values == -np.inf).sum() == 1


def test_complex_streams_are_real_pairs() -> None:
    spec = ParamSpec(shape=(3, 5), special="zeros", nonfinite="inf")
    case = next(c for c in cases("cpu") if c.dtype == "complex64")
    params0, grads = materialize(Scenario(case=case.id, params=(spec,), steps=4, seed=3))
    assert params0[0].dtype == np.complex64 and params0[0].shape == (3, 5)
    assert np.all(params0[0].imag != 0)  # both parts drawn
    g = grads[0][0]
    assert g.dtype == np.complex64 and as_real(g).shape == (3, 5, 2)
    assert np.array_equal(as_real(g)[..., 1], g.imag)
    assert as_real(np.complex64(1 + 2j)).shape == (2,)  # 0-d


def test_tensor_probe_crosses_the_thresholds() -> None:
    from lucid.optim._fast import BLOCK, PARALLEL_MIN, SMALL

    probe = tensor_probe(cases("cpu")[0])
    sizes = [math.prod(p.shape) for p in probe.params]
    big = max(sizes)
    assert big > 1e5 and big > max(BLOCK.values()) and big % max(BLOCK.values()) and big > PARALLEL_MIN > SMALL
    assert big % 2 and len(probe.params) > 10 and 0 in sizes and any(p.shape == () for p in probe.params)
    shapes = [p.shape for p in probe.params]
    assert any(shapes.count(s) > 2 for s in shapes)
    split = probe.steps // 2  # the state_dict family's hand-over
    assert any(p.first_step > split for p in probe.params) and any(0 < p.first_step < split for p in probe.params)
    assert {p.special for p in probe.params} >= {"zeros", "subnormal", "zero_steps"}
    assert Scenario.from_id(probe.to_id()) == probe


@settings(max_examples=200, database=None, suppress_health_check=list(HealthCheck))
@given(scenarios(cases("cpu")[0]))
def test_drawn_scenarios_replay(scenario: Scenario) -> None:
    assert Scenario.from_id(scenario.to_id()) == scenario


def test_drawn_scenarios_reach_the_tensor_space() -> None:
    seen: list[Scenario] = []

    @settings(max_examples=300, database=None, suppress_health_check=list(HealthCheck))
    @given(scenarios(cases("cpu")[0]))
    def draw(scenario: Scenario) -> None:
        seen.append(scenario)

    draw()
    specs = [p for s in seen for p in s.params]
    assert {p.special for p in specs} == set(SPECIALS)
    assert any(p.first_step > 0 for p in specs)
    assert any(len(s.params) > 10 for s in seen)
    assert any(len({p.shape for p in s.params}) < len(s.params) for s in seen)
    large = [s for s in seen if any(math.prod(p.shape) > 65536 for p in s.params)]
    assert 0 < len(large) < len(seen) / 4  # one in LARGE_ONE_IN on average: cheap on average
    assert all(
        p.first_step >= s.steps - 2 for s in large for p in s.params if math.prod(p.shape) > 65536
    )  # a step or two on it


@settings(max_examples=100, database=None)
@given(large_shapes())
def test_large_shapes_pass_every_block(shape: tuple[int, ...]) -> None:
    n = math.prod(shape)
    assert 65536 < n <= 140001 and all(side % 2 for side in shape)


def test_bad_special_is_refused_by_name() -> None:
    probe = tensor_probe(cases("cpu")[0])
    bad = Scenario(case=probe.case, params=(ParamSpec(special="denormal"),))
    with pytest.raises(ScenarioIdError, match=r"params\[0\]\.special must be one of"):
        Scenario.from_id(bad.to_id())
    late = Scenario(case=probe.case, params=(ParamSpec(first_step=-1),))
    with pytest.raises(ScenarioIdError, match=r"params\[0\]\.first_step must be an integer"):
        Scenario.from_id(late.to_id())
