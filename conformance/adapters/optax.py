"""optax's ``rmsprop`` behind the :class:`~conformance.candidate.Candidate` protocol.

``--optimizer optax:rmsprop`` chooses this adapter with optax's defaults;
``--optimizer conformance.adapters.optax:rmsprop_eps_outside`` with
``eps_in_sqrt=False`` (eps added outside the root, as torch does), and
:class:`OptaxAdapter` takes any of ``rmsprop``'s options.  Needs ``jax`` and
``optax`` (``pip install optax``); float64 runs with jax's x64 mode on, which
importing this module switches on (float32 stays float32: every
hyperparameter is injected in the parameters' dtype).

The mapping, per param group (each group its own transformation and state,
as ``optax.partition`` would build):

* torch's ``lr``, ``alpha``, ``eps``, ``momentum``, ``centered`` are
  ``rmsprop``'s ``learning_rate``, ``decay``, ``eps``, ``momentum`` (None at
  0: torch takes its plain path there), ``centered``; all numbers go through
  ``optax.inject_hyperparams``, so a scheduler's change between steps is a
  change of the state's ``hyperparams``, as in optax;
* ``weight_decay`` is ``optax.add_decayed_weights`` before it (torch adds
  ``wd * p`` to the gradient first), only where it is non-zero;
* the buffers: ``square_avg`` is the ``nu`` of ``scale_by_rms`` (or
  ``scale_by_stddev``), ``grad_avg`` its ``mu``; ``momentum_buffer`` is
  ``-trace / lr``: optax's ``trace`` follows the learning-rate scaling, so it
  holds ``-lr`` times torch's buffer (the two agree while lr is constant, and
  part when it changes);
* a parameter without a gradient is not stepped (torch skips it): its values
  and buffers are kept as they were;
* ``step`` is counted per parameter by the adapter (optax's state has none).

optax has no ``maximize``, and steps a complex parameter with ``|g|^2``
(torch: each real part squared), so those cases are "not supported".  There
is no optimizer object, so neither is the ``contract`` family.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import jax
import numpy as np
import optax
from numpy.typing import NDArray

from conformance.candidate import Group, Support, distribution_version
from conformance.rmsprop import Hyper

jax.config.update("jax_enable_x64", True)

__all__ = ["OptaxAdapter", "OptaxCandidate", "rmsprop", "rmsprop_eps_outside"]

#: The buffers' fields in optax's states, by torch's names.
_FIELDS = {"square_avg": "nu", "grad_avg": "mu", "momentum_buffer": "trace"}


@functools.cache
def _transform(factory: Callable[..., Any], options: tuple[tuple[str, Any], ...], structure: tuple[Any, ...]) -> Any:
    """Build (once per structure) the transformation and its jitted update.

    ``structure`` holds what decides the state's shape: centered, momentum on,
    weight decay on, and the dtype the hyperparameters are injected in.
    """
    centered, with_momentum, with_decay, dtype = structure
    static = {"centered": centered, **dict(options)}
    inner = optax.inject_hyperparams(factory, static_args=tuple(static), hyperparam_dtype=np.dtype(dtype))

    def build(learning_rate: float, decay: float, eps: float, momentum: float, weight_decay: float) -> Any:
        rms = inner(
            learning_rate=learning_rate,
            decay=decay,
            eps=eps,
            **static,
            **({"momentum": momentum} if with_momentum else {}),
        )
        if not with_decay:
            return rms
        decayed = optax.inject_hyperparams(optax.add_decayed_weights, hyperparam_dtype=np.dtype(dtype))
        return optax.chain(decayed(weight_decay=weight_decay), rms)

    def update(grads: Any, state: Any, params: Any) -> Any:
        # inject_hyperparams' update reads every number from the state (set by _inject); the values
        # given here only shape the transformation.
        updates, new_state = build(**dict.fromkeys(_injected(Hyper()), 0.0)).update(grads, state, params)
        return optax.apply_updates(params, updates), new_state

    def init(params: Any, hyper: Hyper) -> Any:
        return build(**_injected(hyper)).init(params)

    return jax.jit(update), init


def _injected(h: Hyper) -> dict[str, float]:
    """Return a group's hyperparameters under optax's names (``rmsprop``'s and ``add_decayed_weights``')."""
    return {
        "learning_rate": h.lr,
        "decay": h.alpha,
        "eps": h.eps,
        "momentum": h.momentum,
        "weight_decay": h.weight_decay,
    }


def _get(state: Any, name: str) -> Any:
    """Return the first field ``name`` found in the state tree (a NamedTuple's), or None."""
    if hasattr(state, "_fields"):
        if name in state._fields:
            return getattr(state, name)
        values = [getattr(state, f) for f in state._fields]
    elif isinstance(state, (tuple, list)):
        values = list(state)
    else:
        return None
    for value in values:
        found = _get(value, name)
        if found is not None:
            return found
    return None


def _set(state: Any, name: str, value: Any) -> Any:
    """Return the state tree with every field ``name`` replaced by ``value``."""
    if hasattr(state, "_fields"):
        if name in state._fields:
            return state._replace(**{name: value})
        return state._replace(**{f: _set(getattr(state, f), name, value) for f in state._fields})
    if isinstance(state, tuple):
        return tuple(_set(v, name, value) for v in state)
    return state


def _inject(state: Any, numbers: dict[str, float]) -> Any:
    """Return the state tree with each ``inject_hyperparams`` state's values set from ``numbers`` (same dtypes)."""
    if hasattr(state, "_fields"):
        if "hyperparams" in state._fields:
            old = state.hyperparams
            new = {k: jax.numpy.asarray(numbers[k], dtype=v.dtype) if k in numbers else v for k, v in old.items()}
            state = state._replace(hyperparams=new)
        return state._replace(**{f: _inject(getattr(state, f), numbers) for f in state._fields if f != "hyperparams"})
    if isinstance(state, tuple):
        return tuple(_inject(v, numbers) for v in state)
    return state


def _trace_of(buffer: NDArray[Any], lr: float) -> NDArray[Any]:
    """Return optax's ``trace`` for torch's momentum ``buffer``: ``-lr * buffer``, read back as ``buffer`` where it can.

    :meth:`OptaxCandidate.buffers` reports ``-trace / lr``; of ``-lr * buffer``
    and its two neighbours, the first that reads back as ``buffer`` bit for bit
    is taken, so a state handed over in torch's layout and saved again is
    unchanged (where none does, ``-lr * buffer`` itself).
    """
    t = buffer.dtype.type
    with np.errstate(all="ignore"):
        first = (-t(lr) * buffer).astype(buffer.dtype)
        chosen = first.copy()
        found = (-first / t(lr)).astype(buffer.dtype) == buffer
        for step_to in (np.inf, -np.inf):
            other = np.nextafter(first, t(step_to))
            hit = ~found & ((-other / t(lr)).astype(buffer.dtype) == buffer)
            chosen = np.where(hit, other, chosen)
            found |= hit
    return chosen


class OptaxCandidate:
    """optax's rmsprop over its own copies of the parameters (:class:`~conformance.candidate.Candidate`)."""

    def __init__(
        self,
        factory: Callable[..., Any],
        options: dict[str, Any],
        params0: Sequence[NDArray[Any]],
        groups: Sequence[Group],
    ) -> None:
        self.factory = factory
        self.options = tuple(sorted(options.items()))
        self.params = [jax.numpy.asarray(np.array(p, copy=True)) for p in params0]
        self.dtype = np.asarray(params0[0]).dtype if len(params0) else np.dtype(np.float32)
        self.groups = [list(g.params) for g in groups]
        self.hypers = [g.hyper for g in groups]
        self.steps = [0.0] * len(self.params)
        self.states = [self._init(k) for k in range(len(groups))]

    def _structure(self, k: int) -> tuple[Any, ...]:
        h = self.hypers[k]
        return (h.centered, h.momentum > 0, h.weight_decay != 0, self.dtype.name)

    def _init(self, k: int) -> Any:
        _, init = _transform(self.factory, self.options, self._structure(k))
        return init([self.params[i] for i in self.groups[k]], self.hypers[k])

    def _where(self, index: int) -> tuple[int, int]:
        for k, members in enumerate(self.groups):
            if index in members:
                return k, members.index(index)
        raise IndexError(f"no parameter {index}")

    def step(self, grads: Sequence[NDArray[Any] | None]) -> None:
        """Step each group's parameters that have a gradient; the others keep their values and buffers."""
        for k, members in enumerate(self.groups):
            if all(grads[i] is None for i in members):
                continue
            update, _ = _transform(self.factory, self.options, self._structure(k))
            params = [self.params[i] for i in members]
            zero = [np.zeros_like(np.asarray(p)) for p in params]
            g = [z if grads[i] is None else np.asarray(grads[i]) for i, z in zip(members, zero)]
            state = _inject(self.states[k], _injected(self.hypers[k]))
            new_params, new_state = update(g, state, params)
            skipped = [j for j, i in enumerate(members) if grads[i] is None]
            for name in _FIELDS.values():
                new, old = _get(new_state, name), _get(self.states[k], name)
                if new is not None and skipped:
                    new_state = _set(new_state, name, [old[j] if j in skipped else x for j, x in enumerate(new)])
            self.states[k] = new_state
            for j, i in enumerate(members):
                if grads[i] is not None:
                    self.params[i] = new_params[j]
                    self.steps[i] += 1

    def param(self, index: int) -> NDArray[Any]:
        """Return a copy of parameter ``index``'s values."""
        return np.array(self.params[index], copy=True)

    def buffers(self, index: int) -> dict[str, NDArray[Any]]:
        """Return the buffers by torch's names (none before the parameter's first step, as in torch)."""
        if not self.steps[index]:
            return {}
        k, j = self._where(index)
        out = {}
        for key, name in _FIELDS.items():
            tree = _get(self.states[k], name)
            if tree is None:
                continue
            value = np.array(tree[j], copy=True)
            if key == "momentum_buffer":
                with np.errstate(all="ignore"):
                    value = (-value / value.dtype.type(self.hypers[k].lr)).astype(value.dtype)
            out[key] = value
        return out

    def write(self, index: int, param: NDArray[Any], buffers: dict[str, NDArray[Any]], step: float | None) -> None:
        """Overwrite the parameter, the buffers its state has (``trace = -lr * buffer``) and its step count."""
        k, j = self._where(index)
        self.params[index] = jax.numpy.asarray(np.array(param, copy=True))
        for key, value in buffers.items():
            name = _FIELDS[key]
            tree = _get(self.states[k], name)
            if tree is None:
                continue
            value = np.asarray(value)
            if key == "momentum_buffer":
                value = _trace_of(value, self.hypers[k].lr)
            tree = list(tree)
            tree[j] = jax.numpy.asarray(value)
            self.states[k] = _set(self.states[k], name, tree)
        if step is not None:
            self.steps[index] = float(step)

    def set_hyper(self, group: int, name: str, value: float) -> None:
        """Change a hyperparameter of one group between steps (the injected value; state kept)."""
        before = self._structure(group)
        self.hypers[group] = replace(self.hypers[group], **{name: value})
        if self._structure(group) != before:
            # Momentum or weight decay switched on or off: optax's state takes another shape.  Rebuild it
            # and carry the buffers both shapes have over (a new one starts at zero, as torch's does).
            members = self.groups[group]
            kept = {i: self.buffers(i) for i in members}
            self.states[group] = self._init(group)
            for i in members:
                self.write(i, self.param(i), kept[i], None)

    def state_dict(self) -> dict[str, Any]:
        """Return the state in torch's layout (the buffers mapped as :meth:`buffers` maps them)."""
        order = [i for members in self.groups for i in members]  # torch numbers parameters over the groups
        state = {n: {"step": self.steps[i], **self.buffers(i)} for n, i in enumerate(order) if self.steps[i]}
        numbers = iter(range(len(order)))
        groups = [
            {
                **self.hypers[k].kwargs(),
                "foreach": None,
                "capturable": False,
                "differentiable": False,
                "params": [next(numbers) for _ in members],
            }
            for k, members in enumerate(self.groups)
        ]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load torch's layout: each group's saved hyperparameters, then each parameter's buffers and step.

        Saved state maps to parameters by position, as torch maps it.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.groups) or any(
            len(g["params"]) != len(m) for g, m in zip(saved_groups, self.groups)
        ):
            raise ValueError("loaded state dict has a different number of parameter groups or parameters")
        names = [f for f in Hyper.__dataclass_fields__]
        hypers = [Hyper(**{n: g[n] for n in names if n in g}) for g in saved_groups]
        saved_ids = [i for g in saved_groups for i in g["params"]]
        positions = [i for m in self.groups for i in m]
        old = (list(self.hypers), list(self.states), list(self.steps))
        try:
            self.hypers = hypers
            self.states = [self._init(k) for k in range(len(self.groups))]
            self.steps = [0.0] * len(self.params)
            for saved, i in zip(saved_ids, positions):
                entry = state_dict["state"].get(saved)
                if entry:
                    buffers = {k: np.asarray(v) for k, v in entry.items() if k in _FIELDS}
                    self.write(i, self.param(i), buffers, float(entry.get("step", 0.0)))
        except Exception:
            self.hypers, self.states, self.steps = old
            raise


