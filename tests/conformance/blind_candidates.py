"""Blind validation set for the RMSprop conformance harness: 20 wrong and 6 honest candidates.

Written without reading the harness or its mutant catalogue.  Every class has
the interface of :class:`lucid.optim.RMSprop` (torch's constructor, ``param_groups``,
``state`` with torch's buffer names, ``step(closure)``, ``zero_grad``,
``state_dict``/``load_state_dict`` in torch's layout with NumPy arrays).

* :data:`WRONG`: each differs from ``torch.optim.RMSprop`` (torch 2.13, CPU) on some
  input; the class docstring names the bug and the real implementation (if any)
  that shipped it.
* :data:`HONEST`: each computes torch's algebra with another legitimate rounding
  (unfused operations, wider intermediates, a reciprocal multiply, ...) or holds
  its state as torch does; a conformance check must not flag them.

All candidates share :class:`_Candidate`, a plain re-implementation of torch's
single-tensor step (``_single_tensor_rmsprop``: the default on CPU) in NumPy: one
method per torch kernel, so that a candidate changes one thing.  The emulated
fused multiply-add is Lucid's (:func:`lucid._fma.fma`).  Like Lucid's optimizer,
the step checks every group and gradient before it writes anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lucid._fma import fma
from lucid._grad_mode import enable_grad
from lucid.optim import RMSprop
from lucid.optim.optimizer import hyperparameters
from lucid.tensor import Tensor

__all__ = ["HONEST", "WRONG"]

Array = NDArray[Any]
Hyper = dict[str, Any]


# --------------------------------------------------------------------------- helpers
def _torch_lerp(start: Array, end: Array, weight: Any) -> Array:
    """torch's CPU ``lerp_``: ``fma(w, end - start, start)`` for ``w < 0.5``, else anchored at ``end``."""
    t = start.dtype.type
    diff = end - start
    if weight < 0.5:
        return fma(t(weight), diff, start)
    return fma(-diff, t(1) - t(weight), end)


def _lerp_unfused(start: Array, end: Array, weight: Any, kind: type | None = None) -> Array:
    """torch's two-branch lerp with the multiply and the add rounded apart, in ``kind`` (default: the dtype).

    The branches keep torch's exact endpoints (weight 0 gives ``start``, weight 1 ``end``)
    and its NaN for an infinite ``end`` at weights >= 0.5 (``end - inf * (1 - w)``).
    """
    kind = kind or start.dtype.type
    s, e = start.astype(kind), end.astype(kind)
    diff = e - s
    if weight < 0.5:
        return (s + kind(weight) * diff).astype(start.dtype)
    return (e - diff * (kind(1) - kind(weight))).astype(start.dtype)


def _wide(dtype: np.dtype[Any]) -> type:
    """A float type wider than ``dtype``: float64 for float32, x87 extended for float64."""
    return np.float64 if dtype == np.float32 else np.longdouble


def _ftz(a: Array) -> Array:
    """Flush subnormals to (signed) zero, as a CPU in FTZ/DAZ mode or XLA does."""
    return np.where(np.abs(a) < np.finfo(a.dtype).tiny, np.copysign(a.dtype.type(0), a), a)


def _add_toward_zero(a: Array, b: Array) -> Array:
    """``a + b`` rounded toward zero instead of to nearest (TwoSum gives the rounding error)."""
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)
    away = np.isfinite(err) & (err != 0) & (np.sign(err) != np.sign(s))  # RN(a + b) was rounded away from zero
    return np.where(away, np.nextafter(s, s.dtype.type(0)), s)


def _parts(array: Array | None, count: int) -> list[Array | None]:
    """``array`` (count 1) or its (real, imag) views (count 2, a complex parameter): torch's ``view_as_real``."""
    if array is None:
        return [None] * count
    return [array] if count == 1 else [array.real, array.imag]


def _zip_parts(*arrays: Array | None) -> Iterable[tuple[Any, ...]]:
    """The real arrays torch's step runs on, one tuple a part (``arrays[0]``: the parameter)."""
    count = 2 if np.iscomplexobj(arrays[0]) else 1
    return zip(*(_parts(a, count) for a in arrays))


