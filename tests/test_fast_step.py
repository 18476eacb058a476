"""The fast step (lucid/optim/_fast.py) gives the reference step's bits, and keeps the state's semantics.

The reference is :func:`lucid.optim.functional.rmsprop_update`, run here on
copies of the same arrays.  Equality is bitwise (arrays compared as unsigned
integers, so NaN payloads and signed zeros count too): no tolerance.
"""

from __future__ import annotations

import itertools
import os
import select
import signal
import subprocess
import sys
import tracemalloc
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from lucid._fma import fma as reference_fma
from lucid.nn import Parameter
from lucid.optim import RMSprop, _fast
from lucid.optim.functional import rmsprop_update

DTYPES = (np.float32, np.float64)
FLAGS = list(itertools.product([False, True], [0.0, 0.9], [0.0, 0.1], [False, True]))
FLAG_IDS = [f"c{int(c)}-m{int(m > 0)}-wd{int(w > 0)}-max{int(x)}" for c, m, w, x in FLAGS]


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint32 if x.dtype == np.float32 else np.uint64)


def assert_bitwise_equal(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Every non-NaN element bit for bit (signed zeros included); NaN exactly where the reference has NaN.

    A NaN's sign and payload are not a function of the element's inputs in NumPy: when
    both operands of ``np.add`` or ``np.multiply`` are NaN, which one propagates depends
    on the element's position in the array (vector body or tail of the loop).  Measured
    with NumPy 2.4 on AVX-512: ``np.add(+NaN, -NaN)`` over 1000 float32 elements gives
    +NaN at the start and -NaN in the last elements.  So the reference itself, run on
    a slice instead of the whole array, can change a NaN's sign; any blocked step can.
    """
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan, err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(_bits(actual)[~nan], _bits(expected)[~nan], err_msg=what)


# shapes: 0-d, empty, tiny odd, just below and above the small-parameter cut, several blocks plus a
# remainder, and one large enough to be shared among threads (> PARALLEL_MIN elements in the step)
SHAPES = [
    (),
    (0,),
    (3, 0),
    (1,),
    (7,),
    (37, 53),
    (_fast.SMALL - 1,),
    (_fast.SMALL + 3,),
    (2 * _fast.BLOCK[np.dtype(np.float32)] + 17,),
]
LARGE = (_fast.PARALLEL_MIN + 4099,)


def _values(rng: np.random.Generator, shape: tuple[int, ...], dtype: type, special: bool) -> np.ndarray:
    """Normal values over scales 1e-20..1e20 (per element), with NaN, +-Inf, zeros and subnormals mixed in."""
    x = rng.standard_normal(shape) * 10.0 ** rng.integers(-20, 21, shape)
    x = np.asarray(x, dtype)
    if special and x.size:
        flat = x.reshape(-1)
        picks = rng.choice(flat.size, size=max(1, flat.size // 50), replace=True)
        flat[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-44, 1e-310], dtype), picks.size)
    return x


def _reference_run(params0, grads_per_step, hyper, lrs):
    params = [p.copy() for p in params0]
    state = [{"sq": np.zeros_like(p), "ga": np.zeros_like(p), "buf": np.zeros_like(p)} for p in params]
    for grads, lr in zip(grads_per_step, lrs):
        for p, g, st in zip(params, grads, state):
            if g is None:
                continue
            rmsprop_update(
                p,
                g,
                st["sq"],
                st["ga"] if hyper["centered"] else None,
                st["buf"] if hyper["momentum"] > 0 else None,
                lr=lr,
                **hyper,
            )
    return params, state


def _lucid_run(params0, grads_per_step, hyper, lrs, num_threads=2, non_contiguous=()):
    params = []
    for i, p0 in enumerate(params0):
        p = Parameter(p0.copy())
        if i in non_contiguous:  # the same values, in a strided view
            holder = np.empty((*p0.shape, 2), p0.dtype)
            holder[..., 0] = p0
            p.data = holder[..., 0]
        params.append(p)
    opt = RMSprop(params, lr=lrs[0], alpha=0.9, **{k: v for k, v in hyper.items() if k not in ("alpha", "eps")})
    opt.num_threads = num_threads
    for grads, lr in zip(grads_per_step, lrs):
        opt.param_groups[0]["lr"] = lr
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.copy()
        opt.step()
    return params, opt


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("centered", "momentum", "weight_decay", "maximize"), FLAGS, ids=FLAG_IDS)
def test_fast_step_equals_reference_bitwise(centered, momentum, weight_decay, maximize, dtype) -> None:
    rng = np.random.default_rng(hash((centered, momentum, weight_decay, maximize)) % 2**32)
    shapes = SHAPES + [(11,)] * 150 + [LARGE]  # many small parameters and one large
    special = [i % 3 == 0 for i in range(len(shapes))]  # NaN/Inf in every third parameter
    params0 = [_values(rng, s, dtype, sp) for s, sp in zip(shapes, special)]
    steps = 3
    grads = []
    for step in range(steps):
        gs = [_values(rng, s, dtype, sp) for s, sp in zip(shapes, special)]
        if step == 1:
            gs[4] = None  # a parameter without a gradient on one step is skipped
            gs[len(SHAPES) + 5] = None
        grads.append(gs)
    grads[1][5] = np.asfortranarray(grads[1][5])  # a non-contiguous (Fortran-order) gradient
    hyper = dict(
        alpha=0.9, eps=1e-8, weight_decay=weight_decay, momentum=momentum, centered=centered, maximize=maximize
    )
    lrs = [1e-2, 1e-2, 3e-3]  # lr changes between steps
    expected, ref_state = _reference_run(params0, grads, hyper, lrs)
    params, opt = _lucid_run(params0, grads, hyper, lrs, non_contiguous={6})
    assert not params[6].data.flags.c_contiguous
    for i, (p, e, st) in enumerate(zip(params, expected, ref_state)):
        assert_bitwise_equal(p.data, e, f"param {i} {p.shape}")
        state = opt.state[p]
        assert_bitwise_equal(state["square_avg"], st["sq"], f"square_avg {i}")
        if centered:
            assert_bitwise_equal(state["grad_avg"], st["ga"], f"grad_avg {i}")
        if momentum:
            assert_bitwise_equal(state["momentum_buffer"], st["buf"], f"momentum_buffer {i}")
        assert state["step"] == (steps - 1 if i in (4, len(SHAPES) + 5) else steps)


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128], ids=lambda d: np.dtype(d).name)
def test_complex_parameters_beside_real_ones_take_the_reference(dtype) -> None:
    rng = np.random.default_rng(4)
    real = np.float32 if dtype == np.complex64 else np.float64
    shapes = [(5,), (3, 4), (_fast.SMALL + 7,)]
    values = [(rng.standard_normal(s) + 1j * rng.standard_normal(s)).astype(dtype) for s in shapes]
    values += [rng.standard_normal(s).astype(real) for s in shapes]
    grads = [[(rng.standard_normal(v.shape) * (1 + 1j if v.dtype.kind == "c" else 1)).astype(v.dtype) for v in values]]
    hyper = dict(alpha=0.9, eps=1e-8, weight_decay=0.1, momentum=0.5, centered=True, maximize=True)
    expected, _ = _reference_run(values, grads, hyper, [1e-2])
    params, _ = _lucid_run(values, grads, hyper, [1e-2])
    for i, (p, e) in enumerate(zip(params, expected)):
        assert_bitwise_equal(p.data.view(real), e.view(real), f"param {i} {p.dtype}")


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_thread_count_does_not_change_bits(threads: int) -> None:
    dtype = np.float32
    rng = np.random.default_rng(1)
    params0 = [_values(rng, LARGE, dtype, False), _values(rng, (999,), dtype, False)]
    grads = [[_values(rng, p.shape, dtype, False) for p in params0] for _ in range(2)]
    hyper = dict(alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.5, centered=True, maximize=False)
    expected, _ = _reference_run(params0, grads, hyper, [1e-2, 1e-2])
    params, _ = _lucid_run(params0, grads, hyper, [1e-2, 1e-2], num_threads=threads)
    for p, e in zip(params, expected):
        assert_bitwise_equal(p.data, e, f"threads={threads}")


def _midpoint_cases(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 ``a, b, c`` whose float64 sum ``a*b + c`` rounds onto a float32 midpoint, inexactly.

    ``a*b = h (1 - k^2 2^-46)`` with ``h`` half an ulp of ``c``: the float64 sum
    rounds to ``c + h`` (a midpoint) and the dropped ``-h k^2 2^-46`` decides the
    float32 rounding, which a plain float64 round trip gets wrong half the time.
    Also the same below float32's normal range (``c`` subnormal).
    """
    k = rng.integers(1, 64, n).astype(np.float64)
    c = rng.uniform(1, 2, n).astype(np.float32) * np.float32(2.0) ** rng.integers(-100, 100, n).astype(np.float32)
    sub = rng.random(n) < 0.25
    c[sub] = (rng.integers(1, 2**20, sub.sum()) * 2.0**-149).astype(np.float32)
    half_ulp = np.spacing(np.abs(c)).astype(np.float64) / 2
    root = np.sqrt(half_ulp)
    sign = rng.choice([-1.0, 1.0], n)
    a = (root * (1 + k * 2.0**-23)).astype(np.float32)
    b = (sign * root * (1 - k * 2.0**-23)).astype(np.float32)
    return a, b, c


@pytest.mark.parametrize("chunk", [8, 20000], ids=["few-per-block", "many-per-block"])
@pytest.mark.parametrize("out_alias", ["none", "a", "c"])
def test_fma32_mask_finds_every_rounding_to_odd_case(out_alias: str, chunk: int) -> None:
    rng = np.random.default_rng(7)
    a, b, c = _midpoint_cases(rng, 20000)
    naive = (a.astype(np.float64) * b + c).astype(np.float32)
    expected = reference_fma(a, b, c)
    # the cases are real: a plain float64 round trip differs from the reference on many of them
    assert np.count_nonzero(_bits(naive) != _bits(expected)) > 1000
    scratch = _fast._Scratch(np.dtype(np.float32), chunk)
    out = {"none": np.empty_like(a), "a": a.copy(), "c": c.copy()}[out_alias]
    for lo in range(0, a.size, chunk):  # chunk 8 <= _FEW: the Python-float fix; 20000: the reference's
        part = slice(lo, lo + chunk)
        args = (out[part] if out_alias == "a" else a[part], b[part], out[part] if out_alias == "c" else c[part])
        _fast._fma32_into(out[part], *args, scratch)
    assert_bitwise_equal(out, expected, "fma32")


@pytest.mark.parametrize("chunk", [8, 20000], ids=["few-per-block", "many-per-block"])
def test_fms_square32_rounds_to_odd_where_the_reference_does(chunk: int) -> None:
    """``fma(-x, x, c)`` (centered mode) on ``x*x`` with 25 significant bits: a float32 midpoint.

    ``x`` is an odd 13-bit integer times a power of two, so ``x*x`` is exactly
    halfway between two float32 numbers; ``c`` is non-zero and below half a
    float64 ulp of ``x*x``, so the float64 sum rounds back onto the midpoint and
    only rounding to odd knows which side ``c`` was on.
    """
    rng = np.random.default_rng(11)
    n = 20000
    x = (rng.integers(2**12, 2**13, n) | 1) * 2.0 ** rng.integers(-40, 40, n)
    sq = x * x
    c = rng.choice([-1.0, 1.0], n) * np.spacing(sq) * rng.uniform(0.01, 0.49, n)
    x, c = x.astype(np.float32), c.astype(np.float32)
    nonzero = c != 0
    x, c = x[nonzero], c[nonzero]
    expected = reference_fma(-x, x, c)
    naive = (c.astype(np.float64) - x.astype(np.float64) ** 2).astype(np.float32)
    assert np.count_nonzero(_bits(naive) != _bits(expected)) > 1000  # the cases are real (4079 here)
    scratch = _fast._Scratch(np.dtype(np.float32), chunk)
    out = np.empty_like(x)
    for lo in range(0, x.size, chunk):
        part = slice(lo, lo + chunk)
        _fast._fms_square32_into(out[part], x[part], c[part], scratch)
    assert_bitwise_equal(out, expected, "fms_square32")


def _odd_remainder_cases(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``a, b, c`` whose TwoSum remainder ``v`` is odd and inexact, just below half an ulp of an odd ``c``.

    ``a*b`` lies in ``(2**-53 - 2**-106, 2**-53 - 2**-106 + 2**-107)``: it rounds to
    ``uh = 2**-53 - 2**-106`` (odd) with a positive ``ul``, ``c + uh`` rounds back to
    ``c = 1 + 2**-52``, so ``v = RN(uh + ul) = uh`` is odd and inexact.  Round to odd
    keeps it (``c + v`` is below the midpoint: ``c``); moving it to its even neighbour
    ``2**-53`` would make ``c + v`` a tie, rounded to even: ``c + 2**-51``.
    """
    low = Fraction(2) ** -53 - Fraction(2) ** -106
    a_list, b_list = [], []
    while len(a_list) < n:
        a = 1.0 + float(rng.integers(1, 2**52)) * 2.0**-52
        b = float((low + Fraction(2) ** -108) / Fraction(a))
        if low < Fraction(a) * Fraction(b) < low + Fraction(2) ** -107:
            a_list.append(a)
            b_list.append(b)
    return np.array(a_list), np.array(b_list), np.full(n, 1.0 + 2.0**-52)


def test_fma64_keeps_an_odd_inexact_remainder() -> None:
    a, b, c = _odd_remainder_cases(np.random.default_rng(2), 64)
    expected = reference_fma(a, b, c)
    assert np.all(expected == c)  # the exact sum is below the midpoint
    out = np.empty_like(a)
    _fast._fma64_into(out, a, b, c, _fast._Scratch(np.dtype(np.float64), a.size))
    assert_bitwise_equal(out, expected, "fma64 with odd inexact remainders")


def test_fma_into_matches_reference_on_special_values() -> None:
    for dtype, into in ((np.float32, _fast._fma32_into), (np.float64, _fast._fma64_into)):
        fi = np.finfo(dtype)
        big, small = np.sqrt(fi.max), np.sqrt(fi.tiny)  # products that overflow or underflow
        vals = np.array(
            [
                0.0,
                -0.0,
                1.0,
                -1.0,
                2.5,
                fi.max,
                -fi.max,
                fi.tiny,
                fi.smallest_subnormal,
                big,
                small,
                np.inf,
                -np.inf,
                np.nan,
            ],
            dtype,
        )
        a, b, c = (x.reshape(-1) for x in np.meshgrid(vals, vals, vals, indexing="ij"))
        out = np.empty_like(a)
        with np.errstate(all="ignore"):
            into(out, a, b, c, _fast._Scratch(np.dtype(dtype), a.size))
            expected = reference_fma(a, b, c)
        assert_bitwise_equal(out, expected, np.dtype(dtype).name)


@pytest.mark.usefixtures("accelerator")
def test_state_is_arrays_of_the_parameter_shape_and_survives_a_state_dict_round_trip() -> None:
    rng = np.random.default_rng(3)
    shapes = [(5, 3), (), (40,), (_fast.SMALL + 1,)]
    params = [Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]
    opt = RMSprop(params, lr=1e-2, momentum=0.9, centered=True)
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(np.float32)
    opt.step()
    for p in params:
        for key in ("square_avg", "grad_avg", "momentum_buffer"):
            value = opt.state[p][key]
            assert isinstance(value, np.ndarray) and value.shape == p.shape and value.dtype == p.dtype
    saved = opt.state_dict()
    twin_params = [Parameter(p.data.copy()) for p in params]
    twin = RMSprop(twin_params, lr=1e-2, momentum=0.9, centered=True)
    twin.load_state_dict(saved)
    for p, q in zip(params, twin_params):
        p.grad = q.grad = rng.standard_normal(p.shape).astype(np.float32)
    held = opt.state[params[0]]["square_avg"]
    opt.step()
    twin.step()
    assert held is opt.state[params[0]]["square_avg"]  # steady state: the same arrays, updated in place
    for p, q in zip(params, twin_params):
        assert_bitwise_equal(q.data, p.data, "after load_state_dict")
        assert_bitwise_equal(twin.state[q]["square_avg"], opt.state[p]["square_avg"], "state after load")
    # the saved copy did not move with the later step
    assert not np.array_equal(saved["state"][0]["square_avg"], opt.state[params[0]]["square_avg"])


@pytest.mark.usefixtures("accelerator")
def test_refused_step_changes_nothing_in_a_flat_pack() -> None:
    params = [Parameter(np.arange(4, dtype=np.float32) + i) for i in range(3)]
    opt = RMSprop(params, lr=0.1)
    for p in params:
        p.grad = np.ones(4, np.float32)
    opt.step()
    before = [p.data.copy() for p in params], [opt.state[p]["square_avg"].copy() for p in params]
    params[2].grad = np.ones(5, np.float32)  # wrong shape: refused
    with pytest.raises(ValueError, match="shape"):
        opt.step()
    for p, data, sq in zip(params, *before):
        assert_bitwise_equal(p.data, data, "param")
        assert_bitwise_equal(opt.state[p]["square_avg"], sq, "state")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_bad_thread_count_is_refused_by_name(bad) -> None:
    opt = RMSprop([Parameter([1.0])])
    opt.num_threads = bad
    opt.param_groups[0]["params"][0].grad = np.ones(1, np.float32)
    with pytest.raises(ValueError, match="num_threads"):
        opt.step()
    assert opt.param_groups[0]["params"][0].data[0] == 1.0 and not opt.state


def test_thread_count_from_environment(monkeypatch) -> None:
    monkeypatch.setenv(_fast.THREADS_ENV, "3")
    assert _fast.resolve_num_threads(None) == 3
    assert _fast.resolve_num_threads(1) == 1  # the attribute wins over the environment
    monkeypatch.setenv(_fast.THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=_fast.THREADS_ENV):
        _fast.resolve_num_threads(None)
    monkeypatch.delenv(_fast.THREADS_ENV)
    assert 1 <= _fast.resolve_num_threads(None) <= _fast.MAX_DEFAULT_THREADS


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize("size", [1 << 22, 1 << 23], ids=["4Mi-elements", "8Mi-elements"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_steady_state_step_allocates_only_fixed_scratch(dtype, size) -> None:
    """tracemalloc sees NumPy's data buffers; a warmed-up step must not allocate in proportion to the model."""
    rng = np.random.default_rng(5)
    params = [Parameter(rng.standard_normal(size).astype(dtype))]
    params += [Parameter(rng.standard_normal(100).astype(dtype)) for _ in range(100)]
    opt = RMSprop(params, lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-4)
    opt.num_threads = 2
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(dtype)
    opt.step()  # warm-up: scratch and flat storage are allocated here
    tracemalloc.start()
    try:
        opt.step()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The bound does not grow with the model: per thread, the rounding-to-odd check may
    # gather one block's candidates (a bool mask, int64 indices, their bits and masked
    # bits, float64 values and their magnitudes, three more bool masks: under 48 bytes
    # per element of one block; float64's blocks are half as long), plus 64 KiB of
    # Python objects (views, per-parameter lists for 101 parameters; measured 20-46 KiB).
    bound = 2 * 48 * _fast.BLOCK[np.dtype(np.float32)] + 64 * 1024
    assert peak < bound < sum(p.data.nbytes for p in params) / 2, peak


@pytest.mark.usefixtures("accelerator")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_threaded_step_works_in_a_forked_child() -> None:
    """The thread pool is per process: a child forked after a threaded step must not wait on its parent's threads."""
    rng = np.random.default_rng(2)
    p = Parameter(rng.standard_normal(LARGE).astype(np.float32))
    opt = RMSprop([p], lr=1e-2)
    opt.num_threads = 2
    p.grad = rng.standard_normal(LARGE).astype(np.float32)
    opt.step()  # the parent's pool exists now
    expected = p.data.copy()
    rmsprop_update(
        expected,
        p.grad,
        opt.state[p]["square_avg"].copy(),
        None,
        None,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        maximize=False,
    )
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Python 3.12+: fork() of a multi-threaded process
        pid = os.fork()
    if pid == 0:  # the child: step with 2 threads, report whether the bits are the reference's
        code = b"2"
        try:
            opt.step()
            code = b"0" if np.array_equal(_bits(p.data), _bits(expected)) else b"1"
        finally:
            os.write(write_end, code)
            os._exit(0)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], 60)
    answer = os.read(read_end, 1) if ready else b""
    os.close(read_end)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert answer == b"0", (
        "no answer within 60 s: the child waited on threads it does not have" if not ready else answer
    )


