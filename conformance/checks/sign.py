"""The ``sign`` family: the sign test against the float64 oracle.

It catches a systematic one-ULP bias that no max-ULP bound can see: per side,
count the parameter element-steps above the exact step minus those below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from conformance.checks.outcome import CheckOutcome, pair_options
from conformance.compare import Hyper
from conformance.oracle import oracle_precision_bits, oracle_step
from conformance.runners import LockstepPair
from conformance.scenario import Scenario
from conformance.streams import materialize

__all__ = ["SIGN_MIN_SAMPLES", "SIGN_WARMUP", "SIGN_Z", "SignStatistic", "run", "sign_statistic"]

#: Sign test threshold in standard deviations.  Under "the candidate is no more
#: biased than torch", each eligible element-step contributes an independent
#: +-1 with mean 0 (honest round-to-nearest), so the statistic has standard
#: deviation 1/sqrt(n); 6 sigma gives a false alarm probability of 2e-9 per test.
SIGN_Z = 6.0
#: Below this many eligible element-steps the test has no power against a
#: one-sided bias (6/sqrt(n) must stay well below 1) and is not judged.
SIGN_MIN_SAMPLES = 400
#: Steps left out of the sign test: in the first steps every element's update
#: has the same magnitude (lr/sqrt(1-alpha) on step 1, whatever the gradient),
#: so roundings are correlated across elements, not independent.
SIGN_WARMUP = 2


@dataclass(frozen=True)
class SignStatistic:
    """Signs of (side - exact) over eligible parameter element-steps.

    ``lucid`` and ``torch`` are ``(#above - #below) / n``: about 0 for honest
    rounding, about +1 for a side that is one ULP high on every step.
    """

    lucid: float
    torch: float
    n: int
    oracle_extra_bits: int

    @property
    def threshold(self) -> float:
        """``SIGN_Z / sqrt(n)``: the noise allowance."""
        return SIGN_Z / math.sqrt(self.n) if self.n else math.inf

    @property
    def judged(self) -> bool:
        """Whether there are enough samples and an oracle wider than the dtype."""
        return self.n >= SIGN_MIN_SAMPLES and self.oracle_extra_bits > 0

    @property
    def passed(self) -> bool:
        """The candidate is not more biased than torch beyond noise: ``|S_L| <= |S_T| + z/sqrt(n)``."""
        return not self.judged or abs(self.lucid) <= abs(self.torch) + self.threshold


def sign_statistic(
    params0: Sequence[NDArray[Any]],
    grads: Sequence[Sequence[NDArray[Any] | None]],
    optimizer_class: type | None = None,
    *,
    foreach: bool = False,
    warmup: int = SIGN_WARMUP,
    **pair_options: Any,
) -> SignStatistic:
    """Run in lockstep and count, per side, parameter elements above minus below the oracle.

    Eligible element-steps: after ``warmup`` steps, every value finite, and the
    exact update non-zero (an element the step does not move is exact on both
    sides and carries no information).
    """
    pair = LockstepPair(list(params0), pair_options.pop("hyper", Hyper()), foreach, optimizer_class, **pair_options)
    above_l = above_t = n = 0
    extra = oracle_precision_bits(params0[0].dtype) if params0 else 0
    for step, step_grads in enumerate(grads):
        pair.apply_schedule(step)
        pair.sync_lucid_to_torch()
        for rec in pair.step(list(step_grads)):
            if step < warmup or rec.grad is None or rec.lucid_param.shape != rec.torch_param.shape:
                continue
            exact = oracle_step(rec.hyper or pair.hyper, rec.param0, rec.grad, rec.torch_state0).param
            w = exact.dtype
            ours, theirs = rec.lucid_param.astype(w), rec.torch_param.astype(w)
            with np.errstate(invalid="ignore"):
                keep = np.isfinite(exact) & np.isfinite(ours) & np.isfinite(theirs) & (exact != rec.param0.astype(w))
            above_l += int(np.sum(np.sign(ours[keep] - exact[keep])))
            above_t += int(np.sum(np.sign(theirs[keep] - exact[keep])))
            n += int(np.count_nonzero(keep))
    return SignStatistic(above_l / n if n else 0.0, above_t / n if n else 0.0, n, extra)


def run(scenario: Scenario, optimizer_class: type | None) -> list[CheckOutcome]:
    """Run the sign test on ``scenario``: the sign check."""
    params0, grads = materialize(scenario)
    stat = sign_statistic(
        params0,
        grads,
        optimizer_class,
        foreach=scenario.matrix_case.impl.foreach,
        hyper=scenario.hypers[0],
        **pair_options(scenario),
    )
    if not stat.judged:
        why = "no oracle wider than the dtype" if not stat.oracle_extra_bits else f"only {stat.n} element-steps"
        return [CheckOutcome("sign", True, f"not judged: {why}")]
    return [
        CheckOutcome(
            "sign",
            stat.passed,
            f"(above - below exact)/n: candidate {stat.lucid:+.4f}, torch {stat.torch:+.4f} over n = {stat.n}; "
            f"allowed |candidate| <= |torch| + {stat.threshold:.4f}",
            f"candidate biased {'high' if stat.lucid > 0 else 'low'} against the float64 oracle"
            if not stat.passed
            else "",
        )
    ]
