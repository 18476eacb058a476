"""A step is all or nothing: refused or failed before its first write, or complete.

Each test breaks a step at a point where the step used to have changed state
already (a step counter advanced, a first parameter moved): an unsupported
dtype beside a supported one, a MemoryError while the step allocates, SIGINT
in the middle of the update, a thread count nobody should ask for; and a
gradient sharing memory with what the step writes, which has to give the
result of a gradient that does not.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from support import same, trained

import lucid.optim.functional as functional
from lucid.nn import Parameter
from lucid.optim import RMSprop, _fast

SUPPORTED = "only float32, float64, complex64 and complex128"


def _grads(params: list[Parameter], seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    for p in params:
        values = rng.standard_normal(p.shape)
        if np.iscomplexobj(p.data):
            values = values + 1j * rng.standard_normal(p.shape)
        p.grad = values.astype(p.dtype)


def _mixed() -> list[Parameter]:
    """Small (flat-packed) and large (in place, threaded) parameters of both real dtypes."""
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (_fast.PARALLEL_MIN + 5,), (7,), (_fast.SMALL + 1,)]
    return [Parameter(rng.standard_normal(s).astype(d)) for s in shapes for d in (np.float32, np.float64)]


def _twin(params: list[Parameter], opt: RMSprop) -> tuple[list[Parameter], RMSprop]:
    """An independent optimizer in the same state, stepping the same gradients."""
    copies = [Parameter(p.data.copy()) for p in params]
    index = {id(p): i for i, p in enumerate(params)}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [copies[index[id(p)]] for p in g["params"]]}
              for g in opt.param_groups]  # fmt: skip
    twin = RMSprop(groups)
    for p, state in opt.state.items():  # as it is (a state_dict of a group just switched to momentum would not load)
        twin.state[copies[index[id(p)]]] = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in state.items()}
    for p, q in zip(params, copies):
        q.grad = None if p.grad is None else p.grad.copy()
    return copies, twin


def _fail_on_call(function: Callable[..., Any], n: int) -> Callable[..., Any]:
    """``function``, except that its ``n``-th call raises MemoryError."""
    calls = [0]

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n:
            raise MemoryError(f"simulated: call {n} of {function.__name__}")
        return function(*args, **kwargs)

    return failing


# ------------------------------------------------------------ dtypes the step cannot compute
@pytest.mark.parametrize("dtype", [np.float16, np.longdouble, np.clongdouble], ids=lambda d: np.dtype(d).name)
def test_unsupported_dtype_beside_a_supported_one_is_refused_up_front(dtype, tally) -> None:
    """float16 used to be accepted and then fail inside the step, after the first parameter's counter moved."""
    with tally.case():
        good, bad = Parameter(np.ones(3, np.float32)), Parameter(np.ones(3, dtype))
        with pytest.raises(TypeError) as info:
            RMSprop([good, bad])
        assert f"params[1] has dtype {np.dtype(dtype)}" in str(info.value) and SUPPORTED in str(info.value)


def test_data_replaced_by_float16_before_the_first_step_is_refused(tally, snap) -> None:
    with tally.case():
        params = [Parameter(np.ones(3, np.float32)), Parameter(np.ones(3, np.float32))]
        opt = RMSprop(params)
        params[1].data = np.ones(3, np.float16)
        params[0].grad, params[1].grad = np.ones(3, np.float32), np.ones(3, np.float16)
        before = snap(opt, params)
        with pytest.raises(TypeError) as info:
            opt.step()
        assert "param_groups[0]['params'][1]" in str(info.value) and "dtype=float16" in str(info.value)
        assert snap(opt, params) == before and not opt.state


