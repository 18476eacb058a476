"""The fast RMSprop step: the reference formula on cache-sized blocks, in place, on a few threads.

:func:`lucid.optim.functional.rmsprop_update` is the readable reference.  This
module computes *the same bits* with less memory traffic:

* every operation writes into preallocated scratch with ``out=`` (no
  temporaries proportional to the parameter);
* parameters are cut into blocks that stay in the caches together with their
  scratch, so each element is read from and written to main memory once;
* blocks are shared among a small thread pool (NumPy releases the GIL inside
  ufunc loops);
* many small parameters are gathered into one flat array per parameter group,
  and their state lives in flat arrays that ``state[p][...]`` views, so a model
  with a thousand tiny tensors costs a handful of ufunc calls, not thousands;
* float32's fused multiply-add, emulated in the reference by a float64 sum
  rounded to odd, is computed as a plain float64 sum; the few elements where
  rounding to odd could matter are found with a bit mask and recomputed by the
  reference :func:`lucid._fma.fma` (the argument is at :func:`_fma32_into`).

The formula is in one place, :func:`_update_block`, line by line beside the
reference's.  Complex parameters, and large parameters whose arrays are not
C-contiguous, take the reference path.

Thread count: ``RMSprop.num_threads`` (a class or instance attribute), else the
environment variable ``LUCID_NUM_THREADS``, else the number of CPUs this
process may run on, at most :data:`MAX_DEFAULT_THREADS`; never more than
:data:`MAX_THREADS`.

A step is prepared, then committed (:meth:`FastStep.prepare`): everything it
allocates is allocated before the first write.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from itertools import chain
from operator import attrgetter, is_, itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lucid._fma import TINY_PRODUCT, fma_outside_domain
from lucid._fma import fma as reference_fma
from lucid.optim._kernel import run_kernel
from lucid.optim.functional import Writes, rmsprop_writes
from lucid.tensor import Tensor

__all__ = ["MAX_DEFAULT_THREADS", "MAX_THREADS", "FastStep", "resolve_num_threads"]

#: Elements per block: a block's data slices and its thread's scratch take about
#: 4 MiB (float32: 3 float32, 2 float64 and 1 int64 scratch arrays; float64's exact
#: FMA: 10 float64 and 1 int64), resident in L2 and the shared L3.  Measured on the
#: 2-core EPYC (CPU time of a 16M step): float32 63 / 54 / 52 ms at 16384 / 65536 /
#: 131072 elements, float64 285 / 239 / 240 / 223 ms at 8192 / 16384 / 32768 / 65536
#: (32768 keeps float64 near 4 MiB too); smaller blocks pay NumPy's per-call
#: overhead (~0.4 us) on every one of ~15-60 passes.
BLOCK = {np.dtype(np.float32): 65536, np.dtype(np.float64): 32768}
#: Parameters with fewer elements than this are updated together from flat storage.
SMALL = 8192
#: A NumPy step with fewer elements than this runs in the calling thread only.
PARALLEL_MIN = 1 << 15
#: A step of the compiled kernel with fewer bytes per array than this runs in the
#: calling thread only.  Handing a share to a pool thread and waiting for it costs
#: about 0.1-0.15 ms on the 2-core EPYC (the wake-ups of a virtual machine), the
#: time the kernel takes for a few hundred thousand elements.  Measured there
#: (one parameter, single-threaded / two threads, best of 7): float32 256Ki elements
#: 267 / 286 us, 512Ki 444 / 413 us; float64 128Ki 241 / 261 us, 256Ki 406 / 373 us;
#: every flag set crosses over at the same sizes.  2 MiB is both dtypes' crossing.
KERNEL_PARALLEL_MIN_BYTES = 2 << 20
#: The default thread count is the CPUs available, capped here.
MAX_DEFAULT_THREADS = 8
#: No count above this is accepted, whoever asks.  The step is bound by memory
#: bandwidth, which a few threads per memory channel saturate (two threads gave
#: 1.15-1.4x on the 2-core machine of docs/performance.md), and every thread keeps
#: its own scratch (about 2.4 MiB for float32 and 2.8 MiB for float64), so a count
#: far beyond the cores (``LUCID_NUM_THREADS=1024``: a typo, or a per-machine count
#: given to every process) only costs memory and thread start-up.  64 leaves room
#: for the largest single machines.
MAX_THREADS = 64
#: The environment variable that sets the thread count.
THREADS_ENV = "LUCID_NUM_THREADS"

_BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")


def resolve_num_threads(requested: int | None) -> int:
    """Return the thread count: ``requested``, else ``$LUCID_NUM_THREADS``, else the CPUs available.

    Raises
    ------
    ValueError
        If the value is not an integer >= 1, or is above :data:`MAX_THREADS`
        (naming the value and where it came from).
    """
    where = "num_threads"
    if requested is None and os.environ.get(THREADS_ENV):
        where, requested = THREADS_ENV, os.environ[THREADS_ENV]  # type: ignore[assignment]
    if requested is None:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, min(available, MAX_DEFAULT_THREADS))
    try:
        n = int(requested)
        ok = n >= 1 and not isinstance(requested, (bool, float)) and str(requested).strip() == str(n)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{where} must be an integer >= 1, got {requested!r}")
    if n > MAX_THREADS:
        raise ValueError(f"{where} must be at most {MAX_THREADS}, got {requested!r} (the step is memory-bound)")
    return n


_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """Return the shared pool of ``workers`` threads of this process (a forked child has no threads)."""
    key = (os.getpid(), workers)
    with _pools_lock:
        if key not in _pools:
            _pools[key] = ThreadPoolExecutor(workers, thread_name_prefix="lucid-rmsprop")
        return _pools[key]


# --------------------------------------------------------------------------- hyperparameters
@dataclass(frozen=True)
class _Hyper:
    """A group's hyperparameters as scalars of the array dtype, as the reference converts them."""

    neg_lr: np.floating
    alpha: np.floating
    one_minus_alpha: np.floating
    eps: np.floating
    weight_decay: np.floating
    momentum: np.floating
    lerp_w: np.floating  # lerp weight 1 - alpha, for fma(w, diff, start)
    lerp_1mw: np.floating  # 1 - w in the dtype, for fma(-diff, 1 - w, end)
    lerp_small: bool  # torch's lerp branch: w < 0.5
    decay: bool
    centered: bool
    has_momentum: bool
    maximize: bool

    @classmethod
    def of(cls, group: dict[str, Any], dtype: np.dtype[Any]) -> _Hyper:
        t = dtype.type
        w = 1 - group["alpha"]
        return cls(
            neg_lr=t(-group["lr"]),
            alpha=t(group["alpha"]),
            one_minus_alpha=t(1 - group["alpha"]),
            eps=t(group["eps"]),
            weight_decay=t(group["weight_decay"]),
            momentum=t(group["momentum"]),
            lerp_w=t(w),
            lerp_1mw=t(1) - t(w),
            lerp_small=w < 0.5,
            decay=group["weight_decay"] != 0,
            centered=bool(group["centered"]),
            has_momentum=group["momentum"] > 0,
            maximize=bool(group["maximize"]),
        )