# --------------------------------------------------------------------------- the shared base
class _Candidate(RMSprop):
    """torch's single-tensor RMSprop step, one overridable method per torch kernel."""

    # ----- the step loop
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._apply_all(self._collect())
        return loss

    def _collect(self) -> list[tuple[int, Hyper, Tensor, Array]]:
        """Check every group and gradient (as Lucid does, before anything is written); return the work."""
        hypers = self._checked_groups()
        work = []
        for gi, (group, hyper) in enumerate(zip(self.param_groups, hypers)):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                work.append((gi, self._hyper(gi, hyper), p, self._checked_grad(p, f"param_groups[{gi}][{pi}]")))
        return work

    def _apply_all(self, work: list[tuple[int, Hyper, Tensor, Array]]) -> None:
        with np.errstate(all="ignore"):
            for _, hyper, p, grad in work:
                self._step_param(p, grad, self._state_for(p, hyper), hyper)

    def _hyper(self, gi: int, hyper: Hyper) -> Hyper:
        """The hyperparameters group ``gi``'s step uses (``hyper``: the group's, checked)."""
        return hyper

    # ----- one parameter
    def _step_param(self, p: Tensor, grad: Array, state: dict[str, Any], h: Hyper) -> None:
        state["step"] += 1.0
        param = p.data
        g = self._effective_grad(param, grad, h)
        ga = state["grad_avg"] if h["centered"] else None
        buf = state["momentum_buffer"] if h["momentum"] > 0 else None
        for pp, gg, vv, aa, bb in _zip_parts(param, g, state["square_avg"], ga, buf):
            self._real_update(pp, gg, vv, aa, bb, h)

    def _effective_grad(self, param: Array, grad: Array, h: Hyper) -> Array:
        """``grad = -grad if maximize``; ``grad = grad.add(param, alpha=wd)`` (complex: in complex arithmetic)."""
        g = -grad if h["maximize"] else grad
        if h["weight_decay"] != 0:
            g = self._decay(param, g, h["weight_decay"])
        return g

    def _decay(self, param: Array, g: Array, wd: float) -> Array:
        if np.iscomplexobj(param):
            return g + param * param.dtype.type(wd)
        return fma(param, param.dtype.type(wd), g)

    # ----- the real update, kernel by kernel
    def _real_update(self, p: Array, g: Array, v: Array, ga: Array | None, buf: Array | None, h: Hyper) -> None:
        np.copyto(v, self._square_avg(v, g, h))  # square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha)
        if ga is not None:
            np.copyto(ga, self._grad_avg(ga, g, h))  # grad_avg.lerp_(g, 1 - alpha)
        avg = self._root_plus_eps(self._variance(v, ga), h)  # (square_avg - grad_avg^2).sqrt_().add_(eps)
        if buf is not None:
            np.copyto(buf, self._momentum(buf, g, avg, h))  # buf.mul_(momentum).addcdiv_(g, avg)
            np.copyto(p, self._param_momentum(p, buf, h))  # param.add_(buf, alpha=-lr)
        else:
            np.copyto(p, self._param_step(p, g, avg, h))  # param.addcdiv_(g, avg, value=-lr)

    def _one_minus_alpha(self, t: type, h: Hyper) -> Any:
        return t(1 - h["alpha"])

    def _square_avg(self, v: Array, g: Array, h: Hyper) -> Array:
        t = v.dtype.type
        return fma(self._one_minus_alpha(t, h) * g, g, v * t(h["alpha"]))

    def _grad_avg(self, ga: Array, g: Array, h: Hyper) -> Array:
        return _torch_lerp(ga, g, self._one_minus_alpha(ga.dtype.type, h))

    def _variance(self, v: Array, ga: Array | None) -> Array:
        return v if ga is None else fma(-ga, ga, v)

    def _root_plus_eps(self, var: Array, h: Hyper) -> Array:
        return np.sqrt(var) + var.dtype.type(h["eps"])

    def _momentum(self, buf: Array, g: Array, avg: Array, h: Hyper) -> Array:
        return buf * buf.dtype.type(h["momentum"]) + g / avg

    def _param_momentum(self, p: Array, buf: Array, h: Hyper) -> Array:
        return fma(buf, p.dtype.type(-h["lr"]), p)

    def _param_step(self, p: Array, g: Array, avg: Array, h: Hyper) -> Array:
        return p + (p.dtype.type(-h["lr"]) * g) / avg


