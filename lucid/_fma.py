"""Fused multiply-add ``a * b + c`` with a single rounding, emulated in NumPy.

NumPy has no FMA ufunc, but torch's CPU kernels fuse several of RMSprop's
operations, so reproducing torch bit for bit needs one.  Both dtypes use the
rounding-to-odd construction of Boldo & Melquiond ("Emulation of a FMA and
correctly rounded sums: proved algorithms using rounding to odd", IEEE Trans.
Computers 57(4), 2008):

* float32: ``a * b`` is exact in float64 (24 + 24 < 53 bits, and the smallest
  product of float32 subnormals, 2**-298, is a normal float64).  The float64 sum
  ``a * b + c`` is rounded *to odd* and then to float32; rounding to odd in a
  format with at least two more bits than the target removes the double-rounding
  error that a plain float64 round trip can make.  IEEE's signed-zero rules hold
  because every float64 operation follows them and the product is exact.
* float64: ``a * b`` is split exactly into ``uh + ul`` (Dekker's product with
  Veltkamp's splitting), ``c + uh`` exactly into ``th + tl`` (Knuth's TwoSum),
  the small parts are added with rounding to odd, ``v = RO(tl + ul)``, and
  ``th + v`` is rounded to nearest.

The float64 identities hold only inside a domain, and the elements outside it
take an exact path (:func:`_fma_outside_domain`):

* **tiny products**: Dekker's low part ``ul`` is exact only if it is a multiple
  of 2**-1074, i.e. if the operands' last-bit exponents sum to at least -1074.
  ``|a| < 2**(ea + 53)`` and ``|b| < 2**(eb + 53)`` for last-bit exponents
  ``ea``, ``eb``, so ``|a * b| >= 2**-968`` guarantees it (:data:`TINY_PRODUCT`).
  Below that the exact rational result is rounded once (:func:`_fma_exact`).
* **non-finite results or operands**: IEEE's rules (a NaN or infinite operand,
  an overflowing product) are applied array-wise; only finite operands whose
  product lies within a factor 8 of the overflow threshold, where ``c`` can still
  cancel it, and products of an operand above 2**996 (whose split overflows)
  need the exact rational path.
* **zero results**: inside the domain a zero result means ``c == -a*b`` with a
  non-zero product, which IEEE rounds to +0; ``th + v`` can give -0 there, so
  zeros are made +0 (``x + 0.0``).  Zero products are outside the domain (below
  :data:`TINY_PRODUCT`) and get IEEE's rule, ``fma(-0.0, x, -0.0) == -0.0``.

Inside the domain no partial result underflows or overflows, and the remaining
cases (a subnormal ``v``, a subnormal result) are exact sums of multiples of
2**-1074, which the construction rounds correctly.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["TINY_PRODUCT", "fma", "fma_outside_domain", "outside_domain"]

_SPLITTER = np.float64(2.0**27 + 1.0)  # Veltkamp's constant for 53-bit doubles
#: float64 products below this magnitude (zero included) are outside the error-free
#: transformations' domain: Dekker's low part may underflow (derivation in the module docstring).
TINY_PRODUCT = np.float64(2.0**-968)


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
            out = th + v  # RN(th + RO(tl + ul)) = RN(a * b + c) inside the domain
            out += 0.0  # a zero inside the domain is an exact cancellation: +0
            idx = np.flatnonzero(outside_domain(uh, out))
            if idx.size:
                out[idx] = fma_outside_domain(a64[idx], b64[idx], c64[idx])
    return out.reshape(shape)


def outside_domain(product: NDArray[np.float64], emulated: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Mark the float64 elements the error-free transformations may get wrong.

    Parameters
    ----------
    product : ndarray
        ``fl(a * b)``.
    emulated : ndarray
        The emulated ``fma(a, b, c)``.

    Returns
    -------
    ndarray of bool
        True where the product is below :data:`TINY_PRODUCT` (zero included) or
        the emulated result is not finite: those elements need
        :func:`fma_outside_domain`.
    """
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(emulated) | (np.abs(product) < TINY_PRODUCT)


