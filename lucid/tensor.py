"""``Tensor``: a NumPy array with a small reverse-mode autograd.

Each differentiable operation returns a new ``Tensor`` that remembers its
operands and a function mapping the gradient of the result to the gradients of
the operands.  ``backward()`` walks that graph in reverse topological order and
accumulates into the ``.grad`` of every leaf that requires a gradient, as torch
does (gradients add up across ``backward`` calls until they are reset).
Broadcasting follows NumPy; a broadcast operand receives its gradient summed
back to its own shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from lucid._grad_mode import is_grad_enabled

__all__ = ["Tensor", "tensor", "zeros_like"]

Operand = Union["Tensor", float, int, ArrayLike]
_BackwardFn = Callable[[NDArray[Any]], Sequence[NDArray[Any] | None]]


def _as_array(data: Any, dtype: DTypeLike | None = None) -> NDArray[Any]:
    """Convert ``data`` to an ndarray, with torch's default dtypes.

    Python floats and lists of them become float32, as ``torch.tensor`` makes
    them; ndarrays (and NumPy scalars) keep their dtype unless ``dtype`` is given.
    """
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.array(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)):
        return np.array(data)
    array = np.array(data)
    if array.dtype == np.float64:
        return array.astype(np.float32)
    if array.dtype == np.complex128:
        return array.astype(np.complex64)
    return array


def _check_differentiable(dtype: np.dtype[Any]) -> None:
    """Refuse a dtype that cannot hold a gradient, as torch does (its gradients would be truncated)."""
    if dtype.kind not in "fc":
        raise TypeError(f"only tensors of floating point and complex dtype can require gradients, got dtype {dtype}")


def _unbroadcast(grad: NDArray[Any], shape: tuple[int, ...]) -> NDArray[Any]:
    """Sum ``grad`` over the axes along which an operand of ``shape`` was broadcast."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, size in enumerate(shape) if size == 1 and grad.shape[extra + i] != 1
    )
    return np.sum(grad, axis=axes, keepdims=False).reshape(shape) if axes else grad.reshape(shape)


