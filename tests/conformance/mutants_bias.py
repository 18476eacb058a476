"""Realistic systematic-error mutants: each step within rounding, every step leaning one way.

Each class is a candidate with RMSprop's constructor (bases from
``mutants.py``), runnable by import path::

    python -m conformance check --optimizer tests.conformance.mutants_bias:TruncatedParam

Every single step of these is within a few roundings of the exact step, so no
max-error bound sees them; what gives them away is that their rounding errors
have a preferred direction: up or down, toward or away from zero, a step too
long, in the parameter or in one buffer.  ``test_mutants_bias.py`` asserts that
the statistic meant for each one catches it, and that the honest variants
of ``mutants.py`` pass.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from mutants import _HYPER, _Honest

from conformance.oracle import oracle_step
from conformance.rmsprop import BUFFERS, Hyper

#: The directions a nudge can push a value in.
_DIRECTIONS = ("toward_zero", "away", "up")


def _beyond(value: np.ndarray, exact: np.ndarray, direction: str) -> np.ndarray:
    """``value`` moved one ULP in ``direction`` wherever it lies on the other side of ``exact``.

    Applied to an honest (nearest-rounded) result this is a rounding in that
    direction: the result ends on ``direction``'s side of the exact value,
    within an ULP of it.  Non-finite elements are left alone.
    """
    dtype = value.dtype
    wide = value.astype(exact.dtype)
    with np.errstate(invalid="ignore"):
        if direction == "toward_zero":
            fix, target = np.abs(wide) > np.abs(exact), np.zeros((), dtype)
        elif direction == "away":
            fix, target = np.abs(wide) < np.abs(exact), np.copysign(np.asarray(np.inf, dtype), exact.astype(dtype))
        else:
            fix, target = wide < exact, np.asarray(np.inf, dtype)
    fix &= np.isfinite(wide) & np.isfinite(exact)
    return np.where(fix, np.nextafter(value, target), value)


class _Nudged(_Honest):
    """Lucid's step, then chosen results rounded in one direction (against the exact step).

    ``nudges`` maps a quantity (``param`` or a buffer name) to a direction of
    :data:`_DIRECTIONS`; ``dtypes`` lists the dtypes it applies to (complex
    parameters always take the honest step).
    """

    nudges: ClassVar[dict[str, str]] = {}
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float64")

    def _update(self, p: Any, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any], **changes: Any) -> None:
        param0 = p.data.copy()
        state0 = {k: np.array(state[k], copy=True) for k in BUFFERS if k in state}
        super()._update(p, grad, state, group, **changes)
        if p.data.dtype.name not in self.dtypes:
            return
        exact = oracle_step(Hyper(**{k: group[k] for k in _HYPER}), param0, grad, state0)
        for name, direction in self.nudges.items():
            target = p.data if name == "param" else state.get(name)
            wide = exact.param if name == "param" else getattr(exact, name)
            if target is not None and wide is not None:
                target[...] = _beyond(target, wide, direction)


class TruncatedParam(_Nudged):
    """The parameter rounded toward zero (a chopping store): one ULP toward zero when inexact.

    Up for negative values and down for positive ones, so ``#above - #below``
    cancels; only the toward/away-from-zero statistic sees it.
    """

    nudges: ClassVar[dict[str, str]] = {"param": "toward_zero"}


class AwayFromZeroParam(_Nudged):
    """The parameter rounded away from zero when inexact."""

    nudges: ClassVar[dict[str, str]] = {"param": "away"}


class SquareAvgRoundedUp(_Nudged):
    """``square_avg`` rounded toward +inf: a too large mean square, a slightly too short step."""

    nudges: ClassVar[dict[str, str]] = {"square_avg": "up"}


class MomentumTruncated(_Nudged):
    """Only the momentum buffer rounded toward zero: the parameter's own rounding hides it."""

    nudges: ClassVar[dict[str, str]] = {"momentum_buffer": "toward_zero"}


class Float64Truncated(_Nudged):
    """float64 parameters (only) rounded toward zero against the long double step; float32 honest.

    The float64 path is the one whose oracle is ``np.longdouble`` (11 more bits),
    and a bias there must be seen as well as a float32 one.
    """

    nudges: ClassVar[dict[str, str]] = {"param": "toward_zero"}
    dtypes: ClassVar[tuple[str, ...]] = ("float64",)


class LrDrift(_Honest):
    """The learning rate multiplied by ``1 + 2u`` (a schedule factor of 1.0000001, say): every step too long."""

    def _update(self, p: Any, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any], **changes: Any) -> None:
        u = float(np.finfo(p.data.dtype).eps) / 2
        super()._update(p, grad, state, group, lr=group["lr"] * (1 + 2 * u))


MUTANTS = (
    TruncatedParam,
    AwayFromZeroParam,
    SquareAvgRoundedUp,
    MomentumTruncated,
    Float64Truncated,
    LrDrift,
)
