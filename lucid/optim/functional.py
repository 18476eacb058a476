"""The RMSprop update on NumPy arrays, operation for operation as torch computes it.

This module holds the formula and nothing else; :mod:`lucid.optim.rmsprop`
wraps it in an :class:`~lucid.optim.Optimizer`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lucid._fma import fma

__all__ = ["Writes", "rmsprop_update", "rmsprop_writes"]

#: A step's result before it is applied: ``(array, new value)`` pairs, one per array the step updates.
Writes = list[tuple[NDArray[Any], Any]]


def _lerp(start: NDArray[Any], end: NDArray[Any], weight: float) -> NDArray[Any]:
    """``start + weight * (end - start)`` rounded as torch's CPU ``lerp_`` rounds it.

    torch evaluates ``fma(w, end - start, start)`` for ``w < 0.5`` and
    ``fma(-(end - start), 1 - w, end)`` otherwise, with ``w`` and ``1 - w`` in
    the tensor's dtype (measured bit for bit on a million inputs per dtype).
    """
    dtype = start.dtype.type
    diff = end - start
    if weight < 0.5:
        return fma(dtype(weight), diff, start)
    return fma(-diff, dtype(1) - dtype(weight), end)


def rmsprop_update(
    param: NDArray[Any],
    grad: NDArray[Any],
    square_avg: NDArray[Any],
    grad_avg: NDArray[Any] | None,
    momentum_buffer: NDArray[Any] | None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> None:
    r"""Apply one RMSprop step in place to float32, float64, complex64 or complex128 arrays.

    With :math:`g` the gradient, :math:`\lambda` the weight decay, :math:`\mu`
    the momentum and :math:`\gamma` the learning rate:

    .. math::

        g &\leftarrow -g \text{ if maximize}, \qquad g \leftarrow g + \lambda\theta \text{ if } \lambda \ne 0 \\
        v &\leftarrow \alpha v + (1-\alpha) g^2 \\
        \bar g &\leftarrow \bar g + (1-\alpha)(g - \bar g), \quad
            a = \sqrt{v - \bar g^2} + \epsilon \quad\text{(centered)}, \qquad
            a = \sqrt{v} + \epsilon \quad\text{(otherwise)} \\
        b &\leftarrow \mu b + g / a, \quad \theta \leftarrow \theta - \gamma b
            \quad\text{if } \mu > 0, \qquad \theta \leftarrow \theta - \gamma g / a \quad\text{otherwise}

    Epsilon is added *outside* the square root and the learning rate multiplies
    the momentum buffer *outside* it, as in ``torch.optim.RMSprop`` (not as the
    textbook formula writes).  Each line below is one torch kernel, rounded as
    torch rounds it: ``addcmul``, ``add(alpha=)`` and ``lerp`` are fused
    multiply-adds; scalars are converted to the array's dtype first.

    Every new value is computed before the first array is written (so a
    ``MemoryError`` on the way writes nothing, and a ``grad`` that shares
    memory with what is updated is read as it was at the call).

    Parameters
    ----------
    param, grad, square_avg : ndarray
        Same shape and dtype; ``param`` and ``square_avg`` are updated.  A
        complex array is updated as torch updates it: the weight decay in
        complex arithmetic, then everything else on (real, imaginary) pairs.
    grad_avg : ndarray or None
        Updated when ``centered``.
    momentum_buffer : ndarray or None
        Updated when ``momentum > 0``.
    lr : float
        Learning rate.
    alpha : float
        Smoothing constant of the mean square.
    eps : float
        Added to the root.
    weight_decay : float
        L2 coefficient added to the gradient.
    momentum : float
        Momentum factor; 0 disables the buffer.
    centered : bool
        Subtract the squared mean gradient from the mean square.
    maximize : bool
        Negate the gradient first.
    """
    for array, value in rmsprop_writes(
        param,
        grad,
        square_avg,
        grad_avg,
        momentum_buffer,
        lr=lr,
        alpha=alpha,
        eps=eps,
        weight_decay=weight_decay,
        momentum=momentum,
        centered=centered,
        maximize=maximize,
    ):
        np.copyto(array, value)


def rmsprop_writes(
    param: NDArray[Any],
    grad: NDArray[Any],
    square_avg: NDArray[Any],
    grad_avg: NDArray[Any] | None,
    momentum_buffer: NDArray[Any] | None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> Writes:
    """Compute :func:`rmsprop_update`'s step without applying it; return its writes.

    Nothing is written: the step is ``np.copyto(array, value)`` for each pair
    returned, in any order.  Parameters as for :func:`rmsprop_update`.
    """
    update = _update_complex if np.iscomplexobj(param) else _update
    with np.errstate(all="ignore"):  # NaN and Inf propagate silently, as in torch
        return update(
            param,
            grad,
            square_avg,
            grad_avg,
            momentum_buffer,
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )


def _update_complex(
    param: NDArray[Any],
    grad: NDArray[Any],
    square_avg: NDArray[Any],
    grad_avg: NDArray[Any] | None,
    momentum_buffer: NDArray[Any] | None,
    *,
    weight_decay: float,
    maximize: bool,
    **hyper: Any,
) -> Writes:
    """Update a complex parameter as torch's default CPU path does; return the writes.

    torch's single-tensor RMSprop negates the gradient and adds the weight
    decay in *complex* arithmetic, ``grad.add(param, alpha=wd)``, i.e.
    ``g + p * complex(wd, 0)`` with the product and the sum rounded separately
    (not fused) and the complex product's NaN rules (a parameter of
    ``1 + inf j`` gives a NaN real part); only then does it ``view_as_real``
    every tensor and run the real update on the pairs.  NumPy's complex
    ``g + p * wd`` matches torch bit for bit there (measured on 2e5 random
    pairs and every combination of 0, -0, 1, 1e-45, 3e38, +-inf and NaN parts).
    The rest of the step is elementwise, so the real and imaginary parts are
    updated apart.  (torch's ``foreach=True`` path views as real *before* the
    decay and fuses it per part, so it can differ from this by one rounding.)
    """
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = g + param * param.dtype.type(weight_decay)
    writes: Writes = []
    for part in ("real", "imag"):
        writes += _update(
            getattr(param, part),
            getattr(g, part),
            getattr(square_avg, part),
            None if grad_avg is None else getattr(grad_avg, part),
            None if momentum_buffer is None else getattr(momentum_buffer, part),
            weight_decay=0.0,
            maximize=False,
            **hyper,
        )
    return writes


def _update(
    param: NDArray[Any],
    grad: NDArray[Any],
    square_avg: NDArray[Any],
    grad_avg: NDArray[Any] | None,
    momentum_buffer: NDArray[Any] | None,
    *,
    lr: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
) -> Writes:
    """Compute the step on real arrays, one torch kernel a line; return the writes (``new_*``: the new values)."""
    t = param.dtype.type
    g = -grad if maximize else grad
    if weight_decay != 0:
        g = fma(param, t(weight_decay), g)  # grad.add(param, alpha=wd)
    new_square_avg = fma(t(1 - alpha) * g, g, square_avg * t(alpha))  # mul_, addcmul_
    writes: Writes = [(square_avg, new_square_avg)]
    if centered:
        assert grad_avg is not None
        new_grad_avg = _lerp(grad_avg, g, 1 - alpha)  # lerp_(g, 1 - alpha)
        writes.append((grad_avg, new_grad_avg))
        avg = np.sqrt(fma(-new_grad_avg, new_grad_avg, new_square_avg))  # addcmul(ga, ga, value=-1).sqrt_()
    else:
        avg = np.sqrt(new_square_avg)
    avg = avg + t(eps)
    if momentum > 0:
        assert momentum_buffer is not None
        new_momentum_buffer = momentum_buffer * t(momentum) + g / avg  # mul_, addcdiv_
        writes.append((momentum_buffer, new_momentum_buffer))
        new_param = fma(new_momentum_buffer, t(-lr), param)  # add_(buf, alpha=-lr)
    else:
        new_param = param + (t(-lr) * g) / avg  # addcdiv_(g, avg, value=-lr)
    writes.append((param, new_param))
    return writes