# --------------------------------------------------------------------------- scratch
class _Scratch:
    """One thread's preallocated work arrays for one dtype, ``size`` elements each."""

    def __init__(self, dtype: np.dtype[Any], size: int, arrays: dict[str, NDArray[Any]] | None = None) -> None:
        self.dtype = dtype
        self.size = size
        if arrays is None:
            wide = 2 if dtype == np.float32 else 7
            arrays = {name: np.empty(size, dtype) for name in ("g", "a", "b")}
            arrays |= {f"w{i}": np.empty(size, np.float64) for i in range(wide)}
            arrays |= {"key": np.empty(size, np.int64), "m0": np.empty(size, bool), "m1": np.empty(size, bool)}
        self.arrays = arrays
        self.__dict__.update(arrays)
        #: ``fma(out, a, b, c)``: ``out = a*b + c`` rounded once; ``fms_square(out, x, c)``: ``fma(out, -x, x, c)``
        self.fma: Callable[..., NDArray[Any]] = partial(_fma32_into if dtype == np.float32 else _fma64_into, s=self)
        self.fms_square: Callable[..., NDArray[Any]] = partial(
            _fms_square32_into if dtype == np.float32 else _fms_square64_into, s=self
        )

    def first(self, n: int) -> _Scratch:
        """Return this scratch cut to ``n`` elements (for a short last block)."""
        if n == self.size:
            return self
        return _Scratch(self.dtype, n, {k: v[:n] for k, v in self.arrays.items()})


def _wide(x: Any, buf: NDArray[np.float64]) -> Any:
    """``x`` as float64: cast into ``buf`` (no buffered casting inside ufuncs), or a scalar."""
    if isinstance(x, np.ndarray):
        np.copyto(buf, x)
        return buf
    return np.float64(x)


def _take(x: Any, idx: NDArray[np.intp]) -> Any:
    return x if isinstance(x, np.floating) else x[idx]


def _fix_with_reference(out: NDArray[Any], fix: tuple[NDArray[np.intp], NDArray[Any]] | None) -> None:
    if fix is not None:
        out[fix[0]] = fix[1]


# float64 significand bits below float32's rounding position (52 - 23 = 29)
_LOW28 = np.int64((1 << 28) - 1)
_LOW29 = np.int64((1 << 29) - 1)
_HALF29 = np.int64(1 << 28)
_FLT_MIN = np.float64(2.0**-126)


#: Up to this many elements of a block are fixed one by one in Python floats.
_FEW = 16


def _fma32_one(a: float, b: float, c: float) -> float:
    """``RN32(RO64(a*b + c))`` for one element: :func:`lucid._fma.fma`'s float32 steps on Python floats.

    Python floats are IEEE float64 rounded to nearest, so each operation is the
    reference's: the exact product, TwoSum, the move to the odd neighbour.
    """
    x = a * b  # exact
    s = x + c
    bp = s - x
    err = (x - (s - bp)) + (c - bp)
    if err != 0 and math.isfinite(s) and not struct.unpack("<q", struct.pack("<d", s))[0] & 1:
        s = math.nextafter(s, math.copysign(math.inf, err))
    return s  # rounded to float32 by the caller's np.array(..., float32)


