"""A catalogue of wrong RMSprop implementations (and two legitimate variants), as candidate classes.

Each class has RMSprop's constructor and Lucid's Optimizer interface, so the
harness can run it by import path::

    python -m conformance check --optimizer tests.conformance.mutants:EpsInsideRoot

``test_mutants.py`` asserts that the harness catches every mutant, names the
check that does, and that the legitimate variants (:class:`Unfused`,
:class:`WiderIntermediates`) pass: a different but honest rounding is not a
drift.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lucid import enable_grad
from lucid.optim import RMSprop
from lucid.optim.functional import rmsprop_update

_HYPER = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")


class _Honest(RMSprop):
    """Lucid's step, through a hook that subclasses bend."""

    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:  # torch's contract: once, with gradients enabled, its loss returned
            with enable_grad():
                loss = closure()
        for group in self.param_groups:  # every gradient checked before anything changes, as torch refuses them
            for p in group["params"]:
                if p.grad is not None and not self._grad_fits(p):
                    raise ValueError(
                        f"a gradient {p.grad.dtype}{p.grad.shape} for a {p.data.dtype}{p.data.shape} parameter"
                    )
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_for(p, group)
                state["step"] += 1.0
                self._update(p, p.grad, state, group)
        return loss

    def _grad_fits(self, p: Any) -> bool:
        """Whether ``p.grad`` has ``p``'s shape and dtype (what this step accepts)."""
        return (p.grad.shape, p.grad.dtype) == (p.data.shape, p.data.dtype)

    def _update(self, p: Any, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any], **changes: Any) -> None:
        h = {k: group[k] for k in _HYPER} | changes
        rmsprop_update(
            p.data,
            grad,
            state["square_avg"],
            state.get("grad_avg") if h["centered"] else None,
            state.get("momentum_buffer") if h["momentum"] > 0 else None,
            **h,
        )


class Unfused(_Honest):
    """LEGITIMATE: the formula with every operation rounded separately (no fused multiply-add).

    A different rounding of the same algebra; each value stays within a few
    roundings of the exact step, as the lockstep bound's derivation allows, and
    its errors have no preferred sign.  The harness must *not* flag it.
    """

    eps_inside = False
    lr_inside = False
    subtract_mean = True
    mean_weight_is_alpha = False

    def _update(self, p: Any, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any], **changes: Any) -> None:
        g = -grad if group["maximize"] else grad
        buffers = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
        with np.errstate(all="ignore"):  # NaN and Inf propagate silently, as in torch
            if group["weight_decay"]:  # complex: in complex arithmetic, as torch's foreach=False path
                g = g + p.data.dtype.type(group["weight_decay"]) * p.data
            if not np.iscomplexobj(p.data):
                return self._update_real(p.data, g, buffers, group)
            # the rest on the (real, imaginary) parts, as torch's step on view_as_real
            for part in ("real", "imag"):
                self._update_real(
                    getattr(p.data, part), getattr(g, part), {k: getattr(v, part) for k, v in buffers.items()}, group
                )
        return None

    def _update_real(
        self, data: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray], group: dict[str, Any]
    ) -> None:
        """The step after the decay on real arrays (views into the parameter and buffers, written in place)."""
        t = data.dtype.type
        lr, a, eps, mu = (t(group[k]) for k in ("lr", "alpha", "eps", "momentum"))
        one_minus_alpha = t(1 - group["alpha"])  # torch's scalar: rounded once from the Python float
        v = state["square_avg"]
        v[...] = v * a + one_minus_alpha * g * g
        var = v
        if group["centered"]:
            ga = state["grad_avg"]
            w = a if self.mean_weight_is_alpha else one_minus_alpha
            ga[...] = ga + w * (g - ga)
            var = v - ga * ga if self.subtract_mean else v
        avg = np.sqrt(var + eps) if self.eps_inside else np.sqrt(var) + eps
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            if self.lr_inside:
                buf[...] = buf * mu + lr * g / avg
                data[...] = data - buf
            else:
                buf[...] = buf * mu + g / avg
                data[...] = data - lr * buf
        else:
            data[...] = data - lr * g / avg


#: The wider dtype :class:`WiderIntermediates` computes each narrow dtype in.
_WIDER = {np.dtype(np.float32): np.float64, np.dtype(np.complex64): np.complex128}


class WiderIntermediates(_Honest):
    """LEGITIMATE: float32 (complex64) computed in float64 (complex128), rounded once at the end (more accurate)."""

    def _update(self, p: Any, grad: np.ndarray, state: dict[str, Any], group: dict[str, Any], **changes: Any) -> None:
        wider = _WIDER.get(p.data.dtype)
        if wider is None:
            return super()._update(p, grad, state, group)
        wide = {k: v.astype(wider) for k, v in state.items() if isinstance(v, np.ndarray)}
        param = p.data.astype(wider)
        h = {k: group[k] for k in _HYPER}
        rmsprop_update(
            param,
            grad.astype(wider),
            wide["square_avg"],
            wide.get("grad_avg") if h["centered"] else None,
            wide.get("momentum_buffer") if h["momentum"] > 0 else None,
            **h,
        )
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf there, silently, as in torch
            p.data[...] = param
            for k, v in wide.items():
                state[k][...] = v
        return None