# =========================================================================== WRONG
# ----- formula details at boundary hyperparameters
class OneMinusAlphaInParamDtype(_Candidate):
    """``1 - alpha`` is computed in the parameter's dtype (``float32(1) - float32(alpha)``), not in double.

    tf.keras OptimizerV2's RMSprop computes ``one_minus_rho = 1. - rho`` after casting
    ``rho`` to the variable's dtype.  ``square_avg`` is off by 10 ULP at alpha=0.99, by
    ~2e-4 relative at 0.9999, and alpha=1-1e-8 (float32(alpha) == 1) gives ``1 - alpha == 0``,
    so ``square_avg`` stays 0 and the step is ``lr * g / eps``; float64 is unaffected.
    """

    def _one_minus_alpha(self, t: type, h: Hyper) -> Any:
        return t(1) - t(h["alpha"])


class EpsZeroFallsBackToDefault(_Candidate):
    """``eps=0`` is replaced by a default epsilon of 1e-7 (``epsilon or backend.epsilon()``).

    tf.keras OptimizerV2 (RMSprop, Adam, ...) wrote ``self.epsilon = epsilon or
    backend_config.epsilon()``, so an explicit 0 became 1e-7.
    """

    def _hyper(self, gi: int, hyper: Hyper) -> Hyper:
        return {**hyper, "eps": hyper["eps"] or 1e-7}


class NaiveLerpGradAvg(_Candidate):
    """The centered mean gradient uses the unbranched ``ga + (1-alpha)(g - ga)``, not exact at alpha=0.

    torch's lerp switches to the ``end``-anchored form for weights >= 0.5 so that weight 1
    returns ``end``; tenstorrent's ``ttnn.lerp`` shipped the single naive form
    (tt-metal#53279).  With alpha=0 and an old mean much larger than the gradient the
    result cancels to 0 instead of ``g``.
    """

    def _grad_avg(self, ga: Array, g: Array, h: Hyper) -> Array:
        return ga + self._one_minus_alpha(ga.dtype.type, h) * (g - ga)


