"""Wrong implementations of the optimizer API (not of the arithmetic), one per item of the contract.

Every class here computes torch's step bit for bit where the numerical
families look (by keywords, one optimizer, loaded into one built alike, plain
parameters, no closure), so only the ``contract`` family
(:mod:`conformance.checks.contract`) can tell them from torch::

    python -m conformance check --optimizer tests.conformance.mutants_contract:ClosureCalledTwice

``test_mutants_contract.py`` asserts which contract check catches each.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from mutants import _Honest

from lucid import enable_grad
from lucid.optim import RMSprop
from lucid.optim.optimizer import PARAM_NAMES, hyperparameters

# ------------------------------------------------------------------ the constructor's positional order


class PositionalAlphaEpsSwapped(RMSprop):
    """``RMSprop(params, lr, eps, alpha, ...)``: right by keywords, alpha and eps exchanged positionally."""

    def __init__(self, params, lr=1e-2, eps=1e-8, alpha=0.99, weight_decay=0.0, momentum=0.0, centered=False, *,
                 maximize=False):  # fmt: skip
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, maximize=maximize)  # fmt: skip


class PositionalMomentumFirst(RMSprop):
    """``RMSprop(params, lr, alpha, eps, momentum, weight_decay, centered)``: another library's order."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0, centered=False, *,
                 maximize=False):  # fmt: skip
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, maximize=maximize)  # fmt: skip


# ------------------------------------------------------------------ zero_grad


class ZeroGradZeroesByDefault(RMSprop):
    """``zero_grad()`` defaults to ``set_to_none=False`` (torch 1.x's default)."""

    def zero_grad(self, set_to_none: bool = False) -> None:
        super().zero_grad(set_to_none)


class ZeroGradNewArrays(RMSprop):
    """``zero_grad(set_to_none=False)`` assigns new zero arrays instead of zeroing the gradients in place."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for p in (p for group in self.param_groups for p in group["params"] if p.grad is not None):
            p.grad = np.zeros_like(p.grad)  # a new array where torch zeroes the old one in place


# ------------------------------------------------------------------ step(closure)


class ClosureCalledTwice(_Honest):
    """The closure evaluated once more for the loss it returns."""

    def step(self, closure: Any = None) -> Any:
        super().step(closure)
        if closure is None:
            return None
        with enable_grad():
            return closure()


class ClosureWithoutEnableGrad(_Honest):
    """The closure called as it is: under the caller's ``no_grad`` it cannot compute gradients."""

    def step(self, closure: Any = None) -> Any:
        loss = None if closure is None else closure()
        super().step()
        return loss


class ClosureLossDropped(_Honest):
    """The closure called, its loss not returned."""

    def step(self, closure: Any = None) -> Any:
        super().step(closure)
        return None


class ClosureAfterUpdate(_Honest):
    """The update first (with the stale gradients), the closure afterwards."""

    def step(self, closure: Any = None) -> Any:
        super().step()
        if closure is None:
            return None
        with enable_grad():
            return closure()


# ------------------------------------------------------------------ p.grad left as it was


class GradDecayedInPlace(_Honest):
    """Weight decay added into the gradient in place (``g += wd * p``): into ``p.grad`` itself unless maximize.

    As an implementation that negates out of place for maximize (``g = -grad``) and then decays
    in place writes into the caller's gradient whenever maximize is off.
    """

    def _update(self, p, grad, state, group, **changes):
        g = -grad if group["maximize"] else grad
        if group["weight_decay"]:
            g += g.dtype.type(group["weight_decay"]) * p.data
        super()._update(p, g, state, group, weight_decay=0.0, maximize=False)


class GradNegatedInPlace(_Honest):
    """maximize by negating ``p.grad`` in place, then a descending update."""

    def _update(self, p, grad, state, group, **changes):
        if group["maximize"]:
            np.negative(grad, out=grad)
        super()._update(p, grad, state, group, maximize=False)


# ------------------------------------------------------------------ no shared state


def _shared_entry(cache: dict[Any, np.ndarray], key: Any, param: Any, state: Any, group: Any) -> dict[str, Any]:
    """A new state entry whose buffers come from ``cache`` under ``key + (buffer name,)``."""
    entry = dict(state) if state else {"step": 0.0}
    needed = {"square_avg": True, "momentum_buffer": group["momentum"] > 0, "grad_avg": group["centered"]}
    for name in (name for name, used in needed.items() if used):
        if name not in entry:
            entry[name] = cache.setdefault((*key, name), np.zeros_like(param.data))
    return entry