# ------------------------------------------------------------ MemoryError while the step allocates
def _memory_error_cases() -> Iterator[tuple[str, Callable[[pytest.MonkeyPatch], tuple[list[Parameter], RMSprop]]]]:
    def scratch(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Parameter], RMSprop]:
        """A first step: state, flat packs and scratch are all still to be made; the second scratch fails.

        Scratch is the NumPy step's (numba's kernel needs none), so that step is the one taken.
        """
        params = _mixed()
        opt = RMSprop([{"params": params[:4]}, {"params": params[4:], "momentum": 0.9, "centered": True}])
        opt.num_threads = 2
        opt.accelerator = "numpy"
        monkeypatch.setattr(_fast, "_Scratch", _fail_on_call(_fast._Scratch, 2))
        return params, opt

    def flat_pack(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Parameter], RMSprop]:
        """Momentum switched on after two steps: new zero buffers and new flat packs; the second pack fails."""
        params, opt = trained(np.float32)
        params.append(Parameter(np.ones(5, np.float64)))
        opt.add_param_group({"params": params[-1:]})
        opt.param_groups[0]["momentum"] = 0.5
        monkeypatch.setattr(_fast, "_FlatPack", _fail_on_call(_fast._FlatPack, 2))
        return params, opt

    def reference(monkeypatch: pytest.MonkeyPatch) -> tuple[list[Parameter], RMSprop]:
        """Complex parameters take the reference path; it fails on the imaginary part of the first one."""
        rng = np.random.default_rng(3)
        params = [Parameter((rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(np.complex64))
                  for _ in range(2)]  # fmt: skip
        params.insert(1, Parameter(rng.standard_normal(4).astype(np.float32)))
        opt = RMSprop(params)
        _grads(params, 5)
        opt.step()
        monkeypatch.setattr(functional, "fma", _fail_on_call(functional.fma, 2))
        return params, opt

    yield from (("scratch", scratch), ("flat-pack", flat_pack), ("reference-path", reference))


MEMORY_CASES = list(_memory_error_cases())


@pytest.mark.parametrize("setup", [c[1] for c in MEMORY_CASES], ids=[c[0] for c in MEMORY_CASES])
def test_memory_error_while_allocating_changes_nothing(setup, monkeypatch, tally, snap) -> None:
    with tally.case():
        params, opt = setup(monkeypatch)
        _grads(params)
        twin_params, twin = _twin(params, opt)
        before = snap(opt, params)
        with pytest.raises(MemoryError, match="simulated"):
            opt.step()
        assert snap(opt, params) == before
        monkeypatch.undo()  # memory again: the step then computes what it would have computed at first
        opt.step()
        twin.step()
        for p, q in zip(params, twin_params):
            assert same(p.data, q.data)
        assert same(opt.state_dict(), twin.state_dict())


# ------------------------------------------------------------ SIGINT in the middle of the update
@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own SIGINT handler, as in a script (a test runner may have installed another)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("accelerator")
def test_sigint_during_the_update_completes_the_step_then_interrupts(monkeypatch, default_sigint) -> None:
    params = _mixed()
    opt = RMSprop(params, momentum=0.9)
    opt.num_threads = 2
    _grads(params)
    opt.step()
    _grads(params, 2)
    twin_params, twin = _twin(params, opt)
    twin.step()
    sent: list[bool] = []

    def interrupting(run: Callable[..., None]) -> Callable[..., None]:
        """``run`` (a thread's share of the update, either accelerator's), sending SIGINT first, once."""

        def interrupted(*args: Any, **kwargs: Any) -> None:
            if threading.current_thread() is threading.main_thread() and not sent:
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)  # handled before the next bytecode: before this share runs
            run(*args, **kwargs)

        return interrupted

    monkeypatch.setattr(_fast, "_run_blocks", interrupting(_fast._run_blocks))
    monkeypatch.setattr(_fast, "_run_kernel", interrupting(_fast._run_kernel))
    with pytest.raises(KeyboardInterrupt):
        opt.step()
    assert sent
    for p, q in zip(params, twin_params):
        assert same(p.data, q.data)
    assert same(opt.state_dict(), twin.state_dict())  # every counter at 2, every buffer moved
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ------------------------------------------------------------ thread count
@pytest.mark.parametrize("count", ["1024", "65"])
def test_thread_count_from_the_environment_is_capped(count, monkeypatch, tally, snap) -> None:
    with tally.case():
        params, opt = trained()
        _grads(params)
        monkeypatch.setenv("LUCID_NUM_THREADS", count)
        before = snap(opt, params)
        with pytest.raises(ValueError) as info:
            opt.step()
        assert f"LUCID_NUM_THREADS must be at most 64, got '{count}'" in str(info.value)
        assert snap(opt, params) == before


def test_thread_count_cap_is_a_limit_not_a_default(monkeypatch) -> None:
    monkeypatch.delenv("LUCID_NUM_THREADS", raising=False)
    assert _fast.resolve_num_threads(64) == 64
    with pytest.raises(ValueError, match="num_threads must be at most 64, got 65"):
        _fast.resolve_num_threads(65)


# ------------------------------------------------------------ gradients that share memory with the step's writes
N = 100_003  # above PARALLEL_MIN: shared between two threads, a thread boundary inside the array


def _overlapping(kind: str, dtype: type) -> tuple[Parameter, RMSprop, np.ndarray]:
    """A large parameter after one step, and a gradient of ``kind`` sharing memory with it or its state."""
    rng = np.random.default_rng(4)
    base = rng.standard_normal(N + 1).astype(dtype)
    p = Parameter(np.zeros(N, dtype))
    p.data = base[1:]  # a view: the gradient can be the neighbouring view
    opt = RMSprop([p], lr=0.01, momentum=0.9, centered=True)  # no weight decay: it would copy the gradient
    opt.num_threads = 2
    p.grad = rng.standard_normal(N).astype(dtype)
    opt.step()
    grads = {
        "the-parameter": lambda: p.data,
        "shifted-view": lambda: base[:-1],
        "square_avg": lambda: opt.state[p]["square_avg"],
        "momentum_buffer": lambda: opt.state[p]["momentum_buffer"],
    }
    return p, opt, grads[kind]()


@pytest.mark.usefixtures("kernel_threads_early")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", ["the-parameter", "shifted-view", "square_avg", "momentum_buffer"])
def test_gradient_sharing_memory_steps_as_its_copy(kind, dtype) -> None:
    p, opt, grad = _overlapping(kind, dtype)
    assert np.may_share_memory(grad, p.data) or any(np.may_share_memory(grad, b) for b in opt.state[p].values()
                                                     if isinstance(b, np.ndarray))  # fmt: skip
    twin_params, twin = _twin([p], opt)
    twin_params[0].grad = grad.copy()
    p.grad = grad
    opt.step()
    twin.step()
    assert same(p.data, twin_params[0].data)
    for key in ("square_avg", "grad_avg", "momentum_buffer"):
        assert same(opt.state[p][key], twin.state[twin_params[0]][key]), key
