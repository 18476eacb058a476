r"""A higher-precision oracle for one RMSprop step, and ULP verdicts against it.

The oracle evaluates the step from the same inputs (parameter, gradient, state
before the step, hyperparameters as the Python floats the user gave) in a wider
type: float64 for float32 inputs (53 vs 24 significand bits), and
``np.longdouble`` for float64 inputs (64 significand bits on x86-64, where it is
the x87 extended format).  Its own error is then about 2^-29 (float32) or
2^-11 (float64) of an ULP of the dtype under test, times the step's
conditioning (the variance's error scale over ``v - grad_avg^2`` when centered), so it can say which side
of a disagreement is off.  Where ``np.longdouble`` is no wider than float64
(:data:`ORACLE_EXTRA_BITS` is 0 for float64 there) a float64 verdict carries no
information; :func:`oracle_precision_bits` reports it.

The oracle follows the exact algebra of torch's step (epsilon outside the root,
learning rate outside the momentum buffer), not torch's rounding.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from conformance.departures import FORMULA
from conformance.rmsprop import Hyper

__all__ = ["OracleStep", "Verdict", "oracle_precision_bits", "oracle_step", "ulp_error", "verdict"]


def _real(dtype: np.dtype[Any] | type) -> np.dtype[Any]:
    """Return the real dtype of ``dtype``'s parts: float32 for complex64, float64 for complex128, else itself."""
    return np.empty(0, dtype).real.dtype


def _wide(dtype: np.dtype[Any] | type) -> type:
    return np.float64 if _real(dtype) == np.float32 else np.longdouble


def oracle_precision_bits(dtype: np.dtype[Any] | type) -> int:
    """Significand bits the oracle has beyond ``dtype``'s (29 for float32; 11 or 0 for float64).

    A complex dtype counts as its parts' real dtype (the harness compares complex
    values as their real pairs).
    """
    return int(np.finfo(_wide(dtype)).nmant - np.finfo(_real(dtype)).nmant)


@dataclass(frozen=True)
class OracleStep:
    """The oracle's values after one step, in the wide type."""

    param: NDArray[Any]
    square_avg: NDArray[Any]
    grad_avg: NDArray[Any] | None
    momentum_buffer: NDArray[Any] | None
    #: Sum of the magnitudes of the terms that form the new parameter,
    #: ``|p0| + lr * (momentum * |b0| + (|grad| + wd * |p0|) / avg)``: the size at
    #: which its rounding errors are committed, so the unit for its ULPs.
    param_terms: NDArray[Any]


def oracle_step(
    hyper: Hyper,
    param0: NDArray[Any],
    grad: NDArray[Any],
    state0: dict[str, NDArray[Any]],
    departures: AbstractSet[str] = frozenset(),
    dtype: Any = None,
) -> OracleStep:
    """Evaluate one step from ``param0``, ``grad`` and the buffers in ``state0`` in the wide type.

    Missing buffers in ``state0`` (the first step) start at zero, as both
    optimizers start them.  ``departures`` names variants of torch's formula to
    compute instead (:data:`conformance.departures.FORMULA`; default none: torch's
    own algebra), for the diagnosis of a candidate that disagrees.  ``dtype`` is
    the dtype under test, which chooses the wide type (default ``param0``'s: pass
    it when ``param0`` is already an exact trajectory's wide value).
    """
    unknown = set(departures) - FORMULA
    if unknown:
        raise ValueError(f"unknown departures {sorted(unknown)}; expected some of {sorted(FORMULA)}")
    d = departures
    w = _wide(param0.dtype if dtype is None else dtype)
    zeros = np.zeros(param0.shape, w)
    p = param0.astype(w)
    g = grad.astype(w)
    wd = w(0 if {"weight_decay_ignored", "decoupled_weight_decay"} & d else hyper.weight_decay)
    with np.errstate(all="ignore"):
        g_terms = np.abs(g) + wd * np.abs(p)
        if "decoupled_weight_decay" in d:
            p = p * (w(1) - w(hyper.lr) * w(hyper.weight_decay))
        if hyper.maximize and not {"maximize_ignored", "maximize_after_weight_decay"} & d:
            g = -g
        if wd != 0:
            g = g + wd * p
        if hyper.maximize and "maximize_after_weight_decay" in d:
            g = -g
        a = w(hyper.alpha)
        a_new = a if "alpha_swapped" in d else w(1) - a  # the weight of the new term
        a_old = w(1) - a if "alpha_swapped" in d else a
        v_start = np.ones(param0.shape, w) if "square_avg_starts_at_one" in d else zeros
        v = a_old * state0.get("square_avg", v_start).astype(w) + a_new * g * g
        eps = w(0 if "eps_ignored" in d else hyper.eps)
        ga = None
        var = v
        if hyper.centered:
            ga0 = state0.get("grad_avg", zeros).astype(w)
            if "grad_avg_alpha_swapped" in d:
                ga = a_new * ga0 + a_old * g
            else:
                ga = a_old * ga0 + a_new * g
            if "centered_ignored" not in d:
                var = v - ga * ga
        avg = np.sqrt(var + eps) if "eps_inside_root" in d else np.sqrt(var) + eps
        buf = None
        update_terms = g_terms / avg
        lr = w(hyper.lr)
        if hyper.momentum > 0 and "momentum_ignored" not in d:
            b0 = state0.get("momentum_buffer", zeros).astype(w)
            if "lr_inside_momentum" in d:
                buf = w(hyper.momentum) * b0 + lr * g / avg
                p_new = p - buf
            else:
                buf = w(hyper.momentum) * b0 + g / avg
                p_new = p - lr * buf
            update_terms = update_terms + w(hyper.momentum) * np.abs(b0)
        else:
            p_new = p - lr * g / avg
        terms = np.abs(p) + lr * update_terms
    return OracleStep(param=p_new, square_avg=v, grad_avg=ga, momentum_buffer=buf, param_terms=terms)