class OptaxAdapter:
    """The :class:`~conformance.candidate.Adapter` of ``optax.rmsprop`` (or a function with its signature).

    Parameters
    ----------
    factory : callable, default optax.rmsprop
        The transformation's constructor.
    **options
        Fixed options of it (``eps_in_sqrt``, ``nesterov``, ``bias_correction``, ...).
    """

    optimizer_class = None

    def __init__(self, factory: Callable[..., Any] = optax.rmsprop, **options: Any) -> None:
        self.factory = factory
        self.options = options
        spelled = ", ".join(f"{k}={v!r}" for k, v in sorted(options.items()))
        self.name = f"optax.{getattr(factory, '__name__', 'rmsprop')}" + (f"({spelled})" if spelled else "")
        self.version = distribution_version("optax")
        self.supports = Support(maximize=False, complex=False, object_api=False)

    def __repr__(self) -> str:
        return f"OptaxAdapter({self.name})"

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self.factory, tuple(sorted(self.options.items())))

    def create(self, params0: Sequence[NDArray[Any]], groups: Sequence[Group], device: str) -> OptaxCandidate:
        """Build the transformation's state over copies of ``params0`` (jax's CPU; ``device`` is torch's)."""
        return OptaxCandidate(self.factory, self.options, params0, groups)


def _rebuild(factory: Callable[..., Any], options: tuple[tuple[str, Any], ...]) -> OptaxAdapter:
    return OptaxAdapter(factory, **dict(options))


#: optax's rmsprop with its defaults (eps inside the root: ``g / sqrt(nu + eps)``).
rmsprop = OptaxAdapter()

#: optax's rmsprop with ``eps_in_sqrt=False``: ``g / (sqrt(nu) + eps)``, torch's placement.
rmsprop_eps_outside = OptaxAdapter(eps_in_sqrt=False)
