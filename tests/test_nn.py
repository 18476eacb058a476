import numpy as np
import pytest

import lucid.nn as nn


def test_parameter_dtypes_follow_torch() -> None:
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32
    assert nn.Parameter(3.0).dtype == np.float32
    assert nn.Parameter(np.zeros(3)).dtype == np.float64
    assert nn.Parameter(np.zeros(3, np.float32)).dtype == np.float32
    p = nn.Parameter([1.0])
    assert p.requires_grad and p.is_leaf and p.grad is None


class Inner(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter([1.0, 2.0])


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter([0.5])
        self.inner = Inner()
        self.shared = self.a  # the same parameter twice: listed once
        self.not_a_param = np.zeros(2)

    def forward(self, x):
        return x * self.a


def test_module_registers_parameters_and_submodules() -> None:
    m = Outer()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["a", "inner.w"]
    assert [p.shape for p in m.parameters()] == [(1,), (2,)]
    assert m(2.0).data.tolist() == [1.0]
    m.inner = None
    assert [n for n, _ in m.named_parameters()] == ["a"]


def test_module_zero_grad() -> None:
    m = Outer()
    for p in m.parameters():
        p.grad = np.ones_like(p.data)
    m.zero_grad(set_to_none=False)
    assert all(not p.grad.any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_module_without_init_is_refused() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter([1.0])

    with pytest.raises(AttributeError, match=r"before Module\.__init__"):
        Broken()