# ----- large tensors
class ChunkTailEpsInsideSqrt(_Candidate):
    """On tensors over 65536 elements, the last partial 65536-chunk uses ``sqrt(v + eps)`` (eps inside).

    A vectorised main loop with a scalar remainder loop written from another formula;
    the remainder uses TensorFlow's ApplyRMSProp / old MXNet formula (eps under the root,
    apache/mxnet#4493, jax#1427).  Invisible on tensors of <= 65536 elements and on
    multiples of 65536; in the tail, off wherever ``(1-alpha) g^2`` is not far above eps
    (|g| below ~1e-2 at the defaults), by up to ~40% of the step.
    """

    CHUNK = 65536

    def _root_plus_eps(self, var: Array, h: Hyper) -> Array:
        avg = super()._root_plus_eps(var, h)
        tail = (var.size // self.CHUNK) * self.CHUNK
        if var.size <= self.CHUNK or tail == var.size:
            return avg
        flat = avg.reshape(-1).copy()
        flat[tail:] = np.sqrt(var.reshape(-1)[tail:] + var.dtype.type(h["eps"]))
        return flat.reshape(var.shape)


# ----- exact zeros, infinities, subnormals in a gradient
class FlushSubnormals(_Candidate):
    """Subnormal inputs and results are flushed to zero (FTZ/DAZ), torch's CPU path keeps them.

    XLA (JAX on CPU, TPU) and CuPy's ``-ftz=true`` builds flush subnormals
    (jax#16200, jax#37762, cupy#8382).  With eps=0, a gradient of 1e-20 in float32 makes
    ``(1-alpha) g^2`` subnormal: torch keeps it and steps by lr*10, FTZ divides by 0.
    """

    def _real_update(self, p: Array, g: Array, v: Array, ga: Array | None, buf: Array | None, h: Hyper) -> None:
        for a in (p, v, ga, buf):
            if a is not None:
                np.copyto(a, _ftz(a))
        super()._real_update(p, _ftz(g), v, ga, buf, h)
        np.copyto(p, _ftz(p))

    def _square_avg(self, v: Array, g: Array, h: Hyper) -> Array:
        return _ftz(super()._square_avg(v, g, h))

    def _grad_avg(self, ga: Array, g: Array, h: Hyper) -> Array:
        return _ftz(super()._grad_avg(ga, g, h))

    def _variance(self, v: Array, ga: Array | None) -> Array:
        return _ftz(super()._variance(v, ga))

    def _root_plus_eps(self, var: Array, h: Hyper) -> Array:
        return _ftz(super()._root_plus_eps(var, h))

    def _momentum(self, buf: Array, g: Array, avg: Array, h: Hyper) -> Array:
        return _ftz(super()._momentum(buf, g, avg, h))


class SelectiveZeroGradUpdates(_Candidate):
    """Elements whose gradient is exactly zero are left alone: no decay of their state, no momentum step.

    OLMo's ``selective_updates`` option (allenai/OLMo#636: ``mask = grad != 0``), like
    TensorFlow's sparse/lazy apply; torch decays ``square_avg`` and applies the momentum
    buffer (and weight decay) on every element of a parameter that has a gradient.
    """

    def _step_param(self, p: Tensor, grad: Array, state: dict[str, Any], h: Hyper) -> None:
        keep = grad == 0
        arrays = [p.data] + [state[k] for k in ("square_avg", "grad_avg", "momentum_buffer") if k in state]
        before = [a.copy() for a in arrays]
        super()._step_param(p, grad, state, h)
        for a, old in zip(arrays, before):
            np.copyto(a, old, where=keep)


class SkipNonFiniteStep(_Candidate):
    """A step whose gradients hold any inf or NaN is skipped entirely; torch applies it (NaN params follow).

    ``optax.apply_if_finite`` and ``torch.amp.GradScaler`` skip such steps; an optimizer
    with that guard built in changes nothing (not even ``step``) where torch writes NaN.
    """

    def _apply_all(self, work: list[tuple[int, Hyper, Tensor, Array]]) -> None:
        if all(np.isfinite(grad).all() for *_, grad in work):
            super()._apply_all(work)


# ----- parameters of the same shape, many parameters
class StateKeyedByShape(_Candidate):
    """State is keyed by (shape, dtype), so parameters of the same shape share one state entry.

    HeavyBall keyed optimizer state by ``(data_ptr, shape)`` and different parameters
    ended up writing the same state (HomebrewML/HeavyBall#11).
    """

    def _state_for(self, param: Tensor, group: Hyper) -> dict[str, Any]:
        shared = self.__dict__.setdefault("_by_shape", {})
        key = (param.shape, param.dtype.str)
        if key in shared and param not in self.state:
            self.state[param] = shared[key]
        state = super()._state_for(param, group)
        shared.setdefault(key, state)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.__dict__["_by_shape"] = {}


class ManyParamsStateCopy(_Candidate):
    """Groups of more than 16 real parameters take a packed path whose new state is never written back.

    The flat path concatenates (copies) the parameters and buffers, updates the copies and
    writes back only the parameters, so their state restarts from zero every step.
    Plausible (multi-tensor packing as in apex/MXNet aggregation); no known release.
    """

    PACK = 16

    def _apply_all(self, work: list[tuple[int, Hyper, Tensor, Array]]) -> None:
        groups: dict[int, list[tuple[int, Hyper, Tensor, Array]]] = {}
        for item in work:
            groups.setdefault(item[0], []).append(item)
        with np.errstate(all="ignore"):
            for items in groups.values():
                dtypes = {p.dtype for _, _, p, _ in items}
                if len(items) <= self.PACK or len(dtypes) != 1 or np.iscomplexobj(items[0][2].data):
                    for _, h, p, grad in items:
                        self._step_param(p, grad, self._state_for(p, h), h)
                    continue
                h = items[0][1]
                states = [self._state_for(p, h) for _, _, p, _ in items]
                for state in states:
                    state["step"] += 1.0
                flat_p = np.concatenate([p.data.ravel() for _, _, p, _ in items])
                flat_g = np.concatenate([grad.ravel() for *_, grad in items])
                flat_g = self._effective_grad(flat_p, flat_g, h)
                flat = {
                    k: np.concatenate([s[k].ravel() for s in states])
                    for k in ("square_avg", "grad_avg", "momentum_buffer")
                    if k in states[0]
                }
                self._real_update(
                    flat_p,
                    flat_g,
                    flat["square_avg"],
                    flat.get("grad_avg") if h["centered"] else None,
                    flat.get("momentum_buffer") if h["momentum"] > 0 else None,
                    h,
                )
                start = 0
                for _, _, p, _ in items:
                    p.data[...] = flat_p[start : start + p.data.size].reshape(p.shape)
                    start += p.data.size


# ----- parameters whose first gradient comes late
class NoneGradAsZero(_Candidate):
    """A parameter whose ``.grad`` is None is stepped as if its gradient were zero (so weight decay moves it).

    torch skips such parameters; Muon applied weight decay to parameters without a
    gradient (KellerJordan/Muon#54), and Chainer zero-filled missing gradients
    (chainer/chainer#1913).  Visible with weight decay or momentum, and in ``state``.
    """

    def _collect(self) -> list[tuple[int, Hyper, Tensor, Array]]:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = np.zeros_like(p.data)
                    self.__dict__.setdefault("_filled", []).append(p)
        try:
            return super()._collect()
        finally:
            for p in self.__dict__.pop("_filled", []):
                p.grad = None


# ----- hyperparameters other than lr changed mid-run
class CachedHyperparams(_Candidate):
    """Every hyperparameter but ``lr`` is read once, when its group is added; later edits are ignored.

    Ports that copy a group's settings into attributes at construction and let only
    learning-rate schedulers through; torch reads the whole group at every step.
    """

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.__dict__.setdefault("_frozen", []).append(hyperparameters(self.param_groups[-1]))

    def _hyper(self, gi: int, hyper: Hyper) -> Hyper:
        return {**self.__dict__["_frozen"][gi], "lr": hyper["lr"]}


# ----- state_dict / load_state_dict
class LoadKeepsConstructorHypers(_Candidate):
    """``load_state_dict`` restores the buffers but keeps this optimizer's own hyperparameters.

    torch takes the saved groups' hyperparameters; Keras' ``optimizer.set_weights``-style
    restores (slot variables only) keep the constructor's.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        kept = [hyperparameters(g) for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, hyper in zip(self.param_groups, kept):
            group.update(hyper)


class StateDictInsertionOrder(_Candidate):
    """``state_dict()['state']`` is numbered in the order the state entries were created, not by param position.

    torch numbers state by the parameter's position in ``param_groups``; numbering by
    creation order (first gradient) swaps entries when a parameter's first gradient comes
    late, and a round trip then swaps their buffers.  Plausible; no known release.
    """

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        position = {id(p): i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        saved["state"] = {k: saved["state"][position[id(p)]] for k, p in enumerate(self.state)}
        return saved


# ----- the optimizer API
class ZeroGradDefaultFalse(_Candidate):
    """``zero_grad()`` defaults to ``set_to_none=False``: gradients become zeros, not None.

    torch before 2.0 (the default changed in torch 2.0).  A step after ``zero_grad()``
    then moves parameters with momentum or weight decay, where torch skips them.
    """

    def zero_grad(self, set_to_none: bool = False) -> None:
        super().zero_grad(set_to_none)


class ClosureAfterGradRead(_Candidate):
    """The gradients are read before the closure runs, so the step uses the previous gradients.

    torch evaluates the closure first and then reads ``.grad``.  Plausible; no known release.
    """

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        work = self._collect()
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._apply_all(work)
        return loss


class KerasPositionalOrder(RMSprop):
    """Positional arguments follow Keras' order ``(lr, rho, momentum, epsilon, centered)``, not torch's.

    tf.keras' ``RMSprop(learning_rate, rho, momentum, epsilon, centered)``; a port that
    kept it makes ``RMSprop(params, 0.01, 0.9, 0.5)`` a momentum of 0.5 instead of eps=0.5.
    Keyword construction is right.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-2,
        alpha: float = 0.99,
        momentum: float = 0.0,
        eps: float = 1e-8,
        centered: bool = False,
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )


