"""The RMSprop step compiled by numba: one pass over each element, bit for bit the reference.

Imported only by :func:`lucid.optim._kernel.load`, never by ``import lucid``:
importing this module imports numba and registers the kernel (compiled, or
loaded from numba's cache, on first call).

The kernel is :func:`lucid.optim.functional.rmsprop_update`'s ``_update``
written per element, each line the same IEEE operation on the same operands in
the array's dtype, so each element gets the same bits:

* a plain ``+ - * /`` and ``sqrt`` are IEEE's correctly rounded operations in
  both, and numba is run without ``fastmath``, so LLVM neither contracts
  ``a * b + c`` into a fused multiply-add nor reorders anything;
* the reference's fused multiply-adds are correctly rounded (:mod:`lucid._fma`):
  float64's is LLVM's ``llvm.fma.f64`` here, correctly rounded by definition;
  float32's is the reference's own construction, ``RN32(RO64(a*b + c))``
  (the float64 product of two float32 numbers is exact; the sum is rounded to
  odd with TwoSum's remainder, then to float32), which is the correctly
  rounded float32 result;
* ``error_model="numpy"``: a division by zero gives inf or NaN, as in NumPy.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

__all__ = ["CACHE_NOTE", "rmsprop_kernel"]


@intrinsic
def _llvm_fma(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """``llvm.fma.f64``: ``a * b + c`` rounded once (a hardware FMA instruction where the CPU has one)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        double = ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [double], ir.FunctionType(double, [double] * 3))
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _bits(typingctx: Any, x: Any) -> Any:
    """Return the float64's bit pattern as an int64."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx: Any, n: Any) -> Any:
    """Return the float64 whose bit pattern is the int64 ``n``."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


_EXPONENT_MASK = np.int64(0x7FF0000000000000)  # all ones: inf or NaN


@numba.njit
def _fma32(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    """``RN32(RO64(a*b + c))``, as :func:`lucid._fma.fma` computes float32's fused multiply-add."""
    x = np.float64(a) * np.float64(b)  # exact
    c64 = np.float64(c)
    s = x + c64
    bp = s - x
    err = (x - (s - bp)) + (c64 - bp)  # TwoSum: s + err == x + c exactly
    # Inexact, finite and even: move to the odd neighbour on err's side, +1 or -1 on the
    # bit pattern (magnitude up when err has s's sign).  Branch-free, so the loop vectorises.
    sb = _bits(s)
    move = (err != 0.0) & (sb & 1 == 0) & (sb & _EXPONENT_MASK != _EXPONENT_MASK)
    s = _from_bits(sb + (((sb ^ _bits(err)) >> 63) | 1) * move)
    return np.float32(s)


def fused(a: Any, b: Any, c: Any) -> Any:
    """Return ``a * b + c`` rounded once, in the operands' dtype (compiled code only)."""
    raise NotImplementedError("fused() runs inside numba-compiled code only")


@overload(fused)
def _fused(a, b, c):
    if a == types.float32:
        return lambda a, b, c: _fma32(a, b, c)
    return lambda a, b, c: _llvm_fma(a, b, c)


def _rmsprop_step(
    p: Any,
    grad: Any,
    sq: Any,
    ga: Any,
    buf: Any,
    neg_lr: Any,
    alpha: Any,
    one_minus_alpha: Any,
    eps: Any,
    weight_decay: Any,
    momentum: Any,
    lerp_w: Any,
    lerp_1mw: Any,
    lerp_small: bool,
    decay: bool,
    centered: bool,
    has_momentum: bool,
    maximize: bool,
) -> None:  # pragma: no cover - compiled; tested against the reference in tests/test_fast_step.py
    """One RMSprop step over 1-D contiguous arrays, in place; ``ga``/``buf`` unused unless their flag is set.

    Scalars are the group's hyperparameters converted to the arrays' dtype, as
    the reference converts them (``lucid.optim._fast._Hyper``).
    """
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        if decay:
            g = fused(p[i], weight_decay, g)  # grad.add(param, alpha=wd)
        v = fused(one_minus_alpha * g, g, sq[i] * alpha)  # square_avg.mul_(alpha).addcmul_(g, g, 1 - alpha)
        sq[i] = v
        if centered:
            a = ga[i]
            diff = g - a
            a = fused(lerp_w, diff, a) if lerp_small else fused(-diff, lerp_1mw, g)  # grad_avg.lerp_(g, 1 - alpha)
            ga[i] = a
            avg = np.sqrt(fused(-a, a, v))  # addcmul(ga, ga, value=-1).sqrt_()
        else:
            avg = np.sqrt(v)
        avg = avg + eps
        if has_momentum:
            b = buf[i] * momentum + g / avg  # buf.mul_(momentum).addcdiv_(g, avg)
            buf[i] = b
            p[i] = fused(b, neg_lr, p[i])  # param.add_(buf, alpha=-lr)
        else:
            p[i] = p[i] + (neg_lr * g) / avg  # param.addcdiv_(g, avg, value=-lr)


_OPTIONS = {"nogil": True, "error_model": "numpy", "boundscheck": False}
try:  # numba's cache: __pycache__ beside this file, else the user's cache directory ($NUMBA_CACHE_DIR)
    rmsprop_kernel = numba.njit(cache=True, **_OPTIONS)(_rmsprop_step)
    CACHE_NOTE = ""
except RuntimeError as err:  # no writable cache directory: compile in every process instead
    rmsprop_kernel = numba.njit(cache=False, **_OPTIONS)(_rmsprop_step)
    CACHE_NOTE = f"compiled in this process, not cached ({err})"
