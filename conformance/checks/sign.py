r"""The ``sign`` family: sign tests against the wider-precision oracle, in every direction.

A max-error bound cannot see a systematic error of a fraction of an ULP, or
one ULP, per step: every single step is within rounding.  Over many element-steps,
though, honest round-to-nearest lands on either side of the exact value equally
often, whichever way the sides are counted.  Run in lockstep, per side
(candidate, torch) and per quantity (the parameter and each buffer:
``square_avg``, ``grad_avg``, ``momentum_buffer``), this module counts

* ``signed``: ``sign(x - exact)``: up (+) or down (-);
* ``magnitude``: ``sign(x - exact) * sign(exact)``: away from (+) or toward (-) zero.
  Truncation is up for negative values and down for positive ones, so it
  cancels in ``signed`` and shows only here;
* ``step`` (the parameter only): ``sign(x - exact) * sign(exact - p_0)``: a step
  too long (+) or too short (-), as a drifting learning rate makes it.

Each statistic is ``S = sum(signs) / n`` over the ``n`` eligible element-steps
(after :data:`SIGN_WARMUP` steps; every value finite; for the parameter, an exact
update of at least :data:`SIGN_MIN_STEP_ULPS` ULPs, and for ``magnitude`` and ``step``
non-zero in its direction).

Null hypothesis and false-alarm rate.  H0: the candidate's rounding errors in
this direction have no preferred sign, i.e. the signs are independent
variables in [-1, 1] with mean 0 (independent inputs per element, and lockstep
re-feeds each step torch's values, so the rounding of one step does not carry
into the next).  Hoeffding's inequality bounds ``P(|S| >= z / sqrt(n)) <= 2
exp(-z^2 / 2)`` for any such variables, without a normal approximation: with
:data:`SIGN_Z` = 6, ``2 e^-18 = 3.0e-8`` per statistic.  A check is judged over
several statistics (``sign``: 4 quantities; ``magnitude``: 4 directions), so by
the union bound its false-alarm rate is at most 4 x 3.0e-8 = 1.2e-7 and the
family's (8 statistics) 2.4e-7 per scenario: over the 128 CPU cases' sign
probes, 3.1e-5 for a whole ``check``.

torch's own statistic is an allowance, not the reference: the candidate fails
a statistic only when ``|S_candidate| > |S_torch| + z / sqrt(n)``.  torch is
itself biased against the exact algebra in places (it rounds ``alpha``, ``1 -
alpha`` and ``lr`` to the dtype first: float32 ``alpha = 0.9`` makes its
``square_avg`` lean low by about a third of an ULP), and a candidate that
reproduces torch's rounding shares that bias; a candidate more exact than torch
has ``|S| < |S_torch|`` and passes.  (The price: a bias exactly opposite to
torch's, and no larger than twice it, is not seen.)

Why the buffers too: a bias inside one buffer reaches the parameter scaled by
the learning rate, far below the parameter's ULP (measured on the sign probe,
c1-m1-wd0-max0 float32: a momentum buffer rounded toward zero leaves the
parameter's ``magnitude`` statistic at torch's, +0.0015 against +0.0017 with
n = 24576, and moves its own to -0.89), so only the buffer's statistic sees it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from conformance.candidate import Adapter
from conformance.checks.outcome import CheckOutcome, pair_options
from conformance.oracle import oracle_precision_bits, oracle_step
from conformance.rmsprop import BUFFERS, Hyper
from conformance.runners import LockstepPair
from conformance.scenario import Scenario
from conformance.streams import materialize

__all__ = [
    "DIRECTIONS",
    "SIGN_MIN_SAMPLES",
    "SIGN_MIN_STEP_ULPS",
    "SIGN_WARMUP",
    "SIGN_Z",
    "DirectionalSign",
    "SignStatistic",
    "constants_exact",
    "judge",
    "outcome",
    "run",
    "sign_counts",
    "sign_statistic",
]

#: Sign test threshold in standard deviations: a false-alarm probability of at
#: most ``2 exp(-SIGN_Z^2 / 2)`` = 3.0e-8 per statistic (Hoeffding; module docstring).
SIGN_Z = 6.0
#: Below this many eligible element-steps a statistic has no power against a
#: one-sided bias (6/sqrt(n) must stay well below 1) and is not judged.
SIGN_MIN_SAMPLES = 400
#: Steps left out of the sign test: in the first steps every element's update
#: has the same magnitude (lr/sqrt(1-alpha) on step 1, whatever the gradient),
#: so roundings are correlated across elements, not independent.
SIGN_WARMUP = 2

#: The parameter's element-steps counted: those whose exact update is at least this many ULPs of
#: the parameter before the step.  ``p_0`` is on the dtype's grid, so ``p_0 + d`` with ``|d|``
#: below half an ULP rounds back to ``p_0`` (the update lost: always "a step too short", and
#: "away from zero" when the step shrinks ``p``), and within a few ULPs the grid, not the
#: rounding, decides the sign.  Measured on the sign probe without this: torch's ``step``
#: statistic -0.11, ``WiderIntermediates``' -0.17 (no momentum, float32); with it both within
#: noise of 0 (docs/conformance.md).
SIGN_MIN_STEP_ULPS = 8

#: Each direction a sign is counted in, and what ``+`` means there.
DIRECTIONS: dict[str, str] = {
    "signed": "high (up)",
    "magnitude": "away from zero",
    "step": "a step too long",
}
#: The check each direction is judged by.
_CHECK_OF = {"signed": "sign", "magnitude": "magnitude", "step": "magnitude"}
#: Buffers whose value can be negative (``square_avg`` cannot: its magnitude is its sign).
_SIGNED_BUFFERS = ("grad_avg", "momentum_buffer")


@dataclass(frozen=True)
class DirectionalSign:
    """One sign statistic: ``(#plus - #minus) / n`` for the candidate and for torch.

    About 0 for honest rounding, about +1 (or -1) for a side that is one ULP
    off in that direction on every element-step.
    """

    quantity: str
    direction: str
    candidate: float
    torch: float
    n: int

    @property
    def threshold(self) -> float:
        """``SIGN_Z / sqrt(n)``: the noise allowance."""
        return SIGN_Z / math.sqrt(self.n) if self.n else math.inf

    @property
    def judged(self) -> bool:
        """Whether there are at least :data:`SIGN_MIN_SAMPLES` samples."""
        return self.n >= SIGN_MIN_SAMPLES

    @property
    def passed(self) -> bool:
        """Not more biased than torch beyond noise: ``|S_candidate| <= |S_torch| + z/sqrt(n)``."""
        return not self.judged or abs(self.candidate) <= abs(self.torch) + self.threshold

    def describe(self) -> str:
        """E.g. ``param magnitude -0.9812 (torch +0.0031, n 24576)``."""
        return f"{self.quantity} {self.direction} {self.candidate:+.4f} (torch {self.torch:+.4f}, n {self.n})"

    def verdict(self) -> str:
        """Say what a failure means, e.g. ``param leans toward zero``."""
        plus = DIRECTIONS[self.direction]
        opposite = {"high (up)": "low (down)", "away from zero": "toward zero", "a step too long": "a step too short"}
        lean = plus if self.candidate > 0 else opposite[plus]
        return f"{self.quantity} leans {lean}"


def sign_counts(
    value: NDArray[Any], exact: NDArray[Any], reference: NDArray[Any] | None = None
) -> dict[str, tuple[int, int]]:
    """Per direction, ``(sum of signs, n)`` of ``value`` against ``exact`` over the eligible elements.

    Parameters
    ----------
    value : ndarray
        One side's values (any float dtype).
    exact : ndarray
        The exact values in a wider type.
    reference : ndarray, optional
        The value before the step (the parameter's ``p_0``): elements the exact
        step moves by less than :data:`SIGN_MIN_STEP_ULPS` ULPs of it are left
        out, and the ``step`` direction is counted.
        Without it, every finite element counts and ``step`` is absent.
    """
    w = exact.dtype
    ours = value.astype(w)
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(exact) & np.isfinite(ours)
        if reference is not None:
            spacing = np.spacing(np.abs(reference)).astype(w)
            keep &= np.abs(exact - reference.astype(w)) >= SIGN_MIN_STEP_ULPS * spacing
        diff = np.sign(ours[keep] - exact[keep])
        out = {"signed": (int(np.sum(diff)), int(diff.size))}
        toward = np.sign(exact[keep])
        out["magnitude"] = (int(np.sum(diff * toward)), int(np.count_nonzero(toward)))
        if reference is not None:
            moved = np.sign(exact[keep] - reference.astype(w)[keep])
            out["step"] = (int(np.sum(diff * moved)), int(np.count_nonzero(moved)))
    return out


@dataclass(frozen=True)
class SignStatistic:
    """Every sign statistic of one lockstep run (:func:`sign_statistic`)."""

    stats: tuple[DirectionalSign, ...]
    oracle_extra_bits: int

    def get(self, quantity: str, direction: str) -> DirectionalSign:
        """Return the statistic of ``quantity`` in ``direction``; ``KeyError`` if it was not counted."""
        for stat in self.stats:
            if (stat.quantity, stat.direction) == (quantity, direction):
                return stat
        raise KeyError((quantity, direction))

    @property
    def lucid(self) -> float:
        """The candidate's parameter ``signed`` statistic (the classic sign test)."""
        return self.get("param", "signed").candidate

    @property
    def torch(self) -> float:
        """The parameter ``signed`` statistic of torch."""
        return self.get("param", "signed").torch

    @property
    def n(self) -> int:
        """Eligible parameter element-steps."""
        return self.get("param", "signed").n

    @property
    def judged(self) -> bool:
        """Whether the oracle is wider than the dtype and the parameter has enough samples."""
        return self.oracle_extra_bits > 0 and self.get("param", "signed").judged

    @property
    def passed(self) -> bool:
        """Whether every judged statistic passed."""
        return not self.judged or all(s.passed for s in self.stats)


def constants_exact(scenario: Scenario) -> bool:
    """Whether every hyperparameter the scenario's steps use is exact in its dtype (and ``1 - alpha`` too).

    Then rounding them to the dtype, as torch does, is exact, and no honest
    implementation carries a systematic error from its constants (module
    docstring); otherwise only the parameter's ``signed`` statistic is judged.
    """
    real = np.empty(0, scenario.dtype).real.dtype.type
    factors = [1.0] if scenario.lr_change is None else [1.0, scenario.lr_change[1]]
    values = [
        value
        for h in scenario.hypers
        for value in (h.alpha, 1 - h.alpha, h.eps, h.weight_decay, h.momentum, *(h.lr * f for f in factors))
    ]
    return all(float(real(v)) == v for v in values)


def judge(stats: Sequence[DirectionalSign], exact_constants: bool) -> list[tuple[str, list[DirectionalSign]]]:
    """Group the judged statistics by check (``sign``, ``magnitude``), each check with its statistics.

    Without :func:`constants_exact` only the parameter's ``signed`` statistic is
    judged: an inexact constant rounded to the dtype biases the buffers, and the
    parameter's other directions, by up to a few tenths (measured with alpha =
    momentum = 0.9: torch's ``square_avg`` ``signed`` -0.39, its momentum
    buffer's ``magnitude`` -0.34, ``Unfused``'s -0.43), as much as the biases
    sought; its ``signed`` statistic stays near 0 because the streams are
    symmetric in sign.
    """
    out = []
    for check in ("sign", "magnitude"):
        mine = [
            s
            for s in stats
            if _CHECK_OF[s.direction] == check
            and s.judged
            and (exact_constants or (s.quantity, s.direction) == ("param", "signed"))
        ]
        out.append((check, mine))
    return out


def outcome(check: str, stats: Sequence[DirectionalSign], what: str) -> CheckOutcome:
    """Return the outcome of ``check`` over ``stats`` (``what``: the values the signs are taken of)."""
    if not stats:
        return CheckOutcome(check, True, "not judged: no statistic with enough samples and exact constants")
    failed = [s for s in stats if not s.passed]
    allowance = min(s.threshold for s in stats)
    return CheckOutcome(
        check,
        not failed,
        f"(plus - minus)/n of {what}: {'; '.join(s.describe() for s in stats)}; "
        f"allowed |candidate| <= |torch| + 6/sqrt(n) (>= {allowance:.4f})",
        "; ".join(s.verdict() for s in failed),
    )


def sign_statistic(
    params0: Sequence[NDArray[Any]],
    grads: Sequence[Sequence[NDArray[Any] | None]],
    candidate: Adapter | type | str | None = None,
    *,
    foreach: bool = False,
    warmup: int = SIGN_WARMUP,
    **pair_options: Any,
) -> SignStatistic:
    """Run in lockstep and count, per side, quantity and direction, the signs against the oracle.

    Eligible element-steps: after ``warmup`` steps, every value finite, and for
    the parameter the exact update non-zero (an element the step does not move
    is exact on both sides and carries no information).  A quantity the case
    does not have (``grad_avg`` unless centered, ``momentum_buffer`` without
    momentum) has ``n = 0``.
    """
    pair = LockstepPair(list(params0), pair_options.pop("hyper", Hyper()), foreach, candidate, **pair_options)
    quantities = ("param", *BUFFERS)
    sums: dict[tuple[str, str], list[int]] = {}
    extra = oracle_precision_bits(params0[0].dtype) if params0 else 0
    for step, step_grads in enumerate(grads):
        pair.apply_schedule(step)
        pair.sync_candidate_to_torch()
        for rec in pair.step(list(step_grads)):
            if step < warmup or rec.grad is None or rec.candidate_param.shape != rec.torch_param.shape:
                continue
            exact = oracle_step(rec.hyper or pair.hyper, rec.param0, rec.grad, rec.torch_state0)
            for quantity in quantities:
                wide = exact.param if quantity == "param" else getattr(exact, quantity)
                if wide is None:
                    continue
                reference = rec.param0 if quantity == "param" else None
                sides = (
                    (rec.candidate_param, rec.torch_param)
                    if quantity == "param"
                    else (rec.candidate_state.get(quantity), rec.torch_state.get(quantity))
                )
                if any(side is None or side.shape != wide.shape for side in sides):
                    continue
                ours, theirs = (sign_counts(side, wide, reference) for side in sides)
                for direction in ours:
                    if direction == "magnitude" and quantity == "square_avg":
                        continue  # never negative: its magnitude statistic is its signed one
                    entry = sums.setdefault((quantity, direction), [0, 0, 0])
                    entry[0] += ours[direction][0]
                    entry[1] += theirs[direction][0]
                    entry[2] += ours[direction][1]
    stats = [DirectionalSign(q, d, c / n if n else 0.0, t / n if n else 0.0, n) for (q, d), (c, t, n) in sums.items()]
    if ("param", "signed") not in sums:
        stats.append(DirectionalSign("param", "signed", 0.0, 0.0, 0))
    return SignStatistic(tuple(stats), extra)


def run(scenario: Scenario, candidate: Adapter) -> list[CheckOutcome]:
    """Run the sign tests on ``scenario``: the ``sign`` (up/down) and ``magnitude`` (toward/away from zero) checks."""
    params0, grads = materialize(scenario)
    stat = sign_statistic(
        params0,
        grads,
        candidate,
        foreach=scenario.matrix_case.impl.foreach,
        hyper=scenario.hypers[0],
        **pair_options(scenario),
    )
    if not stat.judged:
        why = "no oracle wider than the dtype" if not stat.oracle_extra_bits else f"only {stat.n} element-steps"
        return [CheckOutcome(check, True, f"not judged: {why}") for check in ("sign", "magnitude")]
    what = "each side against the exact step"
    return [outcome(check, mine, what) for check, mine in judge(stat.stats, constants_exact(scenario))]
