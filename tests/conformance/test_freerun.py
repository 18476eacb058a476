"""The free-running check on NaN/Inf patterns: which differences it excuses, and that it still sees the rest."""

from __future__ import annotations

from typing import Any

import numpy as np
from mutants import _Honest

from conformance.checks import run_checks
from conformance.rmsprop import Hyper
from conformance.scenario import ParamSpec, Scenario

STEPS = 100


def _scenario(case: str, *, lr: float = 0.01, weight_decay: float = 0.1) -> Scenario:
    """100 free-running steps of one (8,) parameter whose gradients carry NaNs (its parts go NaN early)."""
    group = Hyper(lr=lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=weight_decay)
    param = ParamSpec(shape=(8,), nonfinite="nan")
    return Scenario(case=case, groups=(group,), params=(param,), steps=STEPS, seed=5, checks=("freerun",))


def _freerun(scenario: Scenario, optimizer_class: type | None = None) -> Any:
    (outcome,) = [o for o in run_checks(scenario, optimizer_class) if o.check == "freerun"]
    return outcome


class SpreadsNaN(_Honest):
    """WRONG: once any element of a parameter is NaN, every element is (a NaN "poisons" the tensor)."""

    def _update(self, p: Any, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any], **changes: Any) -> None:
        super()._update(p, grad, state, group, **changes)
        if np.isnan(p.data).any():
            p.data[...] = np.nan


def test_a_complex_nan_part_under_weight_decay_is_torchs_either_way() -> None:
    # torch's foreach path decays a complex parameter part by part; Lucid (and torch's
    # single-tensor path) in complex arithmetic, whose product makes a NaN part NaN in both
    # parts. In a free run the sides then part for good; CI found this failing honest Lucid.
    scenario = _scenario("c0-m0-wd1-max0-complex64-cpu-foreach1-cap0-tlr0")
    outcome = _freerun(scenario)
    assert outcome.passed, outcome
    assert "0 NaN/Inf positions differ" in outcome.detail
    assert not outcome.detail.endswith("(0 more where the bound no longer pinned them)"), outcome  # it happened


def test_a_nan_spread_across_a_real_tensor_is_caught() -> None:
    scenario = _scenario("c0-m0-wd1-max0-float32-cpu-foreach1-cap0-tlr0")
    assert _freerun(scenario).passed
    outcome = _freerun(scenario, SpreadsNaN)
    assert not outcome.passed, outcome
    assert "0 NaN/Inf positions differ" not in outcome.detail