class GradModifiedInPlace(_Candidate):
    """``maximize`` and weight decay are applied to ``p.grad`` in place, so ``.grad`` changes during ``step``.

    torch's SGD did ``d_p.add_(weight_decay, p.data)`` on ``p.grad`` (pytorch#12218); an
    in-place RMSprop version was proposed and rejected for that reason (pytorch#18732).
    """

    def _effective_grad(self, param: Array, grad: Array, h: Hyper) -> Array:
        if h["maximize"]:
            np.negative(grad, out=grad)
        if h["weight_decay"] != 0:
            np.copyto(grad, self._decay(param, grad, h["weight_decay"]))
        return grad


# ----- complex parameters
class ComplexAbsSquare(_Candidate):
    """Complex parameters use ``|g|^2`` for both parts' mean square, where torch squares each part.

    optax's ``scale_by_rms`` (``abs_sq``) and Flux (FluxML/Flux.jl#1776) treat a complex
    parameter as one number; torch views it as independent real pairs (pytorch#83860).
    """

    def _step_param(self, p: Tensor, grad: Array, state: dict[str, Any], h: Hyper) -> None:
        if not np.iscomplexobj(p.data):
            super()._step_param(p, grad, state, h)
            return
        state["step"] += 1.0
        g = self._effective_grad(p.data, grad, h)
        magnitude = np.abs(g)
        ga = state["grad_avg"] if h["centered"] else None
        buf = state["momentum_buffer"] if h["momentum"] > 0 else None
        for pp, gg, vv, aa, bb in _zip_parts(p.data, g, state["square_avg"], ga, buf):
            np.copyto(vv, self._square_avg(vv, magnitude, h))
            self._real_update_after_square(pp, gg, vv, aa, bb, h)

    def _real_update_after_square(
        self, p: Array, g: Array, v: Array, ga: Array | None, buf: Array | None, h: Hyper
    ) -> None:
        if ga is not None:
            np.copyto(ga, self._grad_avg(ga, g, h))
        avg = self._root_plus_eps(self._variance(v, ga), h)
        if buf is not None:
            np.copyto(buf, self._momentum(buf, g, avg, h))
            np.copyto(p, self._param_momentum(p, buf, h))
        else:
            np.copyto(p, self._param_step(p, g, avg, h))


