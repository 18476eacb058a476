"""The FMA emulation is correctly rounded, and reproduces torch's fused kernels."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lucid._fma import fma

#: (significand bits, minimum normal exponent, overflow exponent) of each dtype.
_FORMAT = {np.float32: (24, -126, 128), np.float64: (53, -1022, 1024)}


def _round_exact(exact: Fraction, dtype: type) -> float:
    """Round a rational to ``dtype`` once, to nearest with ties to even (IEEE's default)."""
    bits, emin, emax = _FORMAT[dtype]
    if exact == 0:
        raise ValueError("an exact zero takes its sign from the operands")
    magnitude = abs(exact)
    e = magnitude.numerator.bit_length() - magnitude.denominator.bit_length()
    if Fraction(2) ** e > magnitude:  # now 2**e <= |exact| < 2**(e + 1)
        e -= 1
    quantum = Fraction(2) ** max(e - bits + 1, emin - bits + 1)  # the spacing of dtype's numbers there
    rounded = round(exact / quantum) * quantum  # round() on a Fraction: ties to even
    if abs(rounded) >= Fraction(2) ** emax:
        return math.inf if exact > 0 else -math.inf
    return float(rounded) if rounded != 0 else (-0.0 if exact < 0 else 0.0)  # an underflow to 0 keeps the sign


def _expected_fma(a: float, b: float, c: float, dtype: type) -> float:
    """IEEE 754's fusedMultiplyAdd(a, b, c) in ``dtype``, from exact rationals, signed zeros included."""
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    if exact != 0:
        return _round_exact(exact, dtype)
    product_negative = (math.copysign(1, a) * math.copysign(1, b)) < 0
    if (a == 0 or b == 0) and c == 0:  # zero plus zero keeps a common sign
        return -0.0 if product_negative and math.copysign(1, c) < 0 else 0.0
    return 0.0  # an exact cancellation of non-zero terms is +0 under rounding to nearest


def _operands(dtype: type) -> st.SearchStrategy[float]:
    """Any finite value: normal over the whole exponent range, subnormal, and both zeros."""
    bits, emin, emax = _FORMAT[dtype]
    width = 32 if dtype is np.float32 else 64
    scaled = st.builds(
        lambda m, e, sign: float(dtype(sign * math.ldexp(m, e))),
        st.floats(1, 2, exclude_max=True),
        st.integers(emin - bits, emax - 1),
        st.sampled_from([-1.0, 1.0]),
    )
    return st.one_of(
        scaled, st.floats(width=width, allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0])
    )


def _addends(a: float, b: float, dtype: type) -> st.SearchStrategy[float]:
    """Addends for ``a * b``: any value, or one that cancels it, or lands on the subnormal boundary."""
    tiny = float(np.finfo(dtype).tiny)
    sub = float(np.finfo(dtype).smallest_subnormal)
    with np.errstate(all="ignore"):
        minus_product = float(dtype(-(a * b)))  # a*b rounded: c close to -a*b leaves a tiny result
    near = [x for x in (minus_product, minus_product + tiny, minus_product - tiny) if math.isfinite(x)]
    return st.one_of(
        _operands(dtype),
        st.sampled_from([*near, tiny, -tiny, sub, -sub, 0.0, -0.0]),
        st.integers(-4, 4).map(lambda k: float(dtype(k * sub))),
    )


def _torch_fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """torch's fused kernel: ``c.addcmul_(a, b)`` (``value=1`` leaves ``a`` exact)."""
    return torch.from_numpy(c.copy()).addcmul_(torch.from_numpy(a), torch.from_numpy(b)).numpy()