def _fma32_into(out: NDArray[np.float32], a: Any, b: Any, c: Any, s: _Scratch) -> NDArray[np.float32]:
    """``out = fma(a, b, c)`` for float32, equal bit for bit to :func:`lucid._fma.fma`.

    The reference computes ``RN32(RO64(a*b + c))``: ``a*b`` is exact in float64,
    the sum is rounded to odd, then to float32.  Here ``s = RN64(a*b + c)`` and
    ``out = RN32(s)``, which is the same except at a few elements, found as follows.

    Let ``x = a*b + c`` exactly and ``s' = RO64(x)``.  ``s' != s`` only when
    ``x`` is inexact and ``s`` is even; then ``s'`` is the float64 neighbour of
    ``s`` on ``x``'s side.  ``RN32(s) != RN32(s')`` needs a float32 rounding
    boundary (a midpoint between two float32 numbers; the overflow threshold
    ``2**128 - 2**103`` is one too) at ``s`` or ``s'``, or strictly between
    them.  Every such midpoint is a float64 number, and ``s``, ``s'`` are
    adjacent float64 numbers, so nothing lies strictly between; ``s'`` is odd
    while a midpoint has at least 28 trailing zero significand bits, so the
    midpoint can only be ``s`` itself.  A float32 midpoint, viewed as float64,
    has low 29 significand bits ``1 << 28`` in float32's normal range
    (``|s| >= 2**-126``), and low 29 bits zero below it (the midpoints are odd
    multiples of ``2**-150`` there).  So only elements whose low 28 bits are all
    zero can differ (a cheap superset of both cases, tested on every element);
    among those, the ones with low 29 bits ``1 << 28`` or ``|s| < 2**-126`` are
    recomputed with the reference itself, which is elementwise.  ``s`` = 0, inf
    and NaN need no fix (a float64 sum of float32-range numbers is exact when it
    is zero; inf and NaN are unchanged by rounding to odd in the reference).
    """
    wide = s.w0
    np.multiply(_wide(a, wide), _wide(b, s.w1), out=wide)  # exact: 24 + 24 significand bits < 53
    np.add(wide, _wide(c, s.w1), out=wide)  # RN64(a*b + c)
    return _round32_into(out, wide, a, b, c, s)


def _fms_square32_into(out: NDArray[np.float32], x: NDArray[np.float32], c: Any, s: _Scratch) -> NDArray[np.float32]:
    """``out = fma(-x, x, c)`` for float32, as :func:`_fma32_into` computes it.

    ``RN64(c - x*x)`` is ``RN64((-x)*x + c)``: negation is exact and rounding
    to nearest is symmetric, so the float64 sum, and everything after it, is
    :func:`_fma32_into`'s; this saves the negated copy of ``x``.
    """
    wide = s.w0
    x64 = _wide(x, wide)
    np.multiply(x64, x64, out=wide)  # exact
    np.subtract(_wide(c, s.w1), wide, out=wide)  # RN64(c - x*x)
    return _round32_into(out, wide, _Negated(x), x, c, s)


class _Negated:
    """``-x`` for the few elements :func:`_round32_into` gathers (``x[idx]`` negated)."""

    def __init__(self, x: NDArray[Any]) -> None:
        self.x = x

    def __getitem__(self, idx: NDArray[np.intp]) -> NDArray[Any]:
        return -self.x[idx]


def _round32_into(out: NDArray[np.float32], wide: NDArray[np.float64], a: Any, b: Any, c: Any, s: _Scratch) -> Any:
    """``out = RN32(RO64(a*b + c))`` given ``wide = RN64(a*b + c)``: the mask test of :func:`_fma32_into`."""
    key = s.key
    np.bitwise_and(wide.view(np.int64), _LOW28, out=key)
    fix = None
    if np.count_nonzero(key) < key.size:  # some low 28 bits all zero: look closer at those
        idx = np.flatnonzero(key == 0)
        bits = wide.view(np.int64)[idx]
        idx = idx[((bits & _LOW29) == _HALF29) | (np.abs(wide[idx]) < _FLT_MIN)]
        if idx.size:  # gathered before ``out`` is written: it may alias a or c
            a_, b_, c_ = _take(a, idx), _take(b, idx), _take(c, idx)
            if idx.size > _FEW:
                fix = (idx, reference_fma(a_, b_, c_))
            else:  # the reference's float32 arithmetic on Python floats: no per-call array overhead
                a_, b_, c_ = (np.broadcast_to(x, idx.shape).tolist() for x in (a_, b_, c_))
                fix = (idx, np.array([_fma32_one(*abc) for abc in zip(a_, b_, c_)], np.float32))
    np.copyto(out, wide, casting="same_kind")  # RN32
    _fix_with_reference(out, fix)
    return out


_SPLITTER = np.float64(2.0**27 + 1.0)  # Veltkamp's constant, as in lucid._fma


def _split(x: Any, hi: NDArray[np.float64], lo: NDArray[np.float64], tmp: NDArray[np.float64]) -> tuple[Any, Any]:
    """Veltkamp's split ``x = hi + lo``, the reference's operations in the same order."""
    if not isinstance(x, np.ndarray):  # a scalar operand: split once, same IEEE operations
        t = _SPLITTER * x
        h = t - (t - x)
        return h, x - h
    np.multiply(x, _SPLITTER, out=tmp)  # ta = S * a
    np.subtract(tmp, x, out=hi)  # ta - a
    np.subtract(tmp, hi, out=hi)  # ah = ta - (ta - a)
    np.subtract(x, hi, out=lo)  # al = a - ah
    return hi, lo


