r"""Judging agreement of one RMSprop step: forward-error scales and ULP-normalised errors.

Lockstep bound.  Starting from identical state, each side computes
every quantity :math:`x` of the step with a first-order forward error
:math:`|\hat x - x| \le k\,u\,S_x`, where :math:`u` is the unit roundoff of the
dtype (half the machine epsilon), :math:`k` counts the roundings on the path
that produced :math:`x` and :math:`S_x` is the sum of the magnitudes of the
terms that form it.  With :math:`G = |g| + \lambda|\theta|` (the terms of the
decayed gradient) the scales are

* square_avg:      :math:`S_v = \alpha|v_0| + (1-\alpha) G^2`
* grad_avg:        :math:`S_{\bar g} = |\bar g_0| + (1-\alpha) G` (``lerp`` is
  :math:`\bar g_0 + w (g - \bar g_0)`, :math:`w = 1 - \alpha`: its first term
  enters whole, whichever way it is rounded; at :math:`\alpha = 0` an honest
  ``ga + 1 * (g - ga)`` is :math:`u |\bar g_0|` from :math:`g`)
* update q = g/a:  :math:`S_q = (G / a)(1 + \kappa)`, with
  :math:`\kappa = (S_v + 2|\bar g| S_{\bar g}) / (v - \bar g^2)` in centered
  mode (the variance's error scale over the variance: its cancellation
  amplifies the relative error of its inputs by :math:`\kappa`; the second
  term counts where ``lerp`` cancels, :math:`S_{\bar g} \gg |\bar g|` at
  alpha near 0) and 1 otherwise; with weight decay :math:`G` there is
  :math:`G + \eta/u` (:math:`\eta` the smallest subnormal), since the decayed
  gradient is itself rounded and a subnormal one errs by :math:`\eta`, not
  :math:`u G`
* momentum buffer: :math:`S_b = \mu|b_0| + S_q`
* parameter:       :math:`S_\theta = |\theta_0| + \gamma S_b` (or :math:`\gamma S_q` without momentum)

The longest path, the parameter with momentum, has k = 8 roundings: the decay
``fma`` (1), the mean square (2, halved by the root: 1), the square root
(torch's MKL root is not correctly rounded, so 1 ULP, i.e. 2 u), ``+ eps`` (1),
the scaled quotient (2) and the final ``fma`` (1).  Two independent honest
sides then differ by at most :data:`LOCKSTEP_BOUND` = 2 k = 16 units of
:math:`u S_x`; a wrong formula (epsilon inside the root, a missing term) lands
orders of magnitude above it wherever its difference is visible at all.  An
absolute allowance of one smallest subnormal per rounding covers underflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from conformance.rmsprop import Hyper

__all__ = [
    "LOCKSTEP_BOUND",
    "StepScales",
    "nonfinite_mismatch",
    "nonfinite_mismatch_mask",
    "normalised_error",
    "pinned_nonfinite",
    "step_scales",
    "unit_roundoff",
]

#: Maximum honest lockstep difference, in units of ``u * scale`` (derivation above).
LOCKSTEP_BOUND = 16.0


def unit_roundoff(dtype: np.dtype[Any] | type) -> float:
    """Half the machine epsilon: the relative error bound of one rounding."""
    return float(np.finfo(dtype).eps) / 2


@dataclass(frozen=True)
class StepScales:
    """Forward-error scales :math:`S_x` of one step, per element, in float64."""

    square_avg: NDArray[np.float64]
    grad_avg: NDArray[np.float64] | None
    momentum_buffer: NDArray[np.float64] | None
    param: NDArray[np.float64]
    #: ``(1 + kappa) / avg``: how strongly the update ``q = g / avg`` responds to a
    #: change in the decayed gradient (bounds error feedback through weight decay).
    sensitivity: NDArray[np.float64] | None = None
    #: Centered mode: the elements whose variance ``v - grad_avg^2`` is within the
    #: honest rounding of ``v`` and ``grad_avg`` of zero (:func:`step_scales`), or whose
    #: mean square overflowed in the step; there its sign (or its infinity) is rounding
    #: noise, so NaN (a negative root, inf - inf) on one side and a number on the other
    #: are both honest.  Not centered, with ``eps = 0``: the elements
    #: whose root of the mean square is below the dtype's smallest normal number (a
    #: square that underflowed), where the reference divides by zero.  In any mode: the
    #: elements whose update or momentum buffer is beyond the dtype's range (an
    #: intermediate the dtype overflows and a wider evaluation does not).
    cancelled: NDArray[np.bool_] | None = None
    #: Centered mode with ``alpha <= 1/2``: the elements whose decayed gradient is
    #: infinite, or whose grad_avg was infinite before the step.  torch's ``lerp_``
    #: computes ``g - (g - ga) * alpha`` there (its branch
    #: for weights from 1/2 up), which is ``inf - inf = NaN``, where ``ga + w (g - ga)``
    #: is the infinity: grad_avg's NaN-or-Inf there is the formula's, not the step's
    #: (the parameter is NaN either way, through ``v - ga^2``).
    lerp_nonfinite: NDArray[np.bool_] | None = None


def step_scales(
    hyper: Hyper,
    param0: NDArray[Any],
    grad: NDArray[Any],
    state0: dict[str, NDArray[Any]],
    state1: dict[str, NDArray[Any]],
) -> StepScales:
    """Return the scales of one step from the state before and after it.

    ``state0`` and ``state1`` hold the reference side's buffers before and
    after the step (``state0`` may be empty on the first step).
    """
    f = np.float64
    with np.errstate(all="ignore"):
        p0 = np.abs(param0.astype(f))
        # Without weight decay the parameter takes no part (0 * an infinite parameter would be NaN).
        G = np.abs(grad.astype(f)) + (hyper.weight_decay * p0 if hyper.weight_decay != 0 else 0.0)
        v0 = np.abs(state0.get("square_avg", np.zeros_like(param0)).astype(f))
        v1 = state1["square_avg"].astype(f)
        s_v = hyper.alpha * v0 + (1 - hyper.alpha) * G * G
        u = unit_roundoff(param0.dtype)
        # Below the normal range a rounding errs by up to one subnormal spacing, not u times the
        # value: in units of u, the mean square's (and the variance's) error scale gains eta / u.
        underflow = float(np.finfo(param0.dtype).smallest_subnormal) / u
        # So does the decayed gradient g + wd * theta, the one rounded input of the update:
        # where it is subnormal its error is eta, however small G is, and the update divides
        # that by avg (a tiny parameter, eps = 0: the step's error is eta / avg, thousands of
        # units of u |theta|).  Without weight decay, or with a zero parameter, the gradient
        # enters exact.
        s_g = np.where(p0 == 0, G, G + underflow) if hyper.weight_decay != 0 else G  # (s_q is 0 where G is)
        s_ga = cancelled = lerp_nonfinite = None
        if hyper.centered:
            ga0 = np.abs(state0.get("grad_avg", np.zeros_like(param0)).astype(f))
            ga1 = state1["grad_avg"].astype(f)
            s_ga = ga0 + (1 - hyper.alpha) * G  # lerp_: ga + w (g - ga), ga's magnitude at weight 1
            var = v1 - ga1 * ga1
            # Each side's v and grad_avg are within LOCKSTEP_BOUND / 2 roundings of their scales,
            # so its variance within that of u (S_v + 2 |grad_avg| S_ga): no conditioning is left
            # below twice that (alpha = 0 gives v = g^2 and grad_avg = g, a variance of exactly 0).
            s_var = s_v + 2 * np.abs(ga1) * s_ga + underflow
            cancelled = var <= LOCKSTEP_BOUND * u * s_var
            # The mean square overflowed in this step (finite inputs, an infinite result): v - grad_avg^2
            # is then inf with a fused multiply-add (torch's), inf - inf = NaN where grad_avg^2 is rounded
            # first and overflows too.  In exact arithmetic the variance of finite inputs is finite, so
            # neither is the formula's (v and grad_avg themselves stay pinned: the lockstep judges
            # this mask on the parameter and the momentum buffer only).
            cancelled |= np.isinf(v1) & np.isfinite(v0) & np.isfinite(G) & np.isfinite(ga0)
            # The conditioning: the variance's error scale over the variance.  Not |v| / var:
            # where lerp cancels (alpha near 0, grad_avg far smaller than before the step)
            # S_ga is far above |grad_avg|, and so is the error of grad_avg^2.
            kappa = np.where(cancelled, np.inf, s_var / np.where(cancelled, 1.0, var))
            root = np.sqrt(np.maximum(var, 0))
            # (the gradient's own infinity too: with weight decay 0 times a NaN parameter G is NaN)
            # and an infinite grad_avg before the step: torch's g - (g - ga) * alpha keeps it, ga + w (g - ga)
            # is inf - inf = NaN)
            lerp_nonfinite = np.isinf(G) | np.isinf(grad.astype(f)) | np.isinf(ga0) if hyper.alpha <= 0.5 else None
        else:
            # The mean square's error scale over itself: 1 in the normal range, larger where a
            # subnormal v carries few significant bits (g^2 near underflow; a zero v has none to
            # lose: the root's error is then sqrt(eta), far below eps or excused with eps = 0).
            kappa = np.where(v1 > 0, (s_v + underflow) / np.where(v1 > 0, v1, 1.0), 1.0)
            kappa = np.maximum(kappa, 1.0)
            root = np.sqrt(np.abs(v1))
            # With eps = 0 and a mean square that underflowed to zero in the dtype (a subnormal
            # gradient squared), the reference divides by zero: NaN, Inf or a finite step then
            # depends on the precision of the intermediate square, not on the formula.
            if hyper.eps == 0:
                cancelled = root < np.finfo(param0.dtype).tiny
        sensitivity = (1 + kappa) / (root + hyper.eps)
        s_q = np.where(G == 0, 0.0, s_g * sensitivity)
        s_b = None
        if hyper.momentum > 0:
            b0 = np.abs(state0.get("momentum_buffer", np.zeros_like(param0)).astype(f))
            s_b = hyper.momentum * b0 + s_q
            s_p = p0 + hyper.lr * s_b
        else:
            s_p = p0 + hyper.lr * s_q
        # An intermediate beyond the dtype's range (the update G / avg, the momentum buffer): the
        # forward-error bound assumes none.  The dtype overflows it to an infinity that a wider
        # evaluation keeps finite, and the parameter made from it (lr times it, added to theta) can
        # be finite in exact arithmetic: there the parameter's infinity, or its finite value, is the
        # precision's, not the formula's (torch's float32 inf against a float64 variant's 2.1e38).
        beyond = (s_b if s_b is not None else s_q) >= float(np.finfo(param0.dtype).max)
        if beyond.any():
            s_p = np.where(beyond, np.inf, s_p)
            cancelled = beyond if cancelled is None else cancelled | beyond
    return StepScales(
        square_avg=s_v,
        grad_avg=s_ga,
        momentum_buffer=s_b,
        param=s_p,
        sensitivity=sensitivity,
        cancelled=cancelled,
        lerp_nonfinite=lerp_nonfinite,
    )


def normalised_error(
    candidate: NDArray[Any], reference: NDArray[Any], scale: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``|candidate - reference| / (u * scale + eta)`` per finite element.

    ``u`` is the unit roundoff and ``eta`` the smallest subnormal of the
    reference's dtype.  Elements where either side is not finite give 0 here;
    :func:`nonfinite_mismatch` judges those.
    """
    dtype = reference.dtype
    u = unit_roundoff(dtype)
    eta = float(np.finfo(dtype).smallest_subnormal)
    a = candidate.astype(np.float64)
    b = reference.astype(np.float64)
    with np.errstate(all="ignore"):
        err = np.abs(a - b) / (u * scale + eta)
    finite = np.isfinite(a) & np.isfinite(b)
    # An infinite scale (no conditioning left) admits any finite difference.
    return np.where(finite & np.isfinite(scale), err, 0.0)


