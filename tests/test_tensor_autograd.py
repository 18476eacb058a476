"""Autograd values and gradients against torch, for every op, with broadcasting."""

from __future__ import annotations

import operator
from collections.abc import Callable

import numpy as np
import pytest
import torch

import lucid

BINARY = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "matmul": operator.matmul,
}
# (shape of a, shape of b): equal, broadcast both ways, scalar-like, rank mismatch
ELEMENTWISE_SHAPES = [((3, 4), (3, 4)), ((3, 1), (1, 4)), ((2, 3, 4), (4,)), ((4,), (2, 3, 4)), ((), (3,))]
MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 3, 4), (4, 5)),
    ((2, 3, 4), (1, 4, 2)),
]


def _pair(shape: tuple[int, ...], seed: int, positive: bool = False) -> tuple[lucid.Tensor, torch.Tensor]:
    data = np.random.default_rng(seed).standard_normal(shape)
    if positive:
        data = np.abs(data) + 0.5
    return lucid.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)


def _check(fn: Callable[..., object], shapes: tuple[tuple[int, ...], ...], positive: bool = False) -> None:
    ours, theirs = zip(*(_pair(s, i, positive) for i, s in enumerate(shapes)))
    out_l, out_t = fn(*ours), fn(*theirs)
    np.testing.assert_allclose(out_l.data, out_t.detach().numpy(), rtol=1e-13)
    seed = np.random.default_rng(9).standard_normal(out_t.shape)
    out_l.backward(seed)
    out_t.backward(torch.from_numpy(seed))
    for lt, tt in zip(ours, theirs):
        assert lt.grad is not None and lt.grad.shape == lt.shape
        # float64 throughout; the reductions may sum in another order: a few ulp.
        np.testing.assert_allclose(lt.grad, tt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "truediv"])
@pytest.mark.parametrize("shapes", ELEMENTWISE_SHAPES, ids=str)
def test_elementwise_binary(name: str, shapes: tuple) -> None:
    _check(BINARY[name], shapes, positive=name == "truediv")


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(shapes: tuple) -> None:
    _check(operator.matmul, shapes)


@pytest.mark.parametrize("shapes", ELEMENTWISE_SHAPES, ids=str)
def test_pow_tensor_exponent(shapes: tuple) -> None:
    _check(operator.pow, shapes, positive=True)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: -x,
        lambda x: x**2,
        lambda x: x**0.5,
        lambda x: 2.0**x,
        lambda x: 3 + x,
        lambda x: 3 - x,
        lambda x: x - 3,
        lambda x: 2 * x,
        lambda x: 1.5 / x,
        lambda x: x.sum(),
        lambda x: x.sum(axis=0),
        lambda x: x.sum(axis=1, keepdims=True),
        lambda x: x.mean(),
        lambda x: x.mean(axis=(0, 1)),
        lambda x: ((x * x).sum(axis=-1) / 2 - x.mean()).sum(),
    ],
    ids=[
        "neg",
        "sq",
        "sqrt",
        "rpow",
        "radd",
        "rsub",
        "sub",
        "rmul",
        "rdiv",
        "sum",
        "sum0",
        "sum1k",
        "mean",
        "mean01",
        "chain",
    ],
)
def test_unary_and_scalar_ops(fn: Callable) -> None:
    _check(fn, ((2, 3, 4),), positive=True)


def test_gradients_accumulate_across_backward_calls() -> None:
    w = lucid.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad, np.array([2 + 3, 4 + 3], dtype=np.float32))


def test_reused_node_gets_summed_gradient() -> None:
    x = lucid.tensor(3.0, requires_grad=True)
    y = x * x
    (y + y * x).backward()  # d/dx (x^2 + x^3) = 2x + 3x^2
    assert x.grad == pytest.approx(2 * 3 + 3 * 9)


def test_backward_needs_scalar_or_gradient() -> None:
    w = lucid.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (w * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        lucid.tensor([1.0]).sum().backward()


def test_no_grad_records_nothing_and_grads_keep_dtype() -> None:
    w = lucid.tensor([1.0, 2.0], requires_grad=True)
    with lucid.no_grad():
        y = w * 2
    assert not y.requires_grad and y.is_leaf
    (w * 2.5).sum().backward()
    assert w.grad.dtype == np.float32 and w.dtype == np.float32


def test_tensor_basics() -> None:
    t = lucid.tensor([[1.0, 2.0]])
    assert t.shape == (1, 2) and t.dtype == np.float32 and t.ndim == 2
    assert isinstance(t.numpy(), np.ndarray) and lucid.tensor(2.5).item() == 2.5
    z = lucid.zeros_like(t)
    assert z.shape == t.shape and z.dtype == t.dtype and not z.data.any()
    assert lucid.tensor(np.zeros(2)).dtype == np.float64
    with pytest.raises(ValueError, match="one element"):
        t.item()
    assert np.isnan(lucid.tensor(np.zeros(0), requires_grad=True).mean().item())


NOT_DIFFERENTIABLE = [np.arange(3), np.array([1, 2], np.uint8), np.array([True, False])]


@pytest.mark.parametrize("data", NOT_DIFFERENTIABLE, ids=lambda d: d.dtype.name)
def test_only_floating_point_and_complex_tensors_can_require_grad(data: np.ndarray) -> None:
    """torch refuses too; Lucid used to accept and then truncate: ``(x * 0.5).sum().backward()`` gave zeros."""
    with pytest.raises(RuntimeError, match="floating point"):
        torch.from_numpy(data).requires_grad_(True)
    needle = f"got dtype {data.dtype}"
    with pytest.raises(TypeError, match=needle):
        lucid.tensor(data, requires_grad=True)
    with pytest.raises(TypeError, match=needle):
        lucid.nn.Parameter(data)
    with pytest.raises(TypeError, match=needle):
        lucid.zeros_like(data, requires_grad=True)
    t = lucid.tensor(data)
    with pytest.raises(TypeError, match=needle):
        t.requires_grad = True
    assert not t.requires_grad
    assert not lucid.nn.Parameter(data, requires_grad=False).requires_grad


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64, np.complex128])
def test_floating_point_and_complex_tensors_can_require_grad(dtype: type) -> None:
    t = lucid.tensor(np.ones(2, dtype))
    t.requires_grad = True
    assert t.requires_grad and lucid.tensor(np.ones(2, dtype), requires_grad=True).requires_grad


def test_backward_refuses_a_leaf_whose_data_became_integer_before_any_gradient_moves() -> None:
    x = lucid.tensor([1.0, 3.0], requires_grad=True)
    w = lucid.tensor([2.0, 2.0], requires_grad=True)
    y = (x * w * 0.25).sum()  # d/dx = 0.5: an int64 .grad would hold zeros
    x.data = np.array([1, 3])
    with pytest.raises(TypeError, match="dtype int64"):
        y.backward()
    assert x.grad is None and w.grad is None