def _quick_benchmark(module: str) -> str:
    """Run ``python -m module --quick`` on one thread from the repository root; return its output, which must exit 0."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--quick"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        env=dict(os.environ, LUCID_NUM_THREADS="1"),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_benchmark_quick_mode_runs() -> None:
    """The benchmark must keep working; its timings are not asserted (no timed assertions)."""
    out = _quick_benchmark("benchmarks.step")
    assert "16M" in out and "numpy/torch(foreach)" in out


def test_small_step_breakdown_quick_mode_prints_every_row() -> None:
    """The breakdown must time every quick small workload and flag set; its timings are not asserted."""
    lines = _quick_benchmark("benchmarks.small_step").splitlines()
    rows = [line for line in lines if line.startswith(("| 100 x 100", "| 30 x 1000"))]
    assert len(rows) == 8, lines  # 2 workloads x 4 flag sets
    header = next(line for line in lines if line.startswith("| workload"))
    assert all(line.count("|") == header.count("|") for line in rows), lines  # every column filled


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize(("centered", "momentum", "weight_decay", "maximize"), FLAGS, ids=FLAG_IDS)
def test_fast_step_equals_reference_where_float64_products_are_tiny(centered, momentum, weight_decay, maximize) -> None:
    """Gradients and parameters near 1e-160 and subnormal: their float64 products fall below the
    emulation's domain (``lucid._fma.TINY_PRODUCT``) and take the exact path, in both steps alike."""
    rng = np.random.default_rng(11)
    shapes = [(300,), (11,), LARGE]

    def tiny(shape: tuple[int, ...]) -> np.ndarray:
        x = rng.standard_normal(shape) * 10.0 ** rng.integers(-175, -150, shape)
        x[rng.random(shape) < 0.9] *= 1e150  # one element in ten stays tiny: bounded exact-path cost
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, flat.size // 20)] = rng.choice([0.0, -0.0, 5e-324, -1e-310], flat.size // 20)
        return x

    params0 = [tiny(s) for s in shapes]
    grads = [[tiny(s) for s in shapes] for _ in range(3)]
    hyper = dict(
        alpha=0.9, eps=1e-8, weight_decay=weight_decay, momentum=momentum, centered=centered, maximize=maximize
    )
    lrs = [1e-2, 1e-2, 3e-3]
    expected, ref_state = _reference_run(params0, grads, hyper, lrs)
    params, opt = _lucid_run(params0, grads, hyper, lrs)
    for i, (p, e, st) in enumerate(zip(params, expected, ref_state)):
        assert_bitwise_equal(p.data, e, f"param {i} {p.shape}")
        assert_bitwise_equal(opt.state[p]["square_avg"], st["sq"], f"square_avg {i}")
        if centered:
            assert_bitwise_equal(opt.state[p]["grad_avg"], st["ga"], f"grad_avg {i}")
        if momentum:
            assert_bitwise_equal(opt.state[p]["momentum_buffer"], st["buf"], f"momentum_buffer {i}")
