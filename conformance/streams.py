"""Reproducible gradient streams: the inputs both optimizers are fed.

Everything here is a pure function of its arguments (NumPy generators
seeded from them), so a failing case replays exactly from its description:
:func:`gradient_stream` from ``(kind, scale, shape, dtype, steps, seed)``,
:func:`materialize` from a :class:`~conformance.scenario.Scenario`.  The
Hypothesis strategies that *choose* these descriptions live in
:mod:`conformance.strategies`.

Inside a tensor a stream can carry the values real implementations mishandle
(:data:`SPECIALS`): exact zeros (of both signs) at positions redrawn every step,
subnormals and gradients whose square is subnormal at fixed positions, and
whole steps of zeros; NaN, +Inf and -Inf (:data:`NONFINITE`).  Complex dtypes
draw their real and imaginary parts as a real stream of shape ``(*shape, 2)``
(what ``torch.view_as_real`` shows), every special value placed per part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from conformance.scenario import ParamSpec, Scenario

__all__ = [
    "LAYOUTS",
    "NONFINITE",
    "SPECIALS",
    "STREAM_KINDS",
    "as_real",
    "copy_layout",
    "gradient_stream",
    "materialize",
]

STREAM_KINDS = ("normal", "zero", "constant", "signflip", "heavy", "wide")

#: Memory layouts a gradient is handed over in.
LAYOUTS = ("contiguous", "transposed", "strided")

#: Non-finite values injected into a stream: one NaN, one +Inf or -Inf, or one of each.
NONFINITE = ("none", "nan", "inf", "mixed")

#: Finite values inside a tensor that implementations mishandle (:func:`_place_specials`):
#: ``zeros`` (a quarter of the elements exactly +0 or -0, redrawn every step), ``subnormal``
#: (fixed positions: an eighth subnormal, an eighth whose square is subnormal), ``zero_steps``
#: (the whole tensor zero on steps 2, 6, 10, ...), ``all`` (the three together).
SPECIALS = ("none", "zeros", "subnormal", "zero_steps", "all")

#: Every how many steps ``zero_steps`` zeroes the whole tensor, and the first such step.
_ZERO_STEP_EVERY, _ZERO_STEP_FIRST = 4, 2


def as_real(x: NDArray[Any]) -> NDArray[Any]:
    """Return a complex array as its (real, imaginary) pairs, shape ``(*x.shape, 2)`` (``torch.view_as_real``).

    A copy (any layout, 0-d included); a real array is returned as it is.
    """
    if not np.iscomplexobj(x):
        return x
    return np.stack([x.real, x.imag], axis=-1)


def _as_complex(pairs: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
    """Invert :func:`as_real`: ``(*shape, 2)`` pairs as a complex array of ``dtype`` (parts copied exactly)."""
    out = np.empty(pairs.shape[:-1], dtype)
    out.real = pairs[..., 0]
    out.imag = pairs[..., 1]
    return out


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


def _inject_nonfinite(grads: list[NDArray[Any]], how: str, rng: np.random.Generator, first: int = 0) -> None:
    """Put NaN and/or +-Inf into one element of one to three steps from ``first`` on, in place."""
    if how == "none" or len(grads) <= first or grads[0].size == 0:
        return
    values = {"nan": [np.nan], "inf": [rng.choice([np.inf, -np.inf])], "mixed": [np.nan, np.inf, -np.inf]}[how]
    for value in values:
        step = first + int(rng.integers(len(grads) - first))
        flat = grads[step].reshape(-1).copy()
        flat[int(rng.integers(flat.size))] = value
        grads[step] = flat.reshape(grads[step].shape)


def _place_specials(grads: list[NDArray[Any]], how: str, rng: np.random.Generator, first: int = 0) -> None:
    """Put the finite special values :data:`SPECIALS` names into the (real) gradients, in place.

    Subnormals sit at positions fixed for the whole stream, so the buffers there
    stay subnormal too (``square_avg`` from gradients whose square is subnormal,
    ``grad_avg`` and the momentum buffer from subnormal gradients): a step that
    flushes subnormals to zero changes the state by far more than a rounding.
    Zeros move every step, so an element whose gradient is zero has state to
    decay (a step that skips zero elements leaves it undecayed).  Steps before
    ``first`` (which get no gradient) are left as they are.
    """
    if how == "none" or len(grads) <= first or grads[0].size == 0:
        return
    dtype = grads[0].dtype
    info = np.finfo(dtype)
    shape = grads[0].shape
    if how in ("subnormal", "all"):
        which = rng.integers(8, size=shape)
        sub = which == 0  # the gradient itself subnormal: tiny * 2**-U(0, nmant), down to the smallest one
        square = which == 1  # its square subnormal: sqrt(tiny) * 2**-U(0, nmant / 2)
        sign = rng.choice(np.array([-1.0, 1.0]), size=shape)
        mag_sub = float(info.smallest_normal) * np.exp2(-rng.uniform(0, info.nmant, size=shape))
        mag_square = np.sqrt(float(info.smallest_normal)) * np.exp2(-rng.uniform(0, info.nmant / 2, size=shape))
        values_sub, values_square = (sign * mag_sub)[sub].astype(dtype), (sign * mag_square)[square].astype(dtype)
        for i in range(first, len(grads)):
            g = grads[i] = np.array(grads[i], copy=True)
            g[sub] = values_sub
            g[square] = values_square
    if how in ("zeros", "all"):
        for i in range(first, len(grads)):
            g = grads[i] = np.array(grads[i], copy=True)
            zero = rng.random(shape) < 0.25
            g[zero] = np.copysign(0.0, rng.random(np.count_nonzero(zero)) - 0.5)
    if how in ("zero_steps", "all"):
        for i in range(_ZERO_STEP_FIRST, len(grads), _ZERO_STEP_EVERY):
            grads[i] = np.zeros_like(grads[i])


def _param_stream(spec: ParamSpec, dtype: np.dtype, steps: int, seed: int) -> list[NDArray[Any] | None]:
    rng = np.random.default_rng([seed, 1])
    real = np.empty(0, dtype).real.dtype
    shape = (*spec.shape, 2) if dtype.kind == "c" else spec.shape
    first = min(spec.first_step, steps)
    # The stream starts at the first gradient (the steps before it are None, and not drawn).
    grads = [np.zeros(shape, real)] * first + gradient_stream(spec.kind, spec.scale, shape, real, steps - first, seed)
    _place_specials(grads, spec.special, np.random.default_rng([seed, 2]), first)
    _inject_nonfinite(grads, spec.nonfinite, rng, first)
    if dtype.kind == "c":
        grads = [_as_complex(g, dtype) for g in grads]
    out: list[NDArray[Any] | None] = []
    for step, g in enumerate(grads):
        if step < spec.first_step or (spec.none_every and step % spec.none_every == spec.none_every - 1):
            out.append(None)
        else:
            out.append(_with_layout(g, spec.layout))
    return out


def materialize(scenario: Scenario) -> tuple[list[NDArray[Any]], list[list[NDArray[Any] | None]]]:
    """Return the initial parameters and, per step, one gradient (or None) per parameter.

    Parameters are N(0, 1) of each spec's shape (``param_scale`` times that)
    in the case's dtype, complex ones with N(0, 1) real and imaginary parts;
    parameter ``i`` draws from the seed ``[scenario.seed, i]``.  A parameter's
    gradient is None before its ``first_step`` and every ``none_every`` steps.
    """
    dtype = np.dtype(scenario.dtype)
    params0, per_param = [], []
    for i, spec in enumerate(scenario.params):
        rng = np.random.default_rng([scenario.seed, i])
        if dtype.kind == "c":
            pairs = rng.standard_normal((*spec.shape, 2)) * spec.param_scale
            params0.append(_as_complex(pairs.astype(np.empty(0, dtype).real.dtype), dtype))
        else:
            params0.append(np.asarray(rng.standard_normal(spec.shape) * spec.param_scale, dtype=dtype))
        per_param.append(_param_stream(spec, dtype, scenario.steps, int(rng.integers(2**32))))
    return params0, [list(step) for step in zip(*per_param)] if per_param else [[] for _ in range(scenario.steps)]