# ----- small systematic biases
class RoundParamTowardZero(_Candidate):
    """The final parameter update ``p + u`` is rounded toward zero instead of to nearest.

    A truncating store (as bfloat16/float32 truncation on some accelerators, or a
    fixed-point "round down" kernel): at most 1 ULP a step beyond torch's rounding, but
    toward zero on about half the elements (a mean of -0.45 ULP a step), so parameters
    drift; stays under any max-error tolerance of a few ULP per step.  Plausible.
    """

    def _param_momentum(self, p: Array, buf: Array, h: Hyper) -> Array:
        return _add_toward_zero(p, buf * p.dtype.type(-h["lr"]))

    def _param_step(self, p: Array, g: Array, avg: Array, h: Hyper) -> Array:
        return _add_toward_zero(p, (p.dtype.type(-h["lr"]) * g) / avg)


# ----- float32 vs float64
class Float32Hyperparams(_Candidate):
    """Hyperparameters are held as float32 scalars, so float64 parameters step with float32-rounded lr, alpha, ...

    tf.keras OptimizerV2 stores hyperparameters as float32 variables and casts them to
    the variable's dtype; tinygrad kept ``lr`` in the default (half) float
    (tinygrad/tinygrad#4297).  float32 parameters are exact; float64 steps are off by
    ~1e-8 relative (1e7 ULP of a parameter of 1 after one step, yet under an rtol of 1e-6).
    """

    def _hyper(self, gi: int, hyper: Hyper) -> Hyper:
        rounded = {k: float(np.float32(hyper[k])) for k in ("lr", "alpha", "eps", "weight_decay", "momentum")}
        return {**hyper, **rounded, "one_minus_alpha": float(np.float32(1 - hyper["alpha"]))}

    def _one_minus_alpha(self, t: type, h: Hyper) -> Any:
        return t(h["one_minus_alpha"])


