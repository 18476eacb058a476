"""``Parameter``: a tensor that a module registers and an optimizer updates."""

from __future__ import annotations

from typing import Any

from numpy.typing import DTypeLike

from lucid.tensor import Tensor

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A leaf :class:`~lucid.Tensor` that requires a gradient.

    Parameters
    ----------
    data : array_like or Tensor
        Initial values.  Lists and Python floats become float32 (as in torch);
        an ndarray keeps its dtype, so a float64 array stays float64.
    requires_grad : bool, default True
        Only a floating point or complex parameter can require a gradient
        (``TypeError`` naming the dtype otherwise, as torch refuses it).
    dtype : dtype, optional
        Force a dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from lucid.nn import Parameter
    >>> Parameter([1.0, 2.0]).dtype
    dtype('float32')
    >>> Parameter(np.zeros(3)).dtype
    dtype('float64')
    """

    def __init__(self, data: Any, requires_grad: bool = True, dtype: DTypeLike | None = None) -> None:
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)