def _fma64_into(out: NDArray[np.float64], a: Any, b: Any, c: Any, s: _Scratch) -> NDArray[np.float64]:
    """``out = fma(a, b, c)`` for float64: :func:`lucid._fma.fma`'s operations, in place.

    Dekker's TwoProduct, Knuth's TwoSum twice and rounding to odd, each IEEE
    operation the reference performs, in the same order, into scratch; elements
    outside the emulation's domain (a result that is not finite, a product below
    :data:`lucid._fma.TINY_PRODUCT`) are recomputed by the reference's
    :func:`lucid._fma.fma_outside_domain`.  Same operations on the same inputs: the same bits.
    """
    p, t, ah, al, bh, bl, e = s.w0, s.w1, s.w2, s.w3, s.w4, s.w5, s.w6
    np.multiply(a, b, out=p)  # uh = fl(a*b)
    ah_, al_ = _split(a, ah, al, t)
    bh_, bl_ = _split(b, bh, bl, t)
    np.multiply(ah_, bh_, out=e)  # ul = ((ah*bh - p) + ah*bl + al*bh) + al*bl
    np.subtract(e, p, out=e)
    np.multiply(ah_, bl_, out=t)
    np.add(e, t, out=e)
    np.multiply(al_, bh_, out=t)
    np.add(e, t, out=e)
    np.multiply(al_, bl_, out=t)
    np.add(e, t, out=e)
    th, bp, tl, v = ah, al, bh, bl  # the split halves are no longer needed
    np.add(c, p, out=th)  # th, tl = TwoSum(c, uh): s = c + uh
    np.subtract(th, c, out=bp)  # bp = s - c
    np.subtract(th, bp, out=t)
    np.subtract(c, t, out=t)  # c - (s - bp)
    np.subtract(p, bp, out=tl)  # uh - bp
    np.add(t, tl, out=tl)
    np.add(tl, e, out=v)  # v = RO(TwoSum(tl, ul))
    np.subtract(v, tl, out=bp)
    np.subtract(v, bp, out=t)
    np.subtract(tl, t, out=t)  # tl - (s - bp)
    np.subtract(e, bp, out=e)  # ul - bp
    np.add(t, e, out=e)  # the remainder of v
    move, finite = s.m0, s.m1
    np.not_equal(e, 0, out=move)  # inexact ...
    np.isfinite(v, out=finite)
    np.logical_and(move, finite, out=move)
    np.bitwise_and(v.view(np.int64), 1, out=s.key)
    np.equal(s.key, 0, out=finite)  # ... and even: move to the odd neighbour on the remainder's side
    np.logical_and(move, finite, out=move)
    if move.any():  # nextafter(v, copysign(inf, e)) in integer arithmetic (np.nextafter: ~4 ns/element)
        # v is finite and non-zero here (TwoSum's v = 0 has e = 0), so the neighbour is the
        # bit pattern +1 (magnitude up: e has v's sign) or -1 (down): (bits(v) ^ bits(e)) >> 63 | 1.
        vbits, key = v.view(np.int64), s.key
        np.bitwise_xor(vbits, e.view(np.int64), out=key)
        np.right_shift(key, 63, out=key)  # 0 (same sign) or -1
        np.bitwise_or(key, 1, out=key)  # +1 or -1
        np.multiply(key, move, out=key)  # 0 where v stays (ufunc where= costs ~3 ns/element here)
        np.add(vbits, key, out=vbits)
    np.add(th, v, out=th)  # RN(th + RO(tl + ul))
    np.add(th, 0.0, out=th)  # a zero inside the domain is an exact cancellation: +0
    np.isfinite(th, out=finite)  # inside the domain: finite, and |uh| >= TINY_PRODUCT
    np.greater_equal(np.abs(p, out=t), TINY_PRODUCT, out=move)
    np.logical_and(finite, move, out=finite)
    fix = None
    if not finite.all():  # the others take the reference's path for them (lucid._fma.outside_domain)
        idx = np.flatnonzero(~finite)
        fix = (idx, fma_outside_domain(*(np.broadcast_to(_take(x, idx), idx.shape) for x in (a, b, c))))
    np.copyto(out, th)
    _fix_with_reference(out, fix)
    return out


def _fms_square64_into(out: NDArray[np.float64], x: NDArray[np.float64], c: Any, s: _Scratch) -> NDArray[np.float64]:
    """``out = fma(-x, x, c)`` for float64: the reference's operands, negated copy included."""
    return _fma64_into(out, np.negative(x, out=s.b), x, c, s)


# --------------------------------------------------------------------------- the formula
def _update_block(
    p: NDArray[Any],
    grad: NDArray[Any],
    sq: NDArray[Any],
    ga: NDArray[Any] | None,
    buf: NDArray[Any] | None,
    h: _Hyper,
    s: _Scratch,
) -> None:
    """One RMSprop step on 1-D contiguous slices: :func:`lucid.optim.functional._update`, in place.

    Each statement is the reference's statement (quoted on the right) with its
    result written into scratch or into the state; ``fma(out, a, b, c)`` is
    ``out = a*b + c`` rounded once, as the reference's ``fma(a, b, c)``.
    """
    fma = s.fma
    g = np.negative(grad, out=s.g) if h.maximize else grad  # g = -grad if maximize else grad
    if h.decay:
        g = fma(s.g, p, h.weight_decay, g)  # g = fma(param, t(weight_decay), g)
    np.multiply(g, h.one_minus_alpha, out=s.a)
    np.multiply(sq, h.alpha, out=s.b)
    fma(sq, s.a, g, s.b)  # square_avg = fma(t(1 - alpha) * g, g, square_avg * t(alpha))
    if h.centered:
        assert ga is not None
        diff = np.subtract(g, ga, out=s.a)  # grad_avg = _lerp(grad_avg, g, 1 - alpha):
        if h.lerp_small:
            fma(ga, h.lerp_w, diff, ga)  # fma(t(w), g - grad_avg, grad_avg)
        else:
            fma(ga, np.negative(diff, out=diff), h.lerp_1mw, g)  # fma(-(g - grad_avg), t(1) - t(w), g)
        avg = s.fms_square(s.a, ga, sq)  # avg = sqrt(fma(-grad_avg, grad_avg, square_avg))
        np.sqrt(avg, out=avg)
    else:
        avg = np.sqrt(sq, out=s.a)  # avg = sqrt(square_avg)
    np.add(avg, h.eps, out=avg)  # avg = avg + t(eps)
    if h.has_momentum:
        assert buf is not None
        np.multiply(buf, h.momentum, out=buf)
        np.add(buf, np.divide(g, avg, out=s.b), out=buf)  # buf = buf * t(momentum) + g / avg
        fma(p, buf, h.neg_lr, p)  # param = fma(buf, t(-lr), param)
    else:
        np.multiply(g, h.neg_lr, out=s.b)
        np.add(p, np.divide(s.b, avg, out=s.b), out=p)  # param = param + (t(-lr) * g) / avg