class Tensor:
    """An n-dimensional array that can record the operations applied to it.

    Parameters
    ----------
    data : array_like
        The values.  Python floats and lists of floats become float32; an
        ndarray keeps its dtype.
    requires_grad : bool, default False
        Whether ``backward()`` should compute a gradient for this tensor; only
        for floating point and complex dtypes (``TypeError`` otherwise, as
        torch refuses them: an integer gradient would be truncated).
    dtype : dtype, optional
        Force a dtype.

    Attributes
    ----------
    data : ndarray
        The storage; assignable.
    grad : ndarray or None
        The accumulated gradient, ``None`` until a backward pass reaches this
        tensor; assignable (optimizers read it).
    """

    __array_priority__ = 1000  # ndarray <op> Tensor defers to Tensor's reflected op

    def __init__(self, data: Any, requires_grad: bool = False, dtype: DTypeLike | None = None) -> None:
        self.data: NDArray[Any] = _as_array(data, dtype)
        self.grad: NDArray[Any] | None = None
        self._requires_grad = False
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: _BackwardFn | None = None

    # ------------------------------------------------------------------ basics
    @property
    def requires_grad(self) -> bool:
        """Whether gradients flow to this tensor; switching it on needs a floating point or complex dtype."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value:
            _check_differentiable(self.data.dtype)
        self._requires_grad = bool(value)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of ``data``."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype of ``data``."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions of ``data``."""
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded operation."""
        return self._backward is None

    def numpy(self) -> NDArray[Any]:
        """Return the underlying ndarray (shared, not copied)."""
        return self.data

    def item(self) -> Any:
        """Return the single element as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.item()

    def detach(self) -> Tensor:
        """Return a tensor sharing ``data`` that is cut off from the graph."""
        return Tensor(self.data, dtype=self.data.dtype)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"{type(self).__name__}({np.array2string(self.data, separator=', ')}{grad})"

    def __len__(self) -> int:
        return len(self.data)

    __hash__ = object.__hash__  # identity, so tensors can key optimizer state

    # ---------------------------------------------------------------- autograd
    @staticmethod
    def _lift(value: Operand, like: Tensor) -> Tensor:
        """Wrap a non-tensor operand; Python scalars take ``like``'s dtype."""
        if isinstance(value, Tensor):
            return value
        if isinstance(value, (bool, int, float, complex)):
            return Tensor(np.asarray(value, dtype=np.result_type(like.data, value)))
        return Tensor(np.asarray(value))

    @staticmethod
    def _record(data: NDArray[Any], parents: tuple[Tensor, ...], backward: _BackwardFn) -> Tensor:
        """Make the result of an operation, linking it to ``parents`` if needed."""
        out = Tensor(data, dtype=data.dtype)
        if is_grad_enabled() and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = parents
            out._backward = backward
        return out

    def backward(self, gradient: ArrayLike | None = None) -> None:
        """Accumulate d(self)/d(leaf) into the ``.grad`` of every leaf that needs it.

        Parameters
        ----------
        gradient : array_like, optional
            The gradient of some scalar with respect to ``self``; may be omitted
            only when ``self`` has one element (it is then 1).
        """
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar result, got shape {self.shape}")
            seed = np.ones_like(self.data)
        else:
            seed = np.broadcast_to(np.asarray(gradient, dtype=self.data.dtype), self.shape)

        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:  # iterative depth-first topological sort
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((parent, False) for parent in node._parents if parent.requires_grad)

        for node in order:  # a leaf's .data may have been replaced since: check all before any .grad moves
            if node._backward is None:
                _check_differentiable(node.data.dtype)
        grads: dict[int, NDArray[Any]] = {id(self): seed}
        for node in reversed(order):
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            if node._backward is None:
                g = np.array(grad, dtype=node.data.dtype)
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pgrad in zip(node._parents, node._backward(grad)):
                if pgrad is None or not parent.requires_grad:
                    continue
                pgrad = _unbroadcast(np.asarray(pgrad), parent.shape)
                key = id(parent)
                grads[key] = pgrad if key not in grads else grads[key] + pgrad

    # -------------------------------------------------------------- operations
    def __add__(self, other: Operand) -> Tensor:
        o = self._lift(other, self)
        return self._record(self.data + o.data, (self, o), lambda g: (g, g))

    def __radd__(self, other: Operand) -> Tensor:
        return self._lift(other, self).__add__(self)

    def __sub__(self, other: Operand) -> Tensor:
        o = self._lift(other, self)
        return self._record(self.data - o.data, (self, o), lambda g: (g, -g))

    def __rsub__(self, other: Operand) -> Tensor:
        return self._lift(other, self).__sub__(self)

    def __mul__(self, other: Operand) -> Tensor:
        o = self._lift(other, self)
        a, b = self.data, o.data
        return self._record(a * b, (self, o), lambda g: (g * b, g * a))

    def __rmul__(self, other: Operand) -> Tensor:
        return self._lift(other, self).__mul__(self)

    def __truediv__(self, other: Operand) -> Tensor:
        o = self._lift(other, self)
        a, b = self.data, o.data
        return self._record(a / b, (self, o), lambda g: (g / b, -g * a / (b * b)))

    def __rtruediv__(self, other: Operand) -> Tensor:
        return self._lift(other, self).__truediv__(self)

    def __pow__(self, other: Operand) -> Tensor:
        o = self._lift(other, self)
        a, b = self.data, o.data
        out = a**b

        def backward(g: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any] | None]:
            d_base = g * b * a ** (b - 1)
            if not o.requires_grad:
                return d_base, None
            with np.errstate(divide="ignore", invalid="ignore"):
                d_exp = g * out * np.log(np.where(a > 0, a, np.nan))
            return d_base, np.where(a > 0, d_exp, 0)

        return self._record(out, (self, o), backward)

    def __rpow__(self, other: Operand) -> Tensor:
        return self._lift(other, self).__pow__(self)

    def __neg__(self) -> Tensor:
        return self._record(-self.data, (self,), lambda g: (-g,))

    def __matmul__(self, other: Operand) -> Tensor:
        o = self._lift(other, self)
        a, b = self.data, o.data

        def backward(g: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
            if a.ndim == 1 and b.ndim == 1:  # inner product: g is 0-d
                return g * b, g * a
            # Promote 1-d operands to matrices so one rule covers every case.
            a2 = a[np.newaxis, :] if a.ndim == 1 else a
            b2 = b[:, np.newaxis] if b.ndim == 1 else b
            g2 = g
            if a.ndim == 1:
                g2 = np.expand_dims(g2, -2)
            if b.ndim == 1:
                g2 = np.expand_dims(g2, -1)
            da = g2 @ np.swapaxes(b2, -1, -2)
            db = np.swapaxes(a2, -1, -2) @ g2
            if a.ndim == 1:
                da = np.squeeze(da, -2)
            if b.ndim == 1:
                db = np.squeeze(db, -1)
            return _unbroadcast(da, a.shape), _unbroadcast(db, b.shape)

        return self._record(a @ b, (self, o), backward)

    def __rmatmul__(self, other: Operand) -> Tensor:
        return self._lift(other, self).__matmul__(self)

    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (all axes by default)."""
        shape = self.shape

        def backward(g: NDArray[Any]) -> tuple[NDArray[Any]]:
            if axis is not None and not keepdims:
                g = np.expand_dims(g, axis)
            return (np.broadcast_to(g, shape),)

        return self._record(np.sum(self.data, axis=axis, keepdims=keepdims), (self,), backward)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Arithmetic mean over ``axis`` (all axes by default)."""
        axes = range(self.ndim) if axis is None else np.atleast_1d(axis).tolist()
        count = int(np.prod([self.shape[a] for a in axes], dtype=np.int64))
        total = self.sum(axis=axis, keepdims=keepdims)
        with np.errstate(invalid="ignore", divide="ignore"):  # empty -> NaN, as in torch
            return total / np.asarray(count, dtype=self.data.dtype)


def tensor(data: Any, requires_grad: bool = False, dtype: DTypeLike | None = None) -> Tensor:
    """Create a :class:`Tensor` (float lists become float32, as in torch)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros_like(t: Tensor | ArrayLike, requires_grad: bool = False) -> Tensor:
    """Return a tensor of zeros with the shape and dtype of ``t``."""
    data = t.data if isinstance(t, Tensor) else np.asarray(t)
    return Tensor(np.zeros_like(data), requires_grad=requires_grad)
