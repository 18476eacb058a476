"""Wrong implementations that go wrong on particular tensors, as candidate classes.

Each is a bug a real optimizer has shipped or could: it agrees with torch on
ordinary dense gradients and small parameters, and departs only on a tensor
that the scenario space has to contain (exact zeros, infinities, subnormals,
all-zero steps, empty parameters, a parameter past a block boundary, several
parameters of one shape, more than ten parameters, a late first gradient,
complex parameters).  ``test_mutants_tensors.py`` asserts that the probes of
``python -m conformance check`` catch each one, by the check named for it;
every one of them survived the probes as they were before the tensor probe
(:func:`conformance.probes.tensor_probe`) and the complex cases were added.

Run one by import path::

    python -m conformance check --optimizer tests.conformance.mutants_tensors:ZeroGradSkipped
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mutants import _HYPER, _Honest

from lucid.optim.functional import rmsprop_update

__all__ = [
    "MUTANTS",
    "AllZeroGradSkipped",
    "ComplexAsMagnitude",
    "ComplexRefused",
    "EagerState",
    "EmptyGradCrashes",
    "InfClipped",
    "LexicographicStateOrder",
    "StateKeyedByShape",
    "SubnormalsFlushed",
    "TailBlockDropped",
    "ZeroGradSkipped",
]


def _buffers(state: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


class ZeroGradSkipped(_Honest):
    """Elements whose gradient is exactly zero are skipped, sparse-style: their state is not decayed, nor moved.

    torch decays ``square_avg`` (and the momentum buffer, which still moves the
    parameter) at every element, whatever its gradient.
    """

    def _update(self, p, grad, state, group, **changes):
        keep = grad == 0
        before = [(a, a[keep]) for a in (p.data, *_buffers(state).values())]
        super()._update(p, grad, state, group, **changes)
        for array, old in before:
            array[keep] = old


class AllZeroGradSkipped(_Honest):
    """A parameter whose whole gradient is zero is skipped on that step, as if its grad were None."""

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.size and not np.any(p.grad):
                    p.grad = None
        return super().step(closure)


class InfClipped(_Honest):
    """Gradients clipped to the dtype's finite range before the step: +-Inf becomes +-max (NaN left alone).

    torch propagates an infinite gradient (``inf / inf`` is NaN in the
    update); the clipped one gives ``max / inf = 0``: the parameter stays finite.
    """

    def _update(self, p, grad, state, group, **changes):
        top = np.finfo(grad.dtype).max
        if np.iscomplexobj(grad):
            grad = np.clip(grad.real, -top, top) + 1j * np.clip(grad.imag, -top, top)
            grad = grad.astype(p.data.dtype)
        else:
            grad = np.clip(grad, -top, top)
        super()._update(p, grad, state, group, **changes)


def _flush(x: np.ndarray) -> None:
    """Set every subnormal element (of each part) to a zero of its sign, in place: flush-to-zero."""
    for part in (x.real, x.imag) if np.iscomplexobj(x) else (x,):
        tiny = np.finfo(part.dtype).smallest_normal
        part[np.abs(part) < tiny] *= 0


class SubnormalsFlushed(_Honest):
    """Flush-to-zero and denormals-are-zero, as a kernel built with fast-math runs: subnormal inputs and results are 0.

    torch's CPU kernels keep subnormals (gradual underflow), so a buffer built
    from tiny gradients, or from gradients whose square underflows, differs.
    """

    def _update(self, p, grad, state, group, **changes):
        grad = np.array(grad, copy=True)
        for x in (grad, p.data, *_buffers(state).values()):
            _flush(x)
        super()._update(p, grad, state, group, **changes)
        for x in (p.data, *_buffers(state).values()):
            _flush(x)


#: The block size of :class:`TailBlockDropped` (Lucid's float32 block size, a usual chunk size).
BLOCK = 65536


class TailBlockDropped(_Honest):
    """A chunked step whose loop runs over the whole blocks only: past the first block, the partial last one is lost.

    ``for b in range(max(1, n // BLOCK))``: a parameter smaller than a block is
    updated whole, a larger one loses its last ``n % BLOCK`` elements (they
    keep their old values, state included).
    """

    def _update(self, p, grad, state, group, **changes):
        n = p.data.size
        flat = [p.data.reshape(-1), *(v.reshape(-1) for v in _buffers(state).values())]
        assert all(np.shares_memory(f, a) or n == 0 for f, a in zip(flat, [p.data, *_buffers(state).values()]))
        g = np.ascontiguousarray(grad).reshape(-1)
        names = list(_buffers(state))
        h = {k: group[k] for k in _HYPER} | changes
        for b in range(max(1, n // BLOCK)):
            lo, hi = b * BLOCK, min(n, (b + 1) * BLOCK)
            views = dict(zip(names, (f[lo:hi] for f in flat[1:])))
            rmsprop_update(
                flat[0][lo:hi],
                g[lo:hi],
                views["square_avg"],
                views.get("grad_avg") if h["centered"] else None,
                views.get("momentum_buffer") if h["momentum"] > 0 else None,
                **h,
            )


class StateKeyedByShape(_Honest):
    """State looked up by (shape, dtype) instead of by parameter: parameters of one shape share one entry."""

    def _state_for(self, param, group):
        shared = self.__dict__.setdefault("_by_shape", {})
        key = (param.data.shape, param.data.dtype.str)
        entry = self.state.get(param)
        if entry is None:
            entry = shared.get(key)
            if entry is None:
                entry = shared[key] = super()._state_for(param, group)
            self.state[param] = entry
        return super()._state_for(param, group)


class EagerState(_Honest):
    """State created at construction for every parameter (step 0, zero buffers), not at its first gradient.

    Numerically the same as torch's lazy state; but a state_dict taken before
    a parameter's first gradient has an entry torch does not.
    """

    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        for group in self.param_groups:
            for p in group["params"]:
                self._state_for(p, group)


class LexicographicStateOrder(_Honest):
    """``load_state_dict`` pairs the saved entries with the parameters in the order of their keys as strings.

    A state_dict that went through JSON has string keys, sorted "0", "1",
    "10", "11", "2", ...: the same order as the numbers up to ten parameters,
    a different one beyond.
    """

    def load_state_dict(self, state_dict):
        keys = sorted(state_dict["state"])
        as_text = sorted(state_dict["state"], key=str)
        remapped = {k: state_dict["state"][t] for k, t in zip(keys, as_text)}
        super().load_state_dict({**state_dict, "state": remapped})


class ComplexAsMagnitude(_Honest):
    """A complex parameter's mean square kept as ``|g|^2`` (one real number per element) instead of per part.

    The textbook complex RMSprop; torch (``view_as_real``) keeps the square of
    the real and of the imaginary part separately.
    """

    def _update(self, p, grad, state, group, **changes):
        if not np.iscomplexobj(p.data):
            return super()._update(p, grad, state, group, **changes)
        with np.errstate(all="ignore"):  # NaN and Inf propagate silently, as in torch
            self._magnitude_update(p, grad, state, group)
        return None

    def _magnitude_update(self, p, grad, state, group):
        t = p.data.real.dtype.type
        a, eps, lr, mu, wd = (t(group[k]) for k in ("alpha", "eps", "lr", "momentum", "weight_decay"))
        g = -grad if group["maximize"] else grad
        if wd:
            g = g + wd * p.data
        v = state["square_avg"]
        v[...] = v.real * a + (t(1) - a) * (g.real * g.real + g.imag * g.imag)
        var = v.real
        if group["centered"]:
            ga = state["grad_avg"]
            ga[...] = ga + (t(1) - a) * (g - ga)
            var = var - (ga.real * ga.real + ga.imag * ga.imag)
        avg = np.sqrt(var) + eps
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf[...] = buf * mu + g / avg
            p.data[...] = p.data - lr * buf
        else:
            p.data[...] = p.data - lr * g / avg


class ComplexRefused(_Honest):
    """Complex parameters refused at construction (``TypeError``), where torch optimizes them."""

    def __init__(self, params, *args, **kwargs):
        super().__init__(params, *args, **kwargs)
        for group in self.param_groups:
            if any(np.iscomplexobj(p.data) for p in group["params"]):
                raise TypeError("RMSprop optimizes real floating-point parameters only")


class EmptyGradCrashes(_Honest):
    """A non-finite gradient screen written with ``max``, which raises on an empty parameter (torch steps it)."""

    def _update(self, p, grad, state, group, **changes):
        self.saw_nonfinite = not np.isfinite(np.max(np.abs(grad)))  # ValueError on a zero-size array
        super()._update(p, grad, state, group, **changes)


MUTANTS = (
    ZeroGradSkipped,
    AllZeroGradSkipped,
    InfClipped,
    SubnormalsFlushed,
    TailBlockDropped,
    StateKeyedByShape,
    EagerState,
    LexicographicStateOrder,
    ComplexAsMagnitude,
    ComplexRefused,
    EmptyGradCrashes,
)
