"""Optimizer base behaviour: param groups, refusals, zero_grad, closures, state keys."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lucid
from lucid.nn import Parameter
from lucid.optim import Optimizer, RMSprop


def _params(n: int = 2) -> list[Parameter]:
    return [Parameter(np.arange(3, dtype=np.float32) + i) for i in range(n)]


def test_optimizer_is_abstract() -> None:
    with pytest.raises(TypeError):
        Optimizer(_params(), {})  # type: ignore[abstract]


def test_param_groups_take_defaults_and_overrides() -> None:
    a, b = _params()
    opt = RMSprop([{"params": [a]}, {"params": b, "lr": 0.5, "centered": True}], lr=0.1, momentum=0.2)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert [g["centered"] for g in opt.param_groups] == [False, True]
    assert all(g["momentum"] == 0.2 for g in opt.param_groups)
    assert opt.defaults["lr"] == 0.1 and opt.param_groups[1]["params"] == [b]
    c = Parameter([1.0])
    opt.add_param_group({"params": [c], "alpha": 0.5})
    assert opt.param_groups[2]["alpha"] == 0.5 and opt.param_groups[2]["eps"] == 1e-8


@pytest.mark.parametrize(
    ("make_params", "error", "match"),
    [
        (lambda: [], ValueError, "empty parameter list"),
        (lambda: iter([]), ValueError, "empty parameter list"),
        (lambda: Parameter([1.0]), TypeError, "iterable of Tensors or dicts"),
        (lambda: [np.zeros(2)], TypeError, r"params\[0\] is ndarray"),
        (lambda: [1.0], TypeError, r"params\[0\] is 1.0"),
        (lambda: set(_params()), TypeError, "ordered"),
        (
            lambda: (lambda p: [p, p])(Parameter([1.0])),
            ValueError,
            r"params\[1\] is the same parameter as params\[0\]",
        ),
        (
            lambda: (lambda p: [{"params": [p]}, {"params": [p]}])(Parameter([1.0])),
            ValueError,
            "more than one",
        ),
        (lambda: [Parameter(np.arange(3))], TypeError, "int64"),
        (lambda: [lucid.tensor([1.0], requires_grad=True) * 2], ValueError, "not a leaf"),
    ],
    ids=[
        "empty",
        "consumed-generator",
        "bare-tensor",
        "ndarray",
        "float",
        "set",
        "duplicate",
        "two-groups",
        "integer",
        "non-leaf",
    ],
)
def test_bad_params_are_refused(make_params, error, match) -> None:
    with pytest.raises(error, match=match):
        RMSprop(make_params())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": -0.1}, ValueError, "Invalid lr value: -0.1"),
        ({"eps": -1e-8}, ValueError, "Invalid eps value"),
        ({"momentum": -0.5}, ValueError, "Invalid momentum value"),
        ({"weight_decay": -1.0}, ValueError, "Invalid weight_decay value"),
        ({"alpha": -0.1}, ValueError, "Invalid alpha value"),
        ({"alpha": 1.5}, ValueError, r"alpha value: 1.5 \(must be in \[0, 1\]\)"),
        ({"lr": math.nan}, ValueError, "Invalid lr value: nan"),
        ({"eps": math.inf}, ValueError, "Invalid eps value: inf"),
        ({"lr": "0.1"}, TypeError, "lr must be a real number, got '0.1'"),
        ({"lr": True}, TypeError, "lr must be a real number, got True"),
        ({"lr": None}, TypeError, "lr must be a real number, got None"),
        ({"centered": 1}, TypeError, "centered must be a bool"),
        ({"maximize": "yes"}, TypeError, "maximize must be a bool"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        RMSprop(_params(), **kwargs)
    opt = RMSprop(_params(1))
    before = list(opt.param_groups)
    with pytest.raises(error, match=match):
        opt.add_param_group({"params": _params(1), **kwargs})
    assert opt.param_groups == before


def test_numpy_scalars_and_one_element_arrays_are_accepted() -> None:
    opt = RMSprop(_params(), lr=np.float32(0.5), alpha=np.array(0.9), momentum=np.int64(0), centered=np.bool_(True))
    group = opt.param_groups[0]
    assert group["lr"] == 0.5 and type(group["lr"]) is float and group["alpha"] == 0.9
    assert group["centered"] is True


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="nesterov"):
        RMSprop(_params(), nesterov=True)  # type: ignore[call-arg]


def test_zero_grad_and_closure() -> None:
    p = Parameter([1.0, -2.0])
    opt = RMSprop([p], lr=0.1)

    def closure():
        assert lucid.is_grad_enabled()
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with lucid.no_grad():
        loss = opt.step(closure)
    assert loss.item() == pytest.approx(5.0)
    assert opt.step() is None
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(p.grad, [0.0, 0.0])
    opt.zero_grad()
    assert p.grad is None


def test_params_without_grad_are_skipped_and_state_is_lazy() -> None:
    a, b = _params()
    opt = RMSprop([a, b], momentum=0.9, centered=True)
    a.grad = np.ones(3, np.float32)
    before_b = b.data.copy()
    opt.step()
    assert b not in opt.state and np.array_equal(b.data, before_b)
    assert set(opt.state[a]) == {"step", "square_avg", "momentum_buffer", "grad_avg"}
    assert opt.state[a]["step"] == 1.0 and isinstance(opt.state[a]["step"], float)
    assert all(opt.state[a][k].dtype == np.float32 for k in ("square_avg", "momentum_buffer", "grad_avg"))


def test_plain_state_has_only_square_avg() -> None:
    (p,) = _params(1)
    opt = RMSprop([p])
    p.grad = np.ones(3, np.float32)
    opt.step()
    assert set(opt.state[p]) == {"step", "square_avg"}


def test_switching_momentum_on_later_starts_a_zero_buffer() -> None:
    (p,) = _params(1)
    opt = RMSprop([p])
    p.grad = np.ones(3, np.float32)
    opt.step()
    opt.param_groups[0]["momentum"] = 0.9
    opt.step()
    assert "momentum_buffer" in opt.state[p]


@pytest.mark.parametrize(
    ("grad", "error", "match"),
    [
        (np.ones(4, np.float32), ValueError, r"shape \(4,\)"),
        (np.ones(3, np.float64), TypeError, "dtype float64"),
        (np.ones(3, np.int32), TypeError, "dtype int32"),
        (np.ones(3, np.complex64), TypeError, "dtype complex64"),
        ([1.0, 1.0, 1.0], TypeError, "must be an ndarray"),
    ],
)
def test_bad_gradient_refuses_the_whole_step(grad, error, match) -> None:
    a, b = _params()
    opt = RMSprop([a, b])
    a.grad = np.ones(3, np.float32)
    b.grad = grad
    before = a.data.copy()
    with pytest.raises(error, match=match):
        opt.step()
    np.testing.assert_array_equal(a.data, before)
    assert not opt.state


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("config", [{}, {"centered": True, "momentum": 0.9, "weight_decay": 0.1}])
def test_dtype_is_preserved(dtype, config) -> None:
    p = Parameter(np.linspace(-1, 1, 7).astype(dtype))
    opt = RMSprop([p], **config)
    for _ in range(3):
        p.grad = np.linspace(1, 2, 7).astype(dtype)
        opt.step()
    assert p.dtype == dtype
    assert all(v.dtype == dtype for k, v in opt.state[p].items() if k != "step")


def test_step_updates_in_place_and_handles_views() -> None:
    base = np.arange(12, dtype=np.float64).reshape(3, 4)
    p = Parameter(base)
    view = p.data
    p.data = p.data[:, ::2]  # a non-contiguous parameter
    opt = RMSprop([p], lr=0.1)
    p.grad = np.ones((3, 2))
    opt.step()
    assert np.shares_memory(p.data, view)
    np.testing.assert_allclose(view[:, ::2], np.arange(12).reshape(3, 4)[:, ::2] - 1.0, atol=1e-6)
    np.testing.assert_array_equal(view[:, 1::2], np.arange(12).reshape(3, 4)[:, 1::2])