# --------------------------------------------------------------------------- scheduling
@dataclass
class _Job:
    """Five 1-D contiguous arrays (param, grad, square_avg, grad_avg, momentum_buffer) and their hyperparameters."""

    arrays: tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any] | None, NDArray[Any] | None]
    hyper: _Hyper

    @property
    def size(self) -> int:
        return self.arrays[0].size

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.arrays[0].dtype


def _names(group: dict[str, Any]) -> tuple[str, ...]:
    """Return the state buffers a group's flags use, in :data:`_BUFFERS` order."""
    centered, momentum = bool(group["centered"]), group["momentum"] > 0
    return ("square_avg",) + ("grad_avg",) * centered + ("momentum_buffer",) * momentum


def _refs_to_data(tensor: Any) -> int:
    """``sys.getrefcount`` of ``tensor.data``, counted the same way for :data:`_SOLE_REFS`."""
    return sys.getrefcount(tensor.data)


#: What :func:`_refs_to_data` returns when the tensor's ``__dict__`` is the array's only
#: holder: measured here rather than assumed, since the count includes the call's own
#: temporary reference, which is an interpreter detail.
_SOLE_REFS = _refs_to_data(Tensor(np.zeros(1)))

#: Every pack's ``flat["param"]``, by id, while it lives (ndarrays are unhashable, so no WeakSet).
_PACK_STORAGE: weakref.WeakValueDictionary[int, NDArray[Any]] = weakref.WeakValueDictionary()


def _adoptable(tensor: Any, view: NDArray[Any]) -> bool:
    """Whether ``tensor.data`` may be replaced by ``view`` (with its values) without anyone noticing.

    Nothing but ``tensor`` references the array, and its memory is reachable
    through no other array: it owns it, or it is its member's view of an
    older pack's parameter storage (after a rebuild), which no one else was
    given.  A view of an array of the user's (``p.data = holder[..., 0]``)
    has one reference too, but ``holder`` still sees its memory: never adopted.
    """
    data = tensor.data
    base = data.base
    del data  # not to count as a holder
    if _refs_to_data(tensor) > _SOLE_REFS:
        return False
    if base is not None and _PACK_STORAGE.get(id(base)) is not base:
        return False
    return tensor.data.shape == view.shape and tensor.data.dtype == view.dtype