WRONG = (
    OneMinusAlphaInParamDtype,
    EpsZeroFallsBackToDefault,
    NaiveLerpGradAvg,
    ChunkTailEpsInsideSqrt,
    FlushSubnormals,
    SelectiveZeroGradUpdates,
    SkipNonFiniteStep,
    StateKeyedByShape,
    ManyParamsStateCopy,
    NoneGradAsZero,
    CachedHyperparams,
    LoadKeepsConstructorHypers,
    StateDictInsertionOrder,
    ZeroGradDefaultFalse,
    ClosureAfterGradRead,
    KerasPositionalOrder,
    GradModifiedInPlace,
    ComplexAbsSquare,
    RoundParamTowardZero,
    Float32Hyperparams,
)


# =========================================================================== HONEST
class UnfusedArithmetic(_Candidate):
    """Honest: torch's fused multiply-adds are separate multiplies and adds in the dtype, but for ``v - ga^2``.

    Weight decay ``g + p*wd``, ``v*alpha + ((1-alpha)*g)*g``, torch's two-branch lerp (exact
    at alpha 0 and 1) and ``p + buf*(-lr)`` are unfused.
    The centered ``v - ga*ga`` stays fused as in torch: unfused, ``ga*ga`` overflows where
    torch's exact product does not (float32 gradients near 1e19 and up), and inf - inf is NaN.
    """

    def _decay(self, param: Array, g: Array, wd: float) -> Array:
        return g + param * param.dtype.type(wd)

    def _square_avg(self, v: Array, g: Array, h: Hyper) -> Array:
        t = v.dtype.type
        return v * t(h["alpha"]) + (t(1 - h["alpha"]) * g) * g

    def _grad_avg(self, ga: Array, g: Array, h: Hyper) -> Array:
        return _lerp_unfused(ga, g, self._one_minus_alpha(ga.dtype.type, h))

    def _param_momentum(self, p: Array, buf: Array, h: Hyper) -> Array:
        return p + buf * p.dtype.type(-h["lr"])


class WideIntermediates(_Candidate):
    """Honest: each torch kernel evaluated in a wider float (float64 for float32, x87 extended for float64).

    Every tensor torch writes (the decayed gradient, ``square_avg``, ``grad_avg``, the
    denominator, the momentum buffer, the parameter) is rounded once to the dtype.  The
    centered ``v - ga^2`` stays torch's fused one (its exact product matters at alpha=0,
    where the result is the rounding residual of ``g^2``), and ``-lr * g`` is rounded in the
    dtype as in torch's addcdiv (with eps=0, a subnormal gradient underflows there, giving
    torch's 0/0 = NaN; computed wide it would be ``-inf``).
    """

    def _decay(self, param: Array, g: Array, wd: float) -> Array:
        if np.iscomplexobj(param):
            return super()._decay(param, g, wd)
        w = _wide(param.dtype)
        return (param.astype(w) * w(wd) + g.astype(w)).astype(param.dtype)

    def _square_avg(self, v: Array, g: Array, h: Hyper) -> Array:
        w = _wide(v.dtype)
        wg = g.astype(w)
        return (w(h["alpha"]) * v.astype(w) + w(1 - h["alpha"]) * wg * wg).astype(v.dtype)

    def _grad_avg(self, ga: Array, g: Array, h: Hyper) -> Array:
        return _lerp_unfused(ga, g, 1 - h["alpha"], _wide(ga.dtype))

    def _root_plus_eps(self, var: Array, h: Hyper) -> Array:
        w = _wide(var.dtype)
        return (np.sqrt(var.astype(w)) + w(h["eps"])).astype(var.dtype)

    def _momentum(self, buf: Array, g: Array, avg: Array, h: Hyper) -> Array:
        w = _wide(buf.dtype)
        return (w(h["momentum"]) * buf.astype(w) + g.astype(w) / avg.astype(w)).astype(buf.dtype)

    def _param_momentum(self, p: Array, buf: Array, h: Hyper) -> Array:
        w = _wide(p.dtype)
        return (p.astype(w) - w(h["lr"]) * buf.astype(w)).astype(p.dtype)

    def _param_step(self, p: Array, g: Array, avg: Array, h: Hyper) -> Array:
        w = _wide(p.dtype)
        scaled = (p.dtype.type(-h["lr"]) * g).astype(w)  # rounded in the dtype, as addcdiv's value*g
        return (p.astype(w) + scaled / avg.astype(w)).astype(p.dtype)


