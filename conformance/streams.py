"""Reproducible gradient streams: the inputs both optimizers are fed.

Everything here is a pure function of its arguments (NumPy generators
seeded from them), so a failing case replays exactly from its description:
:func:`gradient_stream` from ``(kind, scale, shape, dtype, steps, seed)``,
:func:`materialize` from a :class:`~conformance.scenario.Scenario`.  The
Hypothesis strategies that *choose* these descriptions live in
:mod:`conformance.strategies`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from conformance.scenario import ParamSpec, Scenario

__all__ = ["LAYOUTS", "NONFINITE", "STREAM_KINDS", "copy_layout", "gradient_stream", "materialize"]

STREAM_KINDS = ("normal", "zero", "constant", "signflip", "heavy", "wide")

#: Memory layouts a gradient is handed over in.
LAYOUTS = ("contiguous", "transposed", "strided")

#: Non-finite values injected into a stream.
NONFINITE = ("none", "nan", "inf", "mixed")


def gradient_stream(
    kind: str, scale: float, shape: tuple[int, ...], dtype: Any, steps: int, seed: int
) -> list[NDArray[Any]]:
    """Return ``steps`` gradients of ``shape`` and ``dtype``.

    Parameters
    ----------
    kind : {"normal", "zero", "constant", "signflip", "heavy", "wide"}
        ``normal``: independent N(0, scale^2); ``zero``: all zeros;
        ``constant``: one fixed draw repeated (the centered variance then
        cancels towards zero); ``signflip``: a fixed draw whose sign alternates
        every step; ``heavy``: Student-t with 1.5 degrees of freedom (infinite
        variance); ``wide``: random signs with magnitudes log-uniform over
        ``scale * 1e-6 .. scale * 1e6`` (twelve decades in one tensor).
    scale : float
        Typical magnitude.
    shape, dtype, steps, seed
        What to draw and from which seed.
    """
    rng = np.random.default_rng(seed)
    if kind == "normal":
        draws = [rng.standard_normal(shape) * scale for _ in range(steps)]
    elif kind == "zero":
        draws = [np.zeros(shape) for _ in range(steps)]
    elif kind == "constant":
        fixed = rng.standard_normal(shape) * scale
        draws = [fixed for _ in range(steps)]
    elif kind == "signflip":
        fixed = rng.standard_normal(shape) * scale
        draws = [fixed * (-1) ** i for i in range(steps)]
    elif kind == "heavy":
        draws = [rng.standard_t(1.5, shape) * scale for _ in range(steps)]
    elif kind == "wide":
        draws = [rng.choice([-1.0, 1.0], shape) * scale * 10.0 ** rng.uniform(-6, 6, shape) for _ in range(steps)]
    else:
        raise ValueError(f"unknown stream kind {kind!r}; expected one of {STREAM_KINDS}")
    with np.errstate(over="ignore"):  # a heavy tail may overflow float32: that is a case too
        return [np.asarray(d, dtype=dtype) for d in draws]


def copy_layout(x: NDArray[Any]) -> NDArray[Any]:
    """Return an independent copy of ``x`` with the same kind of memory layout.

    C-contiguous stays C-contiguous, Fortran-ordered (a transposed view) stays
    Fortran-ordered, and anything else becomes a view with a gap between
    elements of the last axis (stride 2), so a non-contiguous gradient
    reaches both optimizers non-contiguous, each its own copy.
    """
    if x.ndim == 0 or x.flags.c_contiguous:
        return x.copy()
    if x.flags.f_contiguous:
        return x.copy(order="F")
    buf = np.empty((*x.shape[:-1], 2 * x.shape[-1]), x.dtype)
    view = buf[..., ::2]
    view[...] = x
    return view


def _with_layout(g: NDArray[Any], layout: str) -> NDArray[Any]:
    if layout == "contiguous" or g.ndim == 0 or g.size == 0:
        return g
    if layout == "transposed":
        return np.ascontiguousarray(g.T).T
    buf = np.zeros((*g.shape[:-1], 2 * g.shape[-1]), g.dtype)
    buf[..., ::2] = g
    return buf[..., ::2]


def _inject_nonfinite(grads: list[NDArray[Any]], how: str, rng: np.random.Generator) -> None:
    """Put NaN and/or +-Inf into one element of one or two steps, in place."""
    if how == "none" or not grads or grads[0].size == 0:
        return
    values = {"nan": [np.nan], "inf": [rng.choice([np.inf, -np.inf])], "mixed": [np.nan, np.inf, -np.inf]}[how]
    for value in values:
        step = int(rng.integers(len(grads)))
        flat = grads[step].reshape(-1).copy()
        flat[int(rng.integers(flat.size))] = value
        grads[step] = flat.reshape(grads[step].shape)


def _param_stream(spec: ParamSpec, dtype: np.dtype, steps: int, seed: int) -> list[NDArray[Any] | None]:
    rng = np.random.default_rng([seed, 1])
    grads = gradient_stream(spec.kind, spec.scale, spec.shape, dtype, steps, seed)
    _inject_nonfinite(grads, spec.nonfinite, rng)
    out: list[NDArray[Any] | None] = []
    for step, g in enumerate(grads):
        if spec.none_every and step % spec.none_every == spec.none_every - 1:
            out.append(None)
        else:
            out.append(_with_layout(g, spec.layout))
    return out


def materialize(scenario: Scenario) -> tuple[list[NDArray[Any]], list[list[NDArray[Any] | None]]]:
    """Return the initial parameters and, per step, one gradient (or None) per parameter.

    Parameters are N(0, 1) of each spec's shape (``param_scale`` times that)
    in the case's dtype; parameter ``i`` draws from the seed ``[scenario.seed, i]``.
    """
    dtype = np.dtype(scenario.dtype)
    params0, per_param = [], []
    for i, spec in enumerate(scenario.params):
        rng = np.random.default_rng([scenario.seed, i])
        params0.append(np.asarray(rng.standard_normal(spec.shape) * spec.param_scale, dtype=dtype))
        per_param.append(_param_stream(spec, dtype, scenario.steps, int(rng.integers(2**32))))
    return params0, [list(step) for step in zip(*per_param)] if per_param else [[] for _ in range(scenario.steps)]
