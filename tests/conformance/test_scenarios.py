"""Scenarios replay exactly: ids round-trip, streams are pure functions of them, strategies cover every stream kind."""

from __future__ import annotations

import numpy as np
import pytest
from gating import covering_cases
from hypothesis import given

from conformance.matrix import CASE_DTYPES, DEVICES, IMPLS, case_by_id, cases
from conformance.rmsprop import HYPER_BOUNDARIES, HYPER_RANGES
from conformance.scenario import DEFAULT_GROUP, ParamSpec, Scenario
from conformance.strategies import scenarios
from conformance.streams import copy_layout, materialize

CASE = cases("cpu")[0]


def test_matrix_is_the_full_product() -> None:
    assert len(cases()) == 16 * len(CASE_DTYPES) * sum(len(IMPLS[d]) for d in DEVICES) == 256
    assert len({c.id for c in cases()}) == 256
    assert all(c.impl.capturable and c.impl.tensor_lr for c in cases("cuda"))
    assert case_by_id(CASE.id) == CASE
    with pytest.raises(KeyError, match="no case 'nope'"):
        case_by_id("nope")


@given(scenarios(CASE))
def test_id_round_trips_and_streams_are_pure(scenario: Scenario) -> None:
    again = Scenario.from_id(scenario.to_id())
    assert again == scenario
    (p1, g1), (p2, g2) = materialize(scenario), materialize(again)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b, strict=True)
    for step1, step2 in zip(g1, g2):
        for a, b in zip(step1, step2):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_array_equal(a, b, strict=True)
                assert a.strides == b.strides


@given(scenarios(CASE))
def test_drawn_hyperparameters_are_in_range(scenario: Scenario) -> None:
    assert {p.group for p in scenario.params} == set(range(len(scenario.groups)))
    for group in scenario.groups:
        for name, (low, high, spacing) in HYPER_RANGES.items():
            value = getattr(group, name)
            assert low * (1 - 1e-12) <= value <= high * (1 + 1e-12), name
            if spacing == "linear" and value not in HYPER_BOUNDARIES[name]:  # rounded to float32, not 3e-274
                assert float(np.float32(value)) == value or value == high, (name, value)


def test_stream_features_reach_the_optimizers() -> None:
    scenario = Scenario(
        case=CASE.id,
        groups=(DEFAULT_GROUP,),
        params=(
            ParamSpec(shape=(4, 6), layout="strided", nonfinite="mixed"),
            ParamSpec(shape=(3, 5), layout="transposed", none_every=2),
            ParamSpec(shape=()),
            ParamSpec(shape=(3, 0)),
        ),
        steps=6,
    )
    params0, grads = materialize(scenario)
    assert [p.shape for p in params0] == [(4, 6), (3, 5), (), (3, 0)]
    strided = [g[0] for g in grads]
    assert not strided[0].flags.c_contiguous and not strided[0].flags.f_contiguous
    assert not copy_layout(strided[0]).flags.c_contiguous  # the copy each side gets stays non-contiguous
    assert grads[0][1].flags.f_contiguous and not grads[0][1].flags.c_contiguous
    assert [g[1] is None for g in grads] == [False, True] * 3
    values = np.concatenate([g.ravel() for g in strided])
    assert np.isnan(values).any() and np.isposinf(values).any() and np.isneginf(values).any()


@pytest.mark.parametrize("bad", ["v2-abc", "v1-!!!", "v1-" + "A" * 8])
def test_corrupt_ids_are_refused_by_name(bad: str) -> None:
    with pytest.raises(ValueError, match="scenario id"):
        Scenario.from_id(bad)


def test_covering_cases_meet_every_flag_dtype_and_implementation() -> None:
    chosen = covering_cases()
    assert len(chosen) == 32 and len({c.id for c in chosen}) == 32
    assert {(c.flags, c.impl) for c in chosen} == {(c.flags, c.impl) for c in cases("cpu")}  # each pair once
    for flag in ("centered", "momentum", "weight_decay", "maximize"):
        for foreach in (False, True):
            for on in (False, True):
                met = {c.dtype for c in chosen if c.impl.foreach is foreach and bool(getattr(c.flags, flag)) is on}
                assert met == {c.dtype for c in cases("cpu")}, (flag, on, foreach, met)
