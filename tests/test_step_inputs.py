"""Inputs the step's fast check declines and its full check takes: they step as plain ones, or are refused whole.

A plain ndarray gradient of the parameter's shape and dtype, beside a state
whose step is a float and whose buffers are plain writable arrays, takes the
fast check (``RMSprop._plain_grad``).  Anything else goes through the full
check (``RMSprop._checked_grad``): an ``np.memmap`` or ``np.matrix`` gradient,
or a step count a caller wrote as an int or a NumPy number, must step bit for
bit as the plain input; a read-only parameter or buffer, a buffer of another
shape, a step that is not a number, a parameter of an unsupported dtype must be
refused with a message naming it, the optimizer left exactly as it was.
Enabling momentum or centering mid-run (torch raises a KeyError there) starts
the new buffer at zero, as a new optimizer would.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lucid.nn import Parameter
from lucid.optim import RMSprop
from lucid.optim.functional import rmsprop_update

_FLAGS = {"centered": True, "momentum": 0.9, "weight_decay": 0.01}
_SHAPE = (3, 4)


def _draws(dtype: type, steps: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(_SHAPE).astype(dtype), [rng.standard_normal(_SHAPE).astype(dtype) for _ in range(steps)]


def _state_bits(opt: RMSprop, p: Parameter) -> dict[str, Any]:
    state = opt.state.get(p, {})
    return {k: (float(v) if k == "step" else np.array(v).tobytes()) for k, v in state.items()}


def _memmap(tmp_path: Path, g: np.ndarray) -> np.ndarray:
    m = np.memmap(tmp_path / f"grad{id(g)}.bin", dtype=g.dtype, mode="w+", shape=g.shape)
    m[...] = g
    return m


def _matrix(_: Path, g: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # np.matrix is pending deprecation, and still handed to optimizers
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.asmatrix(g)


class _Sub(np.ndarray):
    """An ndarray subclass with nothing of its own."""


#: How each declined gradient is made from a plain one.
GRADS: dict[str, Callable[[Path, np.ndarray], Any]] = {
    "memmap": _memmap,
    "matrix": _matrix,
    "subclass": lambda _, g: g.view(_Sub),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", list(GRADS))
def test_a_declined_gradient_steps_as_the_plain_one(tmp_path: Path, kind: str, dtype: type) -> None:
    init, grads = _draws(dtype, 3)
    plain, other = Parameter(init.copy()), Parameter(init.copy())
    a, b = RMSprop([plain], lr=0.01, **_FLAGS), RMSprop([other], lr=0.01, **_FLAGS)
    for g in grads:
        plain.grad = g.copy()
        other.grad = GRADS[kind](tmp_path, g.copy())
        a.step()
        b.step()
        assert type(other.data) is np.ndarray and other.data.tobytes() == plain.data.tobytes()
        assert _state_bits(b, other) == _state_bits(a, plain)


@pytest.mark.parametrize("step", [2, np.float64(2.0), np.int64(2), np.float32(2.0)], ids=repr)
def test_a_step_count_written_as_another_number_steps_as_the_float(step: Any) -> None:
    init, grads = _draws(np.float32, 4)
    plain, other = Parameter(init.copy()), Parameter(init.copy())
    a, b = RMSprop([plain], **_FLAGS), RMSprop([other], **_FLAGS)
    for opt, p in ((a, plain), (b, other)):
        for g in grads[:2]:
            p.grad = g.copy()
            opt.step()
    b.state[other]["step"] = step
    for g in grads[2:]:
        plain.grad, other.grad = g.copy(), g.copy()
        a.step()
        b.step()
    assert other.data.tobytes() == plain.data.tobytes()
    assert _state_bits(b, other) == _state_bits(a, plain)


def _read_only_param(opt: RMSprop, p: Parameter, q: Parameter) -> None:
    p.data.flags.writeable = False


def _read_only_buffer(key: str) -> Callable[[RMSprop, Parameter, Parameter], None]:
    def spoil(opt: RMSprop, p: Parameter, q: Parameter) -> None:
        opt.state[p][key].flags.writeable = False

    return spoil


def _set_state(key: str, value: Callable[[Parameter], Any]) -> Callable[[RMSprop, Parameter, Parameter], None]:
    def spoil(opt: RMSprop, p: Parameter, q: Parameter) -> None:
        opt.state[p][key] = value(p)

    return spoil


def _drop_state(key: str) -> Callable[[RMSprop, Parameter, Parameter], None]:
    def spoil(opt: RMSprop, p: Parameter, q: Parameter) -> None:
        del opt.state[p][key]

    return spoil


def _half_data(opt: RMSprop, p: Parameter, q: Parameter) -> None:
    p.data = p.data.astype(np.float16)


#: (what is spoiled on the second parameter after a first step, the group's flags, error, message)
REFUSALS = {
    "read-only parameter": (_read_only_param, _FLAGS, ValueError, "read-only"),
    "read-only square_avg": (
        _read_only_buffer("square_avg"),
        _FLAGS,
        ValueError,
        r"state\['square_avg'\] is read-only",
    ),
    "read-only grad_avg, no momentum": (
        _read_only_buffer("grad_avg"),
        {"centered": True},
        ValueError,
        r"state\['grad_avg'\] is read-only",
    ),
    "momentum_buffer of another shape": (
        _set_state("momentum_buffer", lambda p: np.zeros((4, 3), p.dtype)),
        _FLAGS,
        ValueError,
        r"state\['momentum_buffer'\] is",
    ),
    "grad_avg a list": (
        _set_state("grad_avg", lambda p: np.zeros(p.shape, p.dtype).tolist()),
        _FLAGS,
        TypeError,
        r"state\['grad_avg'\] must be an ndarray",
    ),
    "step a string": (_set_state("step", lambda p: "2"), _FLAGS, TypeError, "must be a number"),
    "step a bool": (_set_state("step", lambda p: True), _FLAGS, TypeError, "must be a number"),
    "no step": (_drop_state("step"), _FLAGS, KeyError, "state has no 'step'"),
    "float16 parameter": (_half_data, _FLAGS, TypeError, "only"),
}


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_spoiled_input_is_refused_and_nothing_changes(name: str) -> None:
    spoil, flags, error, match = REFUSALS[name]
    init, grads = _draws(np.float32, 2)
    first, second = Parameter(init.copy()), Parameter(init[::-1].copy())
    opt = RMSprop([first, second], **flags)
    first.grad, second.grad = grads[0].copy(), grads[0].copy()
    opt.step()
    spoil(opt, second, first)
    before = [(p.data.tobytes(), _state_bits(opt, p)) for p in (first, second)]
    first.grad, second.grad = grads[1].copy(), grads[1].copy()
    with pytest.raises(error, match=match) as caught:
        opt.step()
    assert "param_groups[0]['params'][1]" in str(caught.value)  # the message names the parameter
    # neither parameter stepped: the other one, and the spoiled one as it was left
    assert [(p.data.tobytes(), _state_bits(opt, p)) for p in (first, second)] == before


@pytest.mark.parametrize("switch", ["momentum", "centered"])
@pytest.mark.parametrize("kind", ["plain", "memmap"])
def test_a_buffer_switched_on_mid_run_starts_at_zero(tmp_path: Path, switch: str, kind: str) -> None:
    """torch raises KeyError here; Lucid starts the new buffer at zero and keeps the others."""
    init, grads = _draws(np.float64, 3)
    start = {"centered": switch == "momentum", "momentum": 0.0 if switch == "momentum" else 0.5}
    p = Parameter(init.copy())
    opt = RMSprop([p], lr=0.01, **start)
    for g in grads[:2]:
        p.grad = g.copy()
        opt.step()
    kept = {k: np.array(v, copy=True) for k, v in opt.state[p].items() if k != "step"}
    expected = {**kept, "momentum_buffer" if switch == "momentum" else "grad_avg": np.zeros(_SHAPE)}
    param = p.data.copy()
    group = {**start, switch: 0.9 if switch == "momentum" else True}
    opt.param_groups[0].update(group)
    p.grad = GRADS[kind](tmp_path, grads[2].copy()) if kind != "plain" else grads[2].copy()
    opt.step()
    momentum = group["momentum"]
    rmsprop_update(
        param,
        grads[2],
        expected["square_avg"],
        expected.get("grad_avg") if group["centered"] else None,
        expected.get("momentum_buffer") if momentum > 0 else None,
        lr=0.01,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=momentum,
        centered=group["centered"],
        maximize=False,
    )
    assert p.data.tobytes() == param.tobytes()
    assert {k: v.tobytes() for k, v in opt.state[p].items() if k != "step"} == {
        k: v.tobytes() for k, v in expected.items()
    }
