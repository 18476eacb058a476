"""The FMA emulation is correctly rounded, and reproduces torch's fused kernels."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lucid._fma import fma


def _correctly_rounded(result: float, a: float, b: float, c: float, dtype: type) -> bool:
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    err = abs(Fraction(float(result)) - exact)
    for neighbour in (
        np.nextafter(dtype(result), dtype(np.inf)),
        np.nextafter(dtype(result), dtype(-np.inf)),
    ):
        if np.isfinite(neighbour) and abs(Fraction(float(neighbour)) - exact) < err:
            return False
    return True


def _floats(dtype: type) -> st.SearchStrategy[float]:
    """Operands whose products neither overflow nor underflow (the emulation's stated domain)."""
    width, exponent = (32, 15) if dtype is np.float32 else (64, 100)
    bound = float(dtype(10.0**exponent))
    return st.floats(-bound, bound, width=width, allow_nan=False, allow_subnormal=False).filter(
        lambda x: x == 0 or abs(x) > 10.0**-exponent
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(data=st.data())
def test_fma_is_correctly_rounded(dtype: type, data: st.DataObject) -> None:
    a, b = data.draw(_floats(dtype)), data.draw(_floats(dtype))
    # Bias c towards -a*b so that cancellation (the hard case) is common.
    c = data.draw(st.one_of(_floats(dtype), st.just(float(dtype(-a * b)))))
    result = fma(np.array([a], dtype), np.array([b], dtype), np.array([c], dtype))
    assert result.dtype == dtype
    assert _correctly_rounded(result[0], a, b, c, dtype)


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