def fma_outside_domain(a: NDArray[np.float64], b: NDArray[np.float64], c: NDArray[np.float64]) -> NDArray[np.float64]:
    """Return ``a * b + c`` rounded once, for 1-D float64 elements outside the emulation's domain.

    Array-wise where IEEE's rules decide the result, element by element in exact
    rational arithmetic (:func:`_fma_exact`) only where they do not, so the cost
    is proportional to the elements that need exact arithmetic, not to the NaN,
    infinite or zero ones.

    * A zero, infinite or NaN ``a`` or ``b``: the product is exactly 0, inf or
      NaN, so the unfused ``a * b + c`` is the fused result, signed zeros included.
    * Finite ``a``, ``b`` and an infinite or NaN ``c``: ``c`` (a finite product,
      however large, cannot change it; the unfused sum could overflow to
      ``inf - inf = NaN``).
    * ``c == ±0``: ``fl(a * b)``, which multiplication rounds correctly (the
      sum adds nothing, and the product's sign is the result's).
    * With frexp exponents ``ea``, ``eb``, ``ec`` (``2**(e-1) <= |x| < 2**e``),
      so that ``|a * b| < 2**(ea + eb)``:

      - ``ea + eb >= 1027``: ``|a * b| >= 2**1025``, so the result overflows
        whatever the finite ``c`` (``|c| < 2**1024``), to the product's signed
        infinity.
      - ``c != 0`` and ``ea + eb <= -1076``: the product is below a quarter of
        the spacing of float64 numbers (2**-1074 at least) and rounds away: ``c``.
      - a normal ``c`` and ``ea + eb <= ec - 56``: the product is below a
        quarter of the gap between ``c`` and either neighbour (2**(ec - 54)
        below a power of two): ``c``.

    * Everything else (tiny products beside an addend within 2**56 of them,
      products near the overflow threshold, operands whose split overflows):
      :func:`_fma_exact`.
    """
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        out = a * b + c
        finite = np.isfinite(a) & np.isfinite(b)
        keep_c = finite & ~np.isfinite(c)
        out[keep_c] = c[keep_c]
        need = finite & ~keep_c & (a != 0) & (b != 0)
        no_addend = need & (c == 0)
        out[no_addend] = a[no_addend] * b[no_addend]
        need &= ~no_addend
        eab = np.frexp(a)[1] + np.frexp(b)[1]
        huge = need & (eab >= 1027)
        out[huge] = a[huge] * b[huge]  # the signed infinity
        normal_c = np.abs(c) >= np.finfo(np.float64).tiny
        absorbed = need & ((eab <= -1076) | (normal_c & (eab <= np.frexp(c)[1] - 56)))
        out[absorbed] = c[absorbed]
        for i in np.flatnonzero(need & ~huge & ~absorbed):
            out[i] = _fma_exact(float(a[i]), float(b[i]), float(c[i]))
    return out


def _fma_exact(a: float, b: float, c: float) -> float:
    """Return ``a * b + c`` rounded once, by exact arithmetic on Python ints.

    Each finite float is ``m * 2**e`` with an integer ``m`` (from
    ``math.frexp``), so the exact result is an integer times a power of two,
    and CPython's ``int / int`` is correctly rounded, to subnormals and to a
    signed zero included (``-1 / 2**2000 == -0.0``); beyond float range it is
    the signed infinity.  An exact zero takes IEEE's sign rule, which the
    unfused ``a * b + c`` follows here: the product is exact when the sum
    cancels to zero (either it is zero, or it equals ``-c``, a float).
    Non-finite operands follow IEEE's rules as in :func:`fma_outside_domain`.
    """
    if not (math.isfinite(a) and math.isfinite(b)):
        return a * b + c
    if not math.isfinite(c):
        return c
    (ma, ea), (mb, eb), (mc, ec) = _integer_significand(a), _integer_significand(b), _integer_significand(c)
    e = min(ea + eb, ec)
    exact = ((ma * mb) << (ea + eb - e)) + (mc << (ec - e))  # a * b + c == exact * 2**e
    if exact == 0:
        return a * b + c
    try:
        return exact / (1 << -e) if e < 0 else float(exact << e)
    except OverflowError:
        return math.inf if exact > 0 else -math.inf


def _integer_significand(x: float) -> tuple[int, int]:
    """``(m, e)`` with ``x == m * 2**e`` exactly and ``m`` an integer of at most 53 bits."""
    fraction, exponent = math.frexp(x)
    return int(fraction * 2.0**53), exponent - 53
