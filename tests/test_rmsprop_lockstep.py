"""Lockstep agreement with torch.optim.RMSprop over every flag combination, judged by the lockstep bound.

Each case starts both optimizers from identical state before every step and
judges the step by :data:`conformance.compare.LOCKSTEP_BOUND` (16 units of
``u * S_x``, derived in ``conformance/compare.py``).  Streams cover gradient
scales 1e-12..1e4, zeros and constants; the learning rate changes mid-run.
"""

from __future__ import annotations

import numpy as np
import pytest

import lucid
from conformance.compare import LOCKSTEP_BOUND
from conformance.lockstep import run_lockstep
from conformance.matrix import DTYPES, TORCH_IMPLS, FlagConfig, flag_configs
from conformance.rmsprop import Hyper
from conformance.streams import gradient_stream

STEPS = 24
SIZE = 301  # odd, so no vector width divides it
STREAMS = [("normal", s) for s in (1e-12, 1e-8, 1e-4, 1.0, 1e4)] + [("zero", 1.0), ("constant", 1.0)]
LR_SCHEDULE = {STEPS // 2: 3e-3}  # a scheduler changing lr mid-run


@pytest.mark.parametrize("foreach", TORCH_IMPLS, ids=lambda f: f"foreach={f}")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("config", list(flag_configs()), ids=lambda c: c.name)
def test_lockstep_agrees_with_torch(config: FlagConfig, dtype: type, foreach: bool, record_property) -> None:
    equal = total = 0
    for seed, (kind, scale) in enumerate(STREAMS):
        rng = np.random.default_rng(seed)
        params0 = [rng.standard_normal(SIZE).astype(dtype)]
        grads = gradient_stream(kind, scale, (SIZE,), dtype, STEPS, seed)
        hyper = config.hyper(lr=1e-2, alpha=0.9, eps=1e-8)
        result = run_lockstep(params0, hyper, ([g] for g in grads), foreach=foreach, lr_schedule=LR_SCHEDULE)
        assert result.passed(LOCKSTEP_BOUND), (
            kind,
            scale,
            result.worst,
            result.worst_step,
            result.nonfinite_mismatches,
            result.dtype_errors,
        )
        equal += result.bitwise_equal
        total += result.elements
    record_property("bitwise", (np.dtype(dtype).name, equal, total))


class EpsInsideRoot(lucid.optim.RMSprop):
    """The textbook formula: sqrt(v + eps) instead of sqrt(v) + eps (a wrong implementation)."""

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_for(p, group)
                state["step"] += 1
                v = state["square_avg"]
                v *= p.dtype.type(group["alpha"])
                v += p.dtype.type(1 - group["alpha"]) * p.grad * p.grad
                p.data -= p.dtype.type(group["lr"]) * p.grad / np.sqrt(v + p.dtype.type(group["eps"]))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_lockstep_bound_rejects_eps_inside_the_root(dtype: type) -> None:
    """The bound is not vacuous: the textbook variant fails it at small gradients."""
    params0 = [np.random.default_rng(0).standard_normal(SIZE).astype(dtype)]
    grads = gradient_stream("normal", 1e-6, (SIZE,), dtype, 5, 0)
    result = run_lockstep(params0, Hyper(), ([g] for g in grads), foreach=False, candidate=EpsInsideRoot)
    assert result.worst["param"] > 100 * LOCKSTEP_BOUND