def _assert_same_bits(got: np.ndarray, want: np.ndarray) -> None:
    """Equal bit for bit, signed zeros included; any NaN matches any NaN (payloads are not IEEE's)."""
    both_nan = np.isnan(got) & np.isnan(want)
    mismatch = np.flatnonzero(~both_nan & (got.view(f"u{got.itemsize}") != want.view(f"u{want.itemsize}")))
    assert mismatch.size == 0, f"{mismatch.size} elements differ, first {got[mismatch[:5]]} vs {want[mismatch[:5]]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_fma_is_correctly_rounded(dtype: type, data: st.DataObject) -> None:
    """Against exact rationals over the whole finite range: tiny and subnormal products, signed zeros, overflow."""
    a, b = data.draw(_operands(dtype)), data.draw(_operands(dtype))
    c = data.draw(_addends(a, b, dtype))
    arrays = [np.array([x], dtype) for x in (a, b, c)]
    result = fma(*arrays)
    assert result.dtype == dtype
    expected = np.array([_expected_fma(a, b, c, dtype)], dtype)
    _assert_same_bits(result, expected)
    _assert_same_bits(_torch_fma(*arrays), expected)  # the oracle is torch's rule too


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fma_tiny_products_match_torch_bit_for_bit(dtype: type) -> None:
    """200k products below the float64 emulation's domain (2**-968), with addends at the subnormal boundary."""
    bits, emin, _ = _FORMAT[dtype]
    rng = np.random.default_rng(7)
    n = 200_000

    def draw(lo: int, hi: int) -> np.ndarray:
        return (rng.choice([-1.0, 1.0], n) * np.ldexp(rng.uniform(1, 2, n), rng.integers(lo, hi, n))).astype(dtype)

    half = (emin - bits) // 2  # operands whose products straddle the subnormal range
    a, b = draw(half - 40, half + 60), draw(half - 40, half + 60)
    c = np.where(rng.random(n) < 0.3, 0.0, draw(emin - bits, emin + 30)).astype(dtype)
    c = np.where(rng.random(n) < 0.2, -(a * b).astype(dtype), c).astype(dtype)  # cancellations
    with np.errstate(all="ignore"):
        got = fma(a, b, c)
    _assert_same_bits(got, _torch_fma(a, b, c))
    if dtype is np.float64:
        assert np.mean(np.abs(a * b) < 2.0**-968) > 0.5  # most of them are outside the emulation's domain


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fma_signed_zeros_and_specials_match_torch(dtype: type) -> None:
    """Every combination of signed zeros, subnormals, extremes, infinities and NaN, as torch's kernel gives it."""
    fi = np.finfo(dtype)
    vals = np.array(
        [0.0, -0.0, 1.0, -1.0, 2.5, fi.max, -fi.max, fi.tiny, -fi.tiny, fi.smallest_subnormal,
         -fi.smallest_subnormal, np.sqrt(fi.max), np.sqrt(fi.tiny), np.inf, -np.inf, np.nan],
        dtype,
    )  # fmt: skip
    a, b, c = (x.reshape(-1).copy() for x in np.meshgrid(vals, vals, vals, indexing="ij"))
    with np.errstate(all="ignore"):
        got = fma(a, b, c)
    _assert_same_bits(got, _torch_fma(a, b, c))
    assert np.signbit(fma(np.array([-0.0], dtype), np.array([2.0], dtype), np.array([-0.0], dtype)))[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fma_differs_from_unfused_and_matches_torch_addcmul(dtype: type) -> None:
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(100_000).astype(dtype) for _ in range(3))
    fused = fma(a, b, c)
    assert np.mean(fused != a * b + c) > 0.05  # the emulation is not a plain multiply-add
    torch_result = torch.from_numpy(c.copy()).addcmul_(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(fused, torch_result)


def test_fma_nonfinite_and_scalars() -> None:
    got = fma(np.array([np.inf, np.nan, 1.0]), np.array([1.0, 1.0, 2.0]), np.array([1.0, 0.0, -np.inf]))
    np.testing.assert_array_equal(got, [np.inf, np.nan, -np.inf])
    assert fma(np.float32(2), np.float32(3), np.float32(1)).shape == ()
    with pytest.raises(TypeError, match="int64"):
        fma(np.arange(3), np.arange(3), np.arange(3))