def nonfinite_mismatch_mask(candidate: NDArray[Any], reference: NDArray[Any]) -> NDArray[np.bool_]:
    """Per element, whether the sides differ in being NaN, +Inf, -Inf or finite."""
    a, b = np.asarray(candidate), np.asarray(reference)
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    same = finite_a & finite_b
    if same.all():  # the common case, without the work below
        return ~same
    with np.errstate(invalid="ignore"):
        # both finite, both NaN, or the same infinity (an infinity equals only itself)
        same |= (np.isnan(a) & np.isnan(b)) | (~finite_a & (a == b))
    return ~same


def nonfinite_mismatch(candidate: NDArray[Any], reference: NDArray[Any]) -> int:
    """Count elements where NaN / +Inf / -Inf positions differ between the sides."""
    return int(np.count_nonzero(nonfinite_mismatch_mask(candidate, reference)))


def pinned_nonfinite(param0: NDArray[Any], pairs: bool, hyper: Hyper) -> NDArray[np.bool_] | bool:
    """Where torch pins the NaN/Inf pattern of a step: everywhere, except in one complex corner.

    torch's two CPU paths decay a complex parameter differently: ``foreach=False``
    in complex arithmetic (``g + p * complex(wd, 0)``, whose product turns a NaN or
    infinite part into NaN in both parts), ``foreach=True`` part by part.  They
    agree wherever the parameter's parts are finite before the step and differ
    only in the NaN of the other part where one is not, so there either is torch's.

    ``param0`` is the parameter before the step, complex ones as their real pairs
    (``pairs``, last axis of 2); the result broadcasts against it.
    """
    if not (pairs and hyper.weight_decay != 0):
        return True
    return np.isfinite(param0).all(axis=-1, keepdims=True)