class _FlatPack:
    """Flat storage for one group's small parameters of one dtype.

    ``state[p][name]`` of every member is a view of ``flat[name]`` (from
    :meth:`install` on).  A member's ``p.data`` becomes the view of
    ``flat["param"]`` too (:meth:`adopt`) when nothing but ``p`` references
    its array, which is then dropped: nobody can observe that it stops being
    updated.  The other members' parameters are gathered into ``flat`` before
    the update and scattered back after it (:attr:`copied`); so is a member
    whose ``.data`` was replaced after it became a view.  Gradients are always
    gathered.  The pack is rebuilt (its only allocation) when the members or
    their state arrays are not the ones it holds: after ``load_state_dict``, a
    change of flags, or a changed set of parameters with gradients.
    """

    def __init__(self, params: Sequence[Any], states: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
        dtype = params[0].data.dtype
        total = sum(p.data.size for p in params)
        self.params = list(params)
        self.names = tuple(names)
        self.flat = {name: np.empty(total, dtype) for name in ("param", "grad", *names)}
        self.views: dict[str, list[NDArray[Any]]] = {}
        for name, flat in self.flat.items():
            offsets = np.cumsum([0] + [p.data.size for p in params])
            self.views[name] = [flat[o : o + p.data.size].reshape(p.data.shape) for o, p in zip(offsets, params)]
        for name in names:
            for state, view in zip(states, self.views[name]):
                np.copyto(view, state[name])  # the values; the state arrays are replaced by install()
        _PACK_STORAGE[id(self.flat["param"])] = self.flat["param"]
        #: Indices of the members whose ``p.data`` is not their view of ``flat["param"]``.
        self.copied: list[int] = list(range(len(params)))

    def install(self, states: Sequence[dict[str, Any]]) -> None:
        """Make the members' state arrays the views of the flat storage (which holds their values)."""
        for name in self.names:
            for state, view in zip(states, self.views[name]):
                state[name] = view

    def adopt(self) -> None:
        """Make ``p.data`` the view of ``flat["param"]``, with its values, where ``p`` alone holds its array.

        A member whose array anyone else references (a variable, a list, an
        autograd graph, a gradient that is the same array) keeps it, and is
        gathered and scattered instead: the view never silently orphans an
        array that someone can still read.  Updates :attr:`copied`.
        """
        copied = []
        for i, (p, view) in enumerate(zip(self.params, self.views["param"])):
            if p.data is view:
                continue
            if _adoptable(p, view):
                np.copyto(view, p.data)
                p.data = view
            else:
                copied.append(i)
        self.copied = copied

    def matches(self, params: Sequence[Any], states: Sequence[dict[str, Any]], names: Sequence[str]) -> bool:
        if tuple(names) != self.names or len(params) != len(self.params):
            return False
        if any(a is not b for a, b in zip(params, self.params)):
            return False
        return all(state[name] is view for name in names for state, view in zip(states, self.views[name]))

    def gather_grads(self, grads: Sequence[NDArray[Any]]) -> None:
        """Copy the gradients into ``flat["grad"]`` (private storage: nothing visible changes)."""
        np.concatenate(grads, axis=None, out=self.flat["grad"])

    def gather(self) -> None:
        """Copy the :attr:`copied` members' parameters into ``flat["param"]``."""
        if len(self.copied) == len(self.params):  # none adopted: one call
            np.concatenate([p.data for p in self.params], axis=None, out=self.flat["param"])
            return
        views = self.views["param"]
        for i in self.copied:
            np.copyto(views[i], self.params[i].data)

    def scatter(self) -> None:
        """Copy the :attr:`copied` members' new values back into their parameters."""
        views = self.views["param"]
        for i in self.copied:
            np.copyto(self.params[i].data, views[i])

    def arrays(self) -> tuple[Any, ...]:
        f = self.flat
        return (f["param"], f["grad"], f["square_avg"], f.get("grad_avg"), f.get("momentum_buffer"))


_GRAD = attrgetter("grad")
_DATA = attrgetter("data")
_SHAPE = attrgetter("shape")
_DTYPE = attrgetter("dtype")
_WRITEABLE = attrgetter("flags.writeable")
_STEP = itemgetter("step")


def _same(objects: Sequence[Any], recorded: Sequence[Any]) -> bool:
    """Whether ``objects`` are ``recorded``, element by element (``is``: no ``__eq__`` is called)."""
    return len(objects) == len(recorded) and all(map(is_, objects, recorded))


@dataclass
class _Plan:
    """A committed step in which every parameter with a gradient went to a flat pack (or was empty).

    What :meth:`FastStep.replay` compares the next step with, as lists over
    the parameters with a gradient, in group order ("members").  Objects are
    compared by identity (``is``, element by element: :func:`_same`), never by
    ``==``, which a parameter may define elementwise.
    """

    group_sizes: list[int]  # len(group["params"]) per group
    names: list[tuple[str, ...]]  # per group: the buffers its flags use
    params: list[Any]  # every parameter, with a gradient or not
    grad_types: list[type]  # np.ndarray where the parameter had a gradient, NoneType where not
    with_grad: list[int] | None  # indices of the members among all parameters; None: all of them
    members: list[Any]
    datas: list[NDArray[Any]]  # member.data (its pack's view, once adopted)
    shapes: list[tuple[int, ...]]
    dtypes: list[np.dtype[Any]]
    entries: list[dict[str, Any]]  # state[member]
    entry_sizes: list[int]  # len(entry): "step" and the buffers its group uses, no other keys
    floats: list[type]  # [float] * len(members): the type each entry's "step" must have
    #: per group and buffer name: (first, last + 1 member of the group, name, the buffers)
    buffers: list[tuple[int, int, str, list[NDArray[Any]]]]
    #: per pack: (pack, group index, dtype, its members as a slice (first, last + 1) or a list of indices)
    packs: list[tuple[_FlatPack, int, np.dtype[Any], tuple[int, int] | list[int]]]


def _run_blocks(segments: Sequence[tuple[_Job, int, int]], scratch: dict[np.dtype[Any], _Scratch]) -> None:
    """Update each ``(job, lo, hi)`` element range, one cache-sized block at a time."""
    with np.errstate(all="ignore"):  # NaN and Inf propagate silently, as in the reference
        for job, lo, hi in segments:
            block, sc = BLOCK[job.dtype], scratch[job.dtype]
            for start in range(lo, hi, block):
                stop = min(start + block, hi)
                p, g, sq, ga, buf = (None if x is None else x[start:stop] for x in job.arrays)
                _update_block(p, g, sq, ga, buf, job.hyper, sc.first(stop - start))


def _run_kernel(kernel: Callable[..., None], segments: Sequence[tuple[_Job, int, int]]) -> None:
    """Update each ``(job, lo, hi)`` element range with the compiled kernel, in one pass (no scratch)."""
    for job, lo, hi in segments:
        run_kernel(kernel, *(None if x is None else x[lo:hi] for x in job.arrays), job.hyper)


def _split_among(jobs: Sequence[_Job], threads: int) -> list[list[tuple[_Job, int, int]]]:
    """Cut the jobs' elements, taken in order, into ``threads`` runs of about equal length."""
    total = sum(job.size for job in jobs)
    runs: list[list[tuple[_Job, int, int]]] = [[] for _ in range(threads)]
    offset = 0
    for job in jobs:
        for k in range(threads):
            lo = max(k * total // threads - offset, 0)
            hi = min((k + 1) * total // threads - offset, job.size)
            if lo < hi:
                runs[k].append((job, lo, hi))
        offset += job.size
    return runs


class FastStep:
    """The fast step for one optimizer: its flat packs and each thread's scratch."""

    def __init__(self) -> None:
        self._packs: dict[tuple[Any, np.dtype[Any]], _FlatPack] = {}
        self._scratch: list[dict[np.dtype[Any], _Scratch]] = []
        self._plan: _Plan | None = None

    def _scratch_for(self, threads: int, dtypes: set[np.dtype[Any]]) -> list[dict[np.dtype[Any], _Scratch]]:
        while len(self._scratch) < threads:
            self._scratch.append({})
        for per_thread in self._scratch[:threads]:
            for dtype in dtypes:
                if dtype not in per_thread:
                    per_thread[dtype] = _Scratch(dtype, BLOCK[dtype])
        return self._scratch[:threads]

    def prepare(
        self,
        work: Sequence[tuple[Any, dict[str, Any], Any, NDArray[Any], dict[str, Any]]],
        num_threads: int,
        kernel: Callable[..., None] | None = None,
    ) -> Callable[[], None]:
        """Allocate what updating ``work`` needs; return the update, which allocates nothing in proportion.

        ``work`` holds ``(key, group, param, grad, state)``: ``key`` names the
        parameter's group from one step to the next (its flat packs are kept
        under it), ``group`` holds the hyperparameters, ``state`` the buffers
        the update is to use and write (``state["step"]`` is the caller's).
        Nothing visible is written here: scratch, flat packs, copies of
        gradients that share memory with what is written, and the reference
        path's new values are made, so a ``MemoryError`` changes nothing.

        Small real parameters go to their group's flat pack (gathering copes with
        any strides); large contiguous ones are updated where they lie; complex
        and large strided ones by :func:`rmsprop_writes` (computed here, copied
        by the update).  With ``kernel`` (the compiled step of
        :mod:`lucid.optim._kernel_numba`) the blocks are one kernel call per
        thread's run instead, and no scratch is needed.
        """
        jobs: list[_Job] = []
        writes: Writes = []
        small: dict[tuple[Any, np.dtype[Any]], tuple[dict[str, Any], list[Any], list[Any], list[Any]]] = {}
        for key, group, param, grad, state in work:
            data = param.data
            if data.dtype in BLOCK:
                if data.size < SMALL:
                    if data.size:
                        members = small.setdefault((key, data.dtype), (group, [], [], []))
                        members[1].append(param)
                        members[2].append(grad)
                        members[3].append(state)
                    continue
                ga = state["grad_avg"] if group["centered"] else None
                buf = state["momentum_buffer"] if group["momentum"] > 0 else None
                written = (data, state["square_avg"], ga, buf)
                if all(x is None or x.flags.c_contiguous for x in (*written, grad)):
                    if any(x is not None and np.may_share_memory(grad, x) for x in written):
                        grad = grad.copy()  # the blocks write what it views: read it as it was at the call
                    arrays = (data, grad, *written[1:])
                    flat = tuple(None if x is None else x.reshape(-1) for x in arrays)  # views
                    jobs.append(_Job(flat, _Hyper.of(group, data.dtype)))  # type: ignore[arg-type]
                    continue
            writes += rmsprop_writes(  # complex or large and strided: the reference itself
                data,
                grad,
                state["square_avg"],
                state.get("grad_avg") if group["centered"] else None,
                state.get("momentum_buffer") if group["momentum"] > 0 else None,
                lr=group["lr"],
                alpha=group["alpha"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                centered=group["centered"],
                maximize=group["maximize"],
            )

        packs = []
        for key, (group, params, grads, states) in small.items():
            names = _names(group)
            pack = self._packs.get(key)
            fresh = pack is None or not pack.matches(params, states, names)
            if fresh:
                pack = _FlatPack(params, states, names)
            assert pack is not None
            packs.append((key, pack, fresh, grads, states))
            jobs.append(_Job(pack.arrays(), _Hyper.of(group, key[1])))
        workers = self._workers(jobs, num_threads, kernel)
        self._plan = None  # until the commit records the new one
        replayable = not writes and len(jobs) == len(packs)
        return partial(self._commit, writes, packs, jobs, workers, replayable)

    def _workers(
        self, jobs: Sequence[_Job], num_threads: int, kernel: Callable[..., None] | None
    ) -> list[Callable[[Sequence[tuple[_Job, int, int]]], None]]:
        """One runner per thread the jobs are worth: the kernel's, or the NumPy blocks' with their scratch."""
        if kernel is not None:
            nbytes = sum(job.size * job.dtype.itemsize for job in jobs)
            return [partial(_run_kernel, kernel)] * (num_threads if nbytes >= KERNEL_PARALLEL_MIN_BYTES else 1)
        threads = num_threads if sum(job.size for job in jobs) >= PARALLEL_MIN else 1
        scratch = self._scratch_for(threads, {job.dtype for job in jobs}) if jobs else []
        return [partial(_run_blocks, scratch=sc) for sc in scratch]

    def _commit(
        self,
        writes: Writes,
        packs: Sequence[tuple[Any, _FlatPack, bool, list[Any], list[Any]]],
        jobs: Sequence[_Job],
        workers: Sequence[Callable[[Sequence[tuple[_Job, int, int]]], None]],
        replayable: bool,
    ) -> None:
        """Run the update :meth:`prepare` returned: copy the reference path's values, then run the blocks."""
        for array, value in writes:
            np.copyto(array, value)
        used = {key for key, *_ in packs}
        for key in [k for k in self._packs if k not in used]:
            del self._packs[key]  # unused this step: its views stay valid as state, the storage is theirs
        for key, pack, fresh, grads, states in packs:
            if fresh:
                pack.install(states)
                self._packs[key] = pack  # first, so that the old pack's views no longer count as holders
            pack.adopt()
            pack.gather_grads(grads)
            pack.gather()
        self._run(jobs, workers)
        for _, pack, *_ in packs:
            pack.scatter()
        self._replayable = replayable

    def record(self, groups: Sequence[dict[str, Any]], state: dict[Any, dict[str, Any]]) -> None:
        """After a committed step of :meth:`prepare`'s: remember it for :meth:`replay`, if every gradient was packed.

        ``groups`` are the optimizer's param groups as the step read them.
        """
        self._plan = None
        if not self.__dict__.pop("_replayable", False):
            return
        params = list(chain.from_iterable(group["params"] for group in groups))
        grad_types = [type(p.grad) for p in params]
        with_grad = [i for i, t in enumerate(grad_types) if t is not type(None)]
        members = [params[i] for i in with_grad]
        entries = [state[p] for p in members]
        position = {id(p): i for i, p in enumerate(members)}
        buffers = []
        lo = 0
        for group in groups:
            hi = lo + sum(p.grad is not None for p in group["params"])
            for name in _names(group) if hi > lo else ():
                buffers.append((lo, hi, name, [entry[name] for entry in entries[lo:hi]]))
            lo = hi
        packs: list[tuple[_FlatPack, int, np.dtype[Any], tuple[int, int] | list[int]]] = []
        for (gi, dtype), pack in self._packs.items():
            where = [position[id(p)] for p in pack.params]
            contiguous = where == list(range(where[0], where[0] + len(where)))
            packs.append((pack, gi, dtype, (where[0], where[0] + len(where)) if contiguous else where))
        datas = [p.data for p in members]
        self._plan = _Plan(
            group_sizes=[len(group["params"]) for group in groups],
            names=[_names(group) for group in groups],
            params=params,
            grad_types=grad_types,
            with_grad=None if len(with_grad) == len(params) else with_grad,
            members=members,
            datas=datas,
            shapes=[d.shape for d in datas],
            dtypes=[d.dtype for d in datas],
            entries=entries,
            entry_sizes=list(map(len, entries)),
            floats=[float] * len(members),
            buffers=buffers,
            packs=packs,
        )

    def replay(
        self,
        groups: Sequence[dict[str, Any]],
        hypers: Sequence[dict[str, Any]],
        state: dict[Any, dict[str, Any]],
        num_threads: int,
        kernel: Callable[..., None] | None,
    ) -> tuple[list[dict[str, Any]], Callable[[], None]] | None:
        """Prepare the recorded step again where nothing it relied on changed; None where anything did.

        ``hypers`` are the groups' checked hyperparameters.  The checks are
        those of a full step, cut to what can change while the identities hold:
        the groups hold the recorded parameters, the same ones with a gradient;
        each has the same ``.data`` array, of the same shape and dtype and
        still writable, and an ndarray gradient of that shape and dtype; its
        state entry is the same dict with as many keys, a float ``step`` and
        the same buffers, still writable.  (The buffers are the packs' own
        views, made with the parameter's shape and dtype, or arrays the full
        step checked.)  Anything else sends the step the full way, which
        checks and refuses with its messages, or rebuilds the packs.

        The comparisons run over whole lists (``map`` with ``attrgetter`` and
        ``operator.is_``), not in a Python loop per parameter: with a thousand
        small parameters that loop, not the arithmetic, was most of the step.

        Returns
        -------
        (entries, update) or None
            The state entries whose ``step`` the commit increments, and the
            update, as :meth:`prepare` returns it.  Nothing visible is written
            here (the gradients are gathered into the packs' private storage).
        """
        plan = self.__dict__.get("_plan")
        if plan is None or [len(g["params"]) for g in groups] != plan.group_sizes:
            return None
        if [_names(h) for h in hypers] != plan.names:
            return None
        params = list(chain.from_iterable(g["params"] for g in groups))
        if not _same(params, plan.params):
            return None
        grads = list(map(_GRAD, params))
        if list(map(type, grads)) != plan.grad_types:  # exactly ndarray where there was a gradient, None elsewhere
            return None
        if plan.with_grad is not None:
            params = [params[i] for i in plan.with_grad]
            grads = [grads[i] for i in plan.with_grad]
        datas = list(map(_DATA, params))
        entries = list(map(state.get, params))
        if not (
            _same(datas, plan.datas)
            and list(map(_SHAPE, datas)) == plan.shapes == list(map(_SHAPE, grads))
            and list(map(_DTYPE, datas)) == plan.dtypes == list(map(_DTYPE, grads))
            and all(map(_WRITEABLE, datas))
            and _same(entries, plan.entries)
            and list(map(len, entries)) == plan.entry_sizes
        ):
            return None
        try:  # a missing key is a change like any other
            if list(map(type, map(_STEP, entries))) != plan.floats:
                return None
            for lo, hi, name, arrays in plan.buffers:
                if not (_same(list(map(itemgetter(name), entries[lo:hi])), arrays) and all(map(_WRITEABLE, arrays))):
                    return None
        except KeyError:
            return None
        jobs = []
        for pack, gi, dtype, where in plan.packs:
            pack.gather_grads(grads[where[0] : where[1]] if isinstance(where, tuple) else [grads[i] for i in where])
            jobs.append(_Job(pack.arrays(), _Hyper.of(hypers[gi], dtype)))
        workers = self._workers(jobs, num_threads, kernel)
        return entries, partial(self._commit_replay, [pack for pack, *_ in plan.packs], jobs, workers)

    def _commit_replay(
        self,
        packs: Sequence[_FlatPack],
        jobs: Sequence[_Job],
        workers: Sequence[Callable[[Sequence[tuple[_Job, int, int]]], None]],
    ) -> None:
        """Run the update :meth:`replay` returned: gather what is copied, run, scatter it back."""
        for pack in packs:
            pack.gather()
        self._run(jobs, workers)
        for pack in packs:
            pack.scatter()

    def _run(self, jobs: Sequence[_Job], workers: Sequence[Callable[[Sequence[tuple[_Job, int, int]]], None]]) -> None:
        """Share the jobs' elements among ``len(workers)`` threads, the calling one included."""
        if not jobs:
            return
        runs = _split_among(jobs, len(workers))
        futures = [_pool(len(workers) - 1).submit(work, run) for run, work in zip(runs[1:], workers[1:])]
        try:
            workers[0](runs[0])  # the calling thread takes the first run
        finally:
            wait(futures)  # no thread still writes once this returns, even after an error
        for future in futures:
            future.result()
