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

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

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


def oracle_step(hyper: Hyper, param0: NDArray[Any], grad: NDArray[Any], state0: dict[str, NDArray[Any]]) -> OracleStep:
    """Evaluate one step from ``param0``, ``grad`` and the buffers in ``state0`` in the wide type.

    Missing buffers in ``state0`` (the first step) start at zero, as both
    optimizers start them.
    """
    w = _wide(param0.dtype)
    zeros = np.zeros(param0.shape, w)
    p = param0.astype(w)
    g = grad.astype(w)
    with np.errstate(all="ignore"):
        g_terms = np.abs(g) + w(hyper.weight_decay) * np.abs(p)
        if hyper.maximize:
            g = -g
        if hyper.weight_decay != 0:
            g = g + w(hyper.weight_decay) * p
        a = w(hyper.alpha)
        v = a * state0.get("square_avg", zeros).astype(w) + (w(1) - a) * g * g
        ga = None
        if hyper.centered:
            ga = a * state0.get("grad_avg", zeros).astype(w) + (w(1) - a) * g
            avg = np.sqrt(v - ga * ga) + w(hyper.eps)
        else:
            avg = np.sqrt(v) + w(hyper.eps)
        buf = None
        update_terms = g_terms / avg
        if hyper.momentum > 0:
            b0 = state0.get("momentum_buffer", zeros).astype(w)
            buf = w(hyper.momentum) * b0 + g / avg
            update_terms = update_terms + w(hyper.momentum) * np.abs(b0)
            p_new = p - w(hyper.lr) * buf
        else:
            p_new = p - w(hyper.lr) * g / avg
        terms = np.abs(p) + w(hyper.lr) * update_terms
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