def ulp_error(value: NDArray[Any], exact: NDArray[Any], magnitude: NDArray[Any] | None = None) -> NDArray[np.float64]:
    """``|value - exact|`` in ULPs of ``value``'s dtype at ``magnitude`` (default ``|exact|``).

    For a parameter update pass the magnitude of the terms that form it
    (:attr:`OracleStep.param_terms`): where the update cancels the parameter the
    result is small but its rounding error is of the terms' size, and an ULP
    of the result would overstate it.  Elements where either side is not finite give
    NaN (judge those by position, :func:`conformance.compare.nonfinite_mismatch`).
    """
    dtype = value.dtype
    w = _wide(dtype)
    if magnitude is None:
        magnitude = np.abs(exact)
    with np.errstate(all="ignore"):
        ulp = np.spacing(np.abs(magnitude).astype(dtype)).astype(w)
        err = np.abs(value.astype(w) - exact.astype(w)) / ulp
    finite = np.isfinite(value) & np.isfinite(exact.astype(w))
    return np.where(finite, err, np.nan).astype(np.float64)


@dataclass(frozen=True)
class Verdict:
    """Which side is closer to the exact step, in ULPs of the dtype under test."""

    lucid_max: float
    torch_max: float
    lucid_median: float
    torch_median: float
    oracle_extra_bits: int

    def __str__(self) -> str:
        if self.oracle_extra_bits == 0:
            return "no verdict: the oracle is no wider than the dtype on this platform"
        return f"candidate {self.lucid_max:.2g} ULP from exact, torch {self.torch_max:.2g} (max over elements)"


def verdict(
    hyper: Hyper,
    param0: NDArray[Any],
    grad: NDArray[Any],
    state0: dict[str, NDArray[Any]],
    candidate_param: NDArray[Any],
    torch_param: NDArray[Any],
) -> Verdict:
    """Compare both sides' parameters after one step with the oracle's."""
    step = oracle_step(hyper, param0, grad, state0)
    exact = step.param
    with np.errstate(all="ignore"):
        magnitude = np.maximum(step.param_terms, np.abs(exact))
    ours, theirs = ulp_error(candidate_param, exact, magnitude), ulp_error(torch_param, exact, magnitude)

    def stat(fn: Any, x: NDArray[np.float64]) -> float:
        x = x[np.isfinite(x)]
        return float(fn(x)) if x.size else 0.0

    return Verdict(
        lucid_max=stat(np.max, ours),
        torch_max=stat(np.max, theirs),
        lucid_median=stat(np.median, ours),
        torch_median=stat(np.median, theirs),
        oracle_extra_bits=oracle_precision_bits(param0.dtype),
    )
