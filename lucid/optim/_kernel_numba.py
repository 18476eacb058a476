"""The RMSprop step compiled by numba: one pass over each element, bit for bit the reference.

Imported only by :func:`lucid.optim._kernel.resolve_accelerator`, never by ``import lucid``:
importing this module imports numba and registers the kernel (compiled, or
loaded from numba's cache, on first call).

The kernel is :func:`lucid.optim.functional.rmsprop_update`'s ``_update``
written per element, each line the same IEEE operation on the same operands in
the array's dtype, so each element gets the same bits:

* a plain ``+ - * /`` and ``sqrt`` are IEEE's correctly rounded operations in
  both, and numba is run without ``fastmath``, so LLVM neither contracts
  ``a * b + c`` into a fused multiply-add nor reorders anything;
* the reference's fused multiply-adds are correctly rounded (:mod:`lucid._fma`
  emulates them), and so is LLVM's ``llvm.fma`` used here for both dtypes: a
  fused multiply-add instruction, or the C library's ``fma``/``fmaf`` on a CPU
  without one;
* ``error_model="numpy"``: a division by zero gives inf or NaN, as in NumPy.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

__all__ = ["CACHE_NOTE", "rmsprop_kernel"]


@intrinsic
def fused(typingctx: Any, a: Any, b: Any, c: Any) -> Any:
    """Return ``a * b + c`` rounded once (LLVM's ``llvm.fma``), in the operands' dtype, float32 or float64.

    A fused multiply-add instruction where the CPU has one, else the C
    library's ``fma``/``fmaf``: correctly rounded either way, which is what
    :func:`lucid._fma.fma` computes.
    """
    if not (a == b == c and a in (types.float32, types.float64)):
        return None  # numba then reports that no implementation matches these types

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        real = ir.FloatType() if signature.return_type == types.float32 else ir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [real], ir.FunctionType(real, [real] * 3))
        return builder.call(fn, args)

    return a(a, b, c), codegen


def _element_step(
    p: Any,
    g: Any,
    sq: Any,
    a: Any,
    b: Any,
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
) -> Any:  # pragma: no cover - compiled; tested against the reference in tests/test_fast_step.py
    """One element's step: the new (param, square_avg, grad_avg, momentum_buffer); ``a``/``b`` unused unless flagged."""
    if maximize:
        g = -g
    if decay:
        g = fused(p, weight_decay, g)  # grad.add(param, alpha=wd)
    v = fused(one_minus_alpha * g, g, sq * alpha)  # square_avg.mul_(alpha).addcmul_(g, g, 1 - alpha)
    if centered:
        diff = g - a
        a = fused(lerp_w, diff, a) if lerp_small else fused(-diff, lerp_1mw, g)  # grad_avg.lerp_(g, 1 - alpha)
        avg = np.sqrt(fused(-a, a, v))  # addcmul(ga, ga, value=-1).sqrt_()
    else:
        avg = np.sqrt(v)
    avg = avg + eps
    if has_momentum:
        b = b * momentum + g / avg  # buf.mul_(momentum).addcdiv_(g, avg)
        p = fused(b, neg_lr, p)  # param.add_(buf, alpha=-lr)
    else:
        p = p + (neg_lr * g) / avg  # param.addcdiv_(g, avg, value=-lr)
    return p, v, a, b


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
    the reference converts them (``lucid.optim._fast._Hyper``).  One
    specialisation per dtype serves every flag set, with one loop per
    combination of ``centered`` and momentum, each touching only the arrays it
    uses.  (A single loop that also named the unused buffers made LLVM check
    them for overlap at run time: the unused stand-ins share an address, the
    check failed, and the plain step ran as scalar code, 65 ms instead of 9 ms
    for 4M float64 elements.)  The other flags are loop-invariant branches.
    """
    zero = sq.dtype.type(0)
    h = (neg_lr, alpha, one_minus_alpha, eps, weight_decay, momentum, lerp_w, lerp_1mw, lerp_small, decay)
    if centered and has_momentum:
        for i in range(p.size):
            p[i], sq[i], ga[i], buf[i] = _element(p[i], grad[i], sq[i], ga[i], buf[i], *h, True, True, maximize)
    elif centered:
        for i in range(p.size):
            p[i], sq[i], ga[i], _ = _element(p[i], grad[i], sq[i], ga[i], zero, *h, True, False, maximize)
    elif has_momentum:
        for i in range(p.size):
            p[i], sq[i], _, buf[i] = _element(p[i], grad[i], sq[i], zero, buf[i], *h, False, True, maximize)
    else:
        for i in range(p.size):
            p[i], sq[i], _, _ = _element(p[i], grad[i], sq[i], zero, zero, *h, False, False, maximize)


_OPTIONS = {"nogil": True, "error_model": "numpy", "boundscheck": False}
try:  # numba's cache: __pycache__ beside this file, else the user's cache directory ($NUMBA_CACHE_DIR)
    _element = numba.njit(cache=True, **_OPTIONS)(_element_step)  # compiled into the kernel's loops
    rmsprop_kernel = numba.njit(cache=True, **_OPTIONS)(_rmsprop_step)
    CACHE_NOTE = ""
except RuntimeError as err:  # no writable cache directory: compile in every process instead
    _element = numba.njit(cache=False, **_OPTIONS)(_element_step)
    rmsprop_kernel = numba.njit(cache=False, **_OPTIONS)(_rmsprop_step)
    CACHE_NOTE = f"compiled in this process, not cached ({err})"