# ------------------------------------------------------------------ mutants: the list


class EpsInsideRoot(Unfused):
    """The textbook denominator sqrt(v + eps) instead of torch's sqrt(v) + eps."""

    eps_inside = True


class LrInsideMomentum(Unfused):
    """buf = mu*buf + lr*g/avg; p -= buf (lr inside the buffer; differs once lr changes, and in the state)."""

    lr_inside = True


class AlphaSwapped(_Honest):
    """v = (1 - alpha)*v + alpha*g^2: the smoothing constant on the wrong term."""

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group, alpha=1.0 - group["alpha"])


class CenteredWithoutMean(Unfused):
    """Centered mode keeps grad_avg but divides by sqrt(v) instead of sqrt(v - grad_avg^2)."""

    subtract_mean = False


class DecoupledWeightDecay(_Honest):
    """AdamW-style p *= 1 - lr*wd, and the gradient left undecayed."""

    def _update(self, p, grad, state, group, **changes):
        t = p.data.dtype.type
        p.data[...] = p.data * (t(1) - t(group["lr"]) * t(group["weight_decay"]))
        super()._update(p, grad, state, group, weight_decay=0.0)


class MomentumNotSaved(_Honest):
    """state_dict() leaves out the momentum buffer (so a resumed run restarts it at zero)."""

    def state_dict(self):
        sd = super().state_dict()
        for entry in sd["state"].values():
            entry.pop("momentum_buffer", None)
        return sd

    def load_state_dict(self, state_dict):
        groups = [{k: v for k, v in g.items()} | {"momentum": 0.0} for g in state_dict["param_groups"]]
        super().load_state_dict({"state": state_dict["state"], "param_groups": groups})
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            group["momentum"] = saved["momentum"]


class StepNotIncremented(_Honest):
    """The step counter stays at 0."""

    def step(self, closure=None):
        super().step(closure)
        for state in self.state.values():
            state["step"] = 0.0


class LoadForgetsSquareAvg(_Honest):
    """load_state_dict() restores everything but square_avg, which restarts at zero."""

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for state in self.state.values():
            state["square_avg"][...] = 0


class KeptAsFloat64(_Honest):
    """float32 parameters computed in float64 and left float64 (parameter and state)."""

    def _grad_fits(self, p):  # its widened parameter takes the float32 gradients it is given
        return p.grad.shape == p.data.shape and p.grad.dtype in (p.data.dtype, np.float32)

    def _update(self, p, grad, state, group, **changes):
        if p.data.dtype == np.float32:
            p.data = p.data.astype(np.float64)
            for k, v in list(state.items()):
                if isinstance(v, np.ndarray):
                    state[k] = v.astype(np.float64)
            grad = grad.astype(np.float64)
        super()._update(p, grad, state, group)


class OneUlpBias(_Honest):
    """An honest step, then every float32 parameter nudged one ULP towards +inf: a systematic bias."""

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group)
        if p.data.dtype == np.float32:
            p.data[...] = np.nextafter(p.data, np.float32(np.inf))


# ------------------------------------------------------------------ more that a demanding user would try


class MaximizeIgnored(_Honest):
    """maximize=True accepted but ignored (descends anyway)."""

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group, maximize=False)


class WeightDecayIgnored(_Honest):
    """weight_decay accepted but ignored."""

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group, weight_decay=0.0)


class GradAvgWrongWeight(Unfused):
    """grad_avg.lerp_(g, alpha) instead of lerp_(g, 1 - alpha)."""

    mean_weight_is_alpha = True


class EpsDropped(_Honest):
    """eps ignored: a zero gradient gives 0/0 = NaN where torch gives 0."""

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group, eps=0.0)


class NoneGradAsZero(_Honest):
    """A parameter whose grad is None is stepped with a zero gradient (torch skips it)."""

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = np.zeros_like(p.data)
        return super().step(closure)


class LrFrozen(_Honest):
    """The learning rate read once at construction: a scheduler's change is ignored."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self._frozen = [g["lr"] for g in self.param_groups]

    def _update(self, p, grad, state, group, **changes):
        k = next(i for i, g in enumerate(self.param_groups) if g is group)
        super()._update(p, grad, state, group, lr=self._frozen[k])


LEGITIMATE = (Unfused, WiderIntermediates)
MUTANTS = (
    EpsInsideRoot,
    LrInsideMomentum,
    AlphaSwapped,
    CenteredWithoutMean,
    DecoupledWeightDecay,
    MomentumNotSaved,
    StepNotIncremented,
    LoadForgetsSquareAvg,
    KeptAsFloat64,
    OneUlpBias,
    MaximizeIgnored,
    WeightDecayIgnored,
    GradAvgWrongWeight,
    EpsDropped,
    NoneGradAsZero,
    LrFrozen,
)
