"""Fused multiply-add ``a * b + c`` with a single rounding, emulated in NumPy.

NumPy has no FMA ufunc, but torch's CPU kernels fuse several of RMSprop's
operations, so reproducing torch bit for bit needs one.  Both dtypes use the
rounding-to-odd construction of Boldo & Melquiond ("Emulation of a FMA and
correctly rounded sums: proved algorithms using rounding to odd", IEEE Trans.
Computers 57(4), 2008):

* float32: ``a * b`` is exact in float64 (24 + 24 < 53 bits).  The float64 sum
  ``a * b + c`` is rounded *to odd* and then to float32; rounding to odd in a
  format with at least two more bits than the target removes the double-rounding
  error that a plain float64 round trip can make.
* float64: ``a * b`` is split exactly into ``uh + ul`` (Dekker's product with
  Veltkamp's splitting), ``c + uh`` exactly into ``th + tl`` (Knuth's TwoSum),
  the small parts are added with rounding to odd, ``v = RO(tl + ul)``, and
  ``th + v`` is rounded to nearest.

The identities hold while no intermediate overflows or underflows (products
above about 1e300 in float64, or below about 1e-290).  Elements whose emulated
result is not finite are recomputed one by one in exact rational arithmetic
(finite inputs) or by IEEE's rules for infinity and NaN (:func:`_fma_exact`).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numpy.typing import NDArray

__all__ = ["fma"]

_SPLITTER = np.float64(2.0**27 + 1.0)  # Veltkamp's constant for 53-bit doubles


def _two_sum(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    """Knuth's TwoSum: ``s + e == x + y`` exactly, ``s = fl(x + y)``."""
    s = x + y
    bp = s - x
    e = (x - (s - bp)) + (y - bp)
    return s, e


def _round_to_odd(s: NDArray[np.float64], err: NDArray[np.float64]) -> NDArray[np.float64]:
    """Turn ``s = RN(x)`` with exact remainder ``err = x - s`` into ``RO(x)``.

    Rounding to odd keeps an inexact result on the neighbour whose last
    significand bit is 1; ``s`` already is one of the two neighbours of ``x``.
    """
    with np.errstate(invalid="ignore"):
        inexact = (err != 0) & np.isfinite(s)
    even = (s.view(np.int64) & 1) == 0
    move = inexact & even
    if move.any():
        s = s.copy()
        s[move] = np.nextafter(s[move], np.copysign(np.inf, err[move]))
    return s


def _two_prod(a: NDArray[np.float64], b: NDArray[np.float64]) -> tuple[NDArray, NDArray]:
    """Dekker's TwoProduct: ``p + e == a * b`` exactly, ``p = fl(a * b)``."""
    p = a * b
    ta = _SPLITTER * a
    ah = ta - (ta - a)
    al = a - ah
    tb = _SPLITTER * b
    bh = tb - (tb - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def fma(a: NDArray, b: NDArray, c: NDArray) -> NDArray:
    """Return ``a * b + c`` rounded once, in the common dtype of the inputs.

    Parameters
    ----------
    a, b, c : ndarray or scalar
        Operands; they broadcast.  Their result dtype must be float32 or
        float64 (complex inputs are handled by callers as real pairs).

    Returns
    -------
    ndarray
        The correctly rounded fused multiply-add, shaped as the broadcast.
    """
    dtype = np.result_type(a, b, c)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"fma supports float32 and float64, got {dtype}")
    shape = np.broadcast_shapes(np.shape(a), np.shape(b), np.shape(c))
    # Work on flat float64 arrays: ufuncs on 0-d inputs return scalars, which
    # cannot be indexed by the rounding-to-odd fix-up.
    a64, b64, c64 = (np.broadcast_to(np.asarray(x, np.float64), shape).reshape(-1) for x in (a, b, c))
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        if dtype == np.float32:
            s, e = _two_sum(a64 * b64, c64)  # a64 * b64 is exact
            out = _round_to_odd(s, e).astype(np.float32)
        else:
            uh, ul = _two_prod(a64, b64)
            th, tl = _two_sum(c64, uh)
            v = _round_to_odd(*_two_sum(tl, ul))  # RO(tl + ul)
            out = th + v  # RN(th + RO(tl + ul)) = RN(a * b + c)
            bad = np.flatnonzero(~np.isfinite(out))
            for i in bad:  # rare: a non-finite input or an overflowing product
                out[i] = _fma_exact(float(a64[i]), float(b64[i]), float(c64[i]))
    return out.reshape(shape)


def _fma_exact(a: float, b: float, c: float) -> float:
    """Return ``a * b + c`` rounded once where the error-free transformations cannot.

    With ``a`` and ``b`` finite the product is a finite exact number even when
    it overflows float64, so ``1e30 * 1e300 - inf`` is ``-inf`` (the unfused
    ``a * b + c`` would give ``inf - inf = NaN``), and a huge product cancelled
    by ``c`` comes back finite.  Otherwise IEEE's rules for infinities and NaN
    apply, which the unfused expression follows.
    """
    if not (math.isfinite(a) and math.isfinite(b)):
        return a * b + c
    if not math.isfinite(c):
        return c
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    try:
        return float(exact)  # int / int in CPython: correctly rounded
    except OverflowError:
        return math.inf if exact > 0 else -math.inf