class SharedBuffersByShape(_Honest):
    """Buffers allocated once per (shape, dtype): parameters of one shape share their state."""

    def _new_entry(self, param, state, group):
        cache = self.__dict__.setdefault("_by_shape", {})
        return _shared_entry(cache, (param.shape, param.dtype.str), param, state, group)


class SharedBuffersAcrossOptimizers(_Honest):
    """A buffer pool on the class, keyed by position and shape: two optimizers share their state."""

    _pool: ClassVar[dict[Any, np.ndarray]] = {}

    def _new_entry(self, param, state, group):
        position = [id(p) for g in self.param_groups for p in g["params"]].index(id(param))
        return _shared_entry(self._pool, (position, param.shape, param.dtype.str), param, state, group)


# ------------------------------------------------------------------ load_state_dict


class LoadKeepsOwnHypers(RMSprop):
    """load_state_dict restores the state but keeps the hyperparameters the optimizer was built with."""

    def load_state_dict(self, state_dict):
        own = [hyperparameters(g) for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, hypers in zip(self.param_groups, own):
            group.update(hypers)


def _params(opt: RMSprop) -> list[Any]:
    return [p for g in opt.param_groups for p in g["params"]]


class LoadMapsReversed(RMSprop):
    """Saved index i goes to parameter n - 1 - i (the parameters counted from the end)."""

    def load_state_dict(self, state_dict):
        n = sum(len(g["params"]) for g in state_dict["param_groups"])
        state = {n - 1 - int(k): v for k, v in state_dict["state"].items()}
        super().load_state_dict({"state": state, "param_groups": state_dict["param_groups"]})


class LoadMapsByShape(RMSprop):
    """Each saved entry, in the saved order, goes to the first parameter of its shape not yet taken."""

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        params = _params(self)
        entries = [self.state[params[int(k)]] for k in state_dict["state"]]
        remapped, taken = {}, set()
        for entry in entries:
            p = next(q for q in params if id(q) not in taken and q.shape == entry["square_avg"].shape)
            taken.add(id(p))
            remapped[p] = entry
        self.state = remapped


class LoadMapsByEntryOrder(RMSprop):
    """The i-th saved entry goes to the i-th parameter (the entries' keys ignored)."""

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        params = _params(self)
        entries = [self.state[params[int(k)]] for k in state_dict["state"]]
        self.state = dict(zip(params, entries))


# ------------------------------------------------------------------ named parameters


def _unnamed(params: Any) -> Any:
    """``params`` with every ``(name, parameter)`` pair replaced by the parameter."""
    items = list(params)
    if items and isinstance(items[0], dict):
        return [{**g, "params": [q[1] if isinstance(q, tuple) else q for q in g["params"]]} for g in items]
    return [q[1] if isinstance(q, tuple) else q for q in items]


class NamedParamsRefused(RMSprop):
    """(name, parameter) pairs refused, as Lucid refused them before it had named parameters."""

    def __init__(self, params, *args, **kwargs):
        items = list(params)
        flat = [q for g in items for q in g["params"]] if items and isinstance(items[0], dict) else items
        for i, q in enumerate(flat):
            if isinstance(q, tuple):
                raise TypeError(f"optimizer can only optimize Tensors, but params[{i}] is tuple")
        super().__init__(items, *args, **kwargs)


class ParamNamesDropped(RMSprop):
    """(name, parameter) pairs accepted, the names thrown away (no param_names anywhere)."""

    def __init__(self, params, *args, **kwargs):
        super().__init__(_unnamed(params), *args, **kwargs)


class ParamNamesNotLoaded(RMSprop):
    """load_state_dict ignores the saved param_names (keeps its own)."""

    def load_state_dict(self, state_dict):
        groups = [{k: v for k, v in g.items() if k != PARAM_NAMES} for g in state_dict["param_groups"]]
        super().load_state_dict({"state": state_dict["state"], "param_groups": groups})


class ParamNamesAlwaysWritten(RMSprop):
    """Unnamed parameters get made-up names ("0", "1", ...) in the state_dict; torch writes none."""

    def state_dict(self):
        sd = super().state_dict()
        for group in sd["param_groups"]:
            group.setdefault(PARAM_NAMES, [str(i) for i in group["params"]])
        return sd


# ------------------------------------------------------------------ param groups, a Tensor lr, wrong gradients


class ParamInTwoGroupsAccepted(RMSprop):
    """A parameter already held is accepted into another group (no duplicate check): it steps twice per step."""

    def add_param_group(self, param_group):
        held, self.param_groups = self.param_groups, []
        try:
            super().add_param_group(param_group)
        finally:
            self.param_groups = held + self.param_groups


class GroupKeysDroppedOnSave(RMSprop):
    """state_dict writes only the hyperparameters it knows: a scheduler's initial_lr is lost across a save."""

    def state_dict(self):
        sd = super().state_dict()
        known = {"params", PARAM_NAMES, *hyperparameters(self.defaults)}
        sd["param_groups"] = [{k: v for k, v in g.items() if k in known} for g in sd["param_groups"]]
        return sd


class TensorLrRefused(RMSprop):
    """lr must be a Python or NumPy number: a 0-d tensor (torch accepts a Tensor lr) is refused."""

    def __init__(self, params, lr=1e-2, *args, **kwargs):
        if isinstance(lr, np.ndarray):
            raise TypeError(f"lr must be a float, got {type(lr).__name__}")
        super().__init__(params, lr, *args, **kwargs)


class GradBroadcast(_Honest):
    """A gradient that broadcasts against its parameter is stepped with, broadcast (NumPy's rules)."""

    def step(self, closure=None):
        for p in (p for g in self.param_groups for p in g["params"] if p.grad is not None):
            p.grad = np.broadcast_to(p.grad, p.data.shape).astype(p.data.dtype)
        return super().step(closure)


class GradCastToParam(_Honest):
    """A gradient of another dtype is cast to the parameter's and stepped with (torch refuses it)."""

    def step(self, closure=None):
        for p in (p for g in self.param_groups for p in g["params"] if p.grad is not None):
            if p.grad.dtype != p.data.dtype:
                p.grad = p.grad.astype(p.data.dtype)
        return super().step(closure)


class RefusesAfterUpdating(_Honest):
    """Checks each gradient only when it reaches it: the parameters before a bad one are already updated."""

    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if (p.grad.shape, p.grad.dtype) != (p.data.shape, p.data.dtype):
                    raise ValueError("a gradient of another shape or dtype")
                state = self._state_for(p, group)
                state["step"] += 1.0
                self._update(p, p.grad, state, group)


# ------------------------------------------------------------------ in place


class NewArraysEachStep(_Honest):
    """A functional step: each parameter gets a new array (``p.data = p.data - update``), never written in place."""

    def _update(self, p, grad, state, group, **changes):
        p.data = p.data.copy()
        super()._update(p, grad, state, group, **changes)


class BuffersCached(_Honest):
    """The buffers read from the state once, kept on the optimizer: later assignments to opt.state[p] ignored."""

    def _update(self, p, grad, state, group, **changes):
        cache = self.__dict__.setdefault("_cache", {})
        kept = cache.setdefault(id(p), {})
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                state[key] = kept.setdefault(key, value)
        super()._update(p, grad, state, group, **changes)


class StepsWithInitialLr(RMSprop):
    """Steps with a group's initial_lr where there is one (a scheduler-aware shortcut): a decayed lr ignored."""

    def step(self, closure=None):
        kept = [group["lr"] for group in self.param_groups]
        for group in self.param_groups:
            group["lr"] = group.get("initial_lr", group["lr"])
        try:
            return super().step(closure)
        finally:
            for group, lr in zip(self.param_groups, kept):
                group["lr"] = lr


class StateCopiesOut(_Honest):
    """Private buffers; opt.state gets copies after each step: edits to opt.state[p], in place or not, ignored."""

    def _update(self, p, grad, state, group, **changes):
        own = self.__dict__.setdefault("_own", {}).setdefault(id(p), {})
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                own.setdefault(key, value.copy())
        work = {**state, **own}
        super()._update(p, grad, work, group, **changes)
        for key in own:
            state[key] = own[key].copy()


MUTANTS = (
    PositionalAlphaEpsSwapped,
    PositionalMomentumFirst,
    ZeroGradZeroesByDefault,
    ZeroGradNewArrays,
    ClosureCalledTwice,
    ClosureWithoutEnableGrad,
    ClosureLossDropped,
    ClosureAfterUpdate,
    GradDecayedInPlace,
    GradNegatedInPlace,
    SharedBuffersByShape,
    SharedBuffersAcrossOptimizers,
    LoadKeepsOwnHypers,
    LoadMapsReversed,
    LoadMapsByShape,
    LoadMapsByEntryOrder,
    NamedParamsRefused,
    ParamNamesDropped,
    ParamNamesNotLoaded,
    ParamNamesAlwaysWritten,
    ParamInTwoGroupsAccepted,
    GroupKeysDroppedOnSave,
    TensorLrRefused,
    GradBroadcast,
    GradCastToParam,
    RefusesAfterUpdating,
    NewArraysEachStep,
    BuffersCached,
    StepsWithInitialLr,
    StateCopiesOut,
)