class ReciprocalMultiply(_Candidate):
    """Honest: divisions by the denominator are multiplications by its rounded reciprocal."""

    def _momentum(self, buf: Array, g: Array, avg: Array, h: Hyper) -> Array:
        t = buf.dtype.type
        return buf * t(h["momentum"]) + g * (t(1) / avg)

    def _param_step(self, p: Array, g: Array, avg: Array, h: Hyper) -> Array:
        t = p.dtype.type
        return p + (t(-h["lr"]) * g) * (t(1) / avg)


class WideRootPlusEps(_Candidate):
    """Honest: ``sqrt(v) + eps`` is evaluated wider and rounded once (torch rounds the root, then the sum)."""

    def _root_plus_eps(self, var: Array, h: Hyper) -> Array:
        w = _wide(var.dtype)
        return (np.sqrt(var.astype(w)) + w(h["eps"])).astype(var.dtype)


class TorchStyleState(_Candidate):
    """Honest: torch's arithmetic, with ``state['step']`` held as torch holds it (a 0-d float32 array)."""

    @staticmethod
    def _as_torch_step(state: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(state.get("step"), np.ndarray):
            state["step"] = np.array(state.get("step", 0.0), dtype=np.float32)
        return state

    def _state_for(self, param: Tensor, group: Hyper) -> dict[str, Any]:
        return self._as_torch_step(super()._state_for(param, group))

    def _check_state(self, param: Tensor, group: Hyper, entry: Any, where: str) -> dict[str, Any]:
        return self._as_torch_step(super()._check_state(param, group, entry, where))

    def _checked_grad(self, param: Tensor, where: str) -> Array:
        state = self.state.get(param)
        step = None if state is None else state.get("step")
        if not isinstance(step, np.ndarray) or step.shape != ():
            return super()._checked_grad(param, where)
        state["step"] = float(step)  # Lucid's check wants a number; the array comes back unchanged
        try:
            return super()._checked_grad(param, where)
        finally:
            state["step"] = step


class BlockedWideSquareAvg(_Candidate):
    """Honest: the step runs on 32768-element blocks (tail included); ``square_avg`` is accumulated wider."""

    BLOCK = 32768

    def _real_update(self, p: Array, g: Array, v: Array, ga: Array | None, buf: Array | None, h: Hyper) -> None:
        if p.size <= self.BLOCK:
            super()._real_update(p, g, v, ga, buf, h)
            return
        arrays = [p, g, v, ga, buf]
        flats = [None if a is None else a.reshape(-1) for a in arrays]  # a copy where a is strided
        for start in range(0, p.size, self.BLOCK):
            block = slice(start, start + self.BLOCK)
            fp, fg, fv, fga, fbuf = (None if f is None else f[block] for f in flats)
            super()._real_update(fp, fg, fv, fga, fbuf, h)
        for a, f in zip(arrays, flats):
            if a is not None and a is not g:
                np.copyto(a, f.reshape(a.shape))

    def _square_avg(self, v: Array, g: Array, h: Hyper) -> Array:
        w = _wide(v.dtype)
        wg = g.astype(w)
        return (w(h["alpha"]) * v.astype(w) + w(1 - h["alpha"]) * wg * wg).astype(v.dtype)


HONEST = (
    UnfusedArithmetic,
    WideIntermediates,
    ReciprocalMultiply,
    WideRootPlusEps,
    TorchStyleState,
    BlockedWideSquareAvg,
)
