"""``Optimizer``: parameter groups, per-parameter state and torch-layout state_dicts.

The base class owns everything that is not the update rule: turning ``params``
into validated parameter groups, ``zero_grad``, and saving and loading state in
torch's layout.  A subclass supplies the update (:meth:`Optimizer.step`) and two
validation hooks (:meth:`Optimizer._check_group`, :meth:`Optimizer._check_state`).

Loading is transactional: every part of a state_dict is checked and converted
into new objects first, and only then swapped in, so a refused state_dict leaves
the optimizer exactly as it was.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from lucid.tensor import Tensor

__all__ = [
    "PARAM_NAMES",
    "Optimizer",
    "ParamGroup",
    "StateDict",
    "hyperparameters",
    "interrupts_deferred",
    "split_state_dict",
]

ParamGroup = dict[str, Any]
StateDict = dict[str, Any]

#: The parameter dtypes Lucid's arithmetic is defined for (by their scalar type, so
#: either byte order).  float16, bfloat16 and longdouble are refused: the fused
#: multiply-add the step is built on exists for float32 and float64 only.
SUPPORTED_DTYPES = frozenset({np.float32, np.float64, np.complex64, np.complex128})
#: How a refusal names them.
SUPPORTED_DTYPE_NAMES = "float32, float64, complex64 and complex128"

#: Group keys that torch.optim writes and Lucid has no use for.  A state_dict
#: converted from torch carries them; loading accepts and drops them.
TORCH_ONLY_GROUP_KEYS = frozenset({"foreach", "capturable", "differentiable", "fused"})

#: The group key holding the parameters' names when they were given as ``(name, parameter)``
#: pairs (``RMSprop(model.named_parameters())``), as in torch 2.x: a list of str beside ``params``.
PARAM_NAMES = "param_names"


def hyperparameters(group: Mapping[str, Any]) -> dict[str, Any]:
    """Return a param group's hyperparameters: every key but ``params`` and ``param_names``."""
    return {k: v for k, v in group.items() if k != "params" and k != PARAM_NAMES}


def _describe(value: Any) -> str:
    """Name a value for an error message without dumping a whole array."""
    if isinstance(value, (np.ndarray, Tensor)):
        return f"{type(value).__name__}(shape={value.shape}, dtype={value.dtype})"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _checked_names(names: Any, count: int, where: str) -> list[str]:
    """Return ``names`` (a group's ``param_names``) as a new list of ``count`` strings, or raise."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise TypeError(f"{where}['param_names'] must be a list of str, got {_describe(names)}")
    if len(names) != count:
        raise ValueError(f"{where}['param_names'] has {len(names)} names for {count} parameters")
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"{where}['param_names'][{i}] must be a str, got {_describe(name)}")
    return list(names)


def split_state_dict(state_dict: Any) -> tuple[list[Any] | tuple[Any, ...], Mapping[Any, Any]]:
    """Check a state_dict's top level; return its ``param_groups`` and ``state``.

    Raises
    ------
    TypeError, KeyError
        Not a dict, keys other than exactly ``state`` and ``param_groups``, a
        ``param_groups`` that is not a list or a ``state`` that is not a dict.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict, got {_describe(state_dict)}")
    keys = set(state_dict)
    if keys != {"state", "param_groups"}:
        missing = ", ".join(sorted(map(repr, {"state", "param_groups"} - keys))) or "none"
        extra = ", ".join(sorted(map(repr, keys - {"state", "param_groups"}))) or "none"
        raise KeyError(
            f"state_dict must have exactly the keys 'state' and 'param_groups'; missing: {missing}; unexpected: {extra}"
        )
    saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(saved_groups, (list, tuple)):
        raise TypeError(f"state_dict['param_groups'] must be a list, got {_describe(saved_groups)}")
    if not isinstance(saved_state, Mapping):
        raise TypeError(f"state_dict['state'] must be a dict, got {_describe(saved_state)}")
    return saved_groups, saved_state


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold back SIGINT until the block has finished, then raise ``KeyboardInterrupt``.

    For the part of a step that writes: interrupted there, a step would be
    left half done (some parameters moved, others not).  Only Python's default
    handler in the main thread is replaced, for the duration of the block; a
    handler of the program's own, or a call from another thread (where signals
    are not delivered), is left alone.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    received: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


class Optimizer(abc.ABC):
    """Abstract base class of Lucid's optimizers.

    Parameters
    ----------
    params : iterable of Tensor, or iterable of dict
        The tensors to optimise, or parameter groups: dicts with a ``"params"``
        entry and any hyperparameters that override ``defaults`` for that group.
    defaults : dict
        Hyperparameters used by groups that do not set them.

    Attributes
    ----------
    param_groups : list of dict
        Each group's hyperparameters and its ``"params"`` list.
    defaults : dict
        The default hyperparameters.
    state : dict
        Per-parameter state, keyed by the parameter object.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[ParamGroup], defaults: Mapping[str, Any]) -> None:
        self.defaults: dict[str, Any] = dict(defaults)
        self.state: dict[Tensor, dict[str, Any]] = {}
        self.param_groups: list[ParamGroup] = []
        if isinstance(params, (Tensor, np.ndarray)):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Tensors or dicts, "
                f"but got {_describe(params)}"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, "
                "but the ordering of tensors in sets changes between runs"
            )
        try:
            groups = list(params)
        except TypeError:
            raise TypeError(f"params should be an iterable of Tensors or dicts, got {_describe(params)}") from None
        if not groups:
            raise ValueError("optimizer got an empty parameter list (was a generator of parameters already consumed?)")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # ------------------------------------------------------------ param groups
    def _check_group(self, group: ParamGroup) -> ParamGroup:
        """Validate a group's hyperparameters; return a normalised copy.

        Subclasses override this to refuse bad values (``ValueError`` or
        ``TypeError`` naming the key and value).  The base accepts anything.
        """
        return dict(group)

    def _checked_params(self, params: Any, where: str) -> tuple[list[Tensor], list[str] | None]:
        """Turn a group's ``params`` into a list of distinct, optimisable tensors, and their names.

        ``params`` holds tensors, or ``(name, tensor)`` pairs (all of them or
        none, as torch requires); the names are None for plain tensors.
        """
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{where}: parameters need to be an ordered collection, not a set")
        try:
            params = list(params)
        except TypeError:
            raise TypeError(f"{where}: 'params' must be an iterable of Tensors, got {_describe(params)}") from None
        if not params:
            raise ValueError(f"{where}: the parameter list is empty")
        names: list[str] | None = None
        named = [isinstance(p, tuple) for p in params]
        if any(named):
            if not all(named):
                raise ValueError(
                    f"{where}: params[{named.index(True)}] is a (name, parameter) pair but "
                    f"params[{named.index(False)}] is not; all optimizer params should be with or without names"
                )
            names = []
            for i, pair in enumerate(params):
                if len(pair) != 2 or not isinstance(pair[0], str):
                    shown = ", ".join(type(item).__name__ for item in pair)
                    raise TypeError(
                        f"{where}: params[{i}] is a tuple ({shown}); a named parameter is a (str, Tensor) pair"
                    )
                names.append(pair[0])
            params = [pair[1] for pair in params]
        seen: dict[int, int] = {}
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{where}: optimizer can only optimize Tensors, but params[{i}] is {_describe(p)}")
            if not p.is_leaf:
                raise ValueError(f"{where}: params[{i}] is not a leaf tensor; can't optimize it")
            if p.dtype.type not in SUPPORTED_DTYPES:
                raise TypeError(
                    f"{where}: params[{i}] has dtype {p.dtype}; "
                    f"only {SUPPORTED_DTYPE_NAMES} parameters can be optimized"
                )
            if id(p) in seen:
                raise ValueError(f"{where}: params[{i}] is the same parameter as params[{seen[id(p)]}]")
            seen[id(p)] = i
        return params, names

    def add_param_group(self, param_group: ParamGroup) -> None:
        """Add a parameter group; hyperparameters it leaves out come from ``defaults``.

        Raises
        ------
        TypeError, ValueError
            On a malformed group, a bad hyperparameter, a parameter of a dtype
            other than float32, float64, complex64 or complex128 (float16,
            bfloat16 and longdouble included), or a parameter that is already
            in another group; on ``(name, parameter)`` pairs mixed with plain
            parameters, in one group or across groups (torch's rule), or a name
            that is not a str.  Nothing is added then.

        Notes
        -----
        Named parameters (``(name, parameter)`` pairs, as
        :meth:`lucid.nn.Module.named_parameters` yields them) store their names
        under ``param_names`` in the group, beside ``params``, as torch 2.x does;
        a group may also give ``param_names`` itself (a list of str, one per
        parameter), as a state_dict's groups hold them.
        """
        where = f"param group {len(self.param_groups)}"
        if not isinstance(param_group, Mapping):
            raise TypeError(f"{where}: a param group must be a dict, got {_describe(param_group)}")
        if "params" not in param_group:
            raise ValueError(f"{where}: the param group has no 'params' key")
        params, names = self._checked_params(param_group["params"], where)
        if names is None and PARAM_NAMES in param_group:
            names = _checked_names(param_group[PARAM_NAMES], len(params), where)
        if self.param_groups and (names is None) != (PARAM_NAMES not in self.param_groups[0]):
            raise ValueError(
                f"{where}: cannot add a param group {'without' if names is None else 'with'} names: this "
                f"optimizer's groups are {'with' if names is None else 'without'} names; all param groups should "
                "be with or without names"
            )
        existing = {id(p): (gi, pi) for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])}
        for i, p in enumerate(params):
            if id(p) in existing:
                gi, pi = existing[id(p)]
                raise ValueError(
                    f"{where}: params[{i}] is already in param group {gi} (its params[{pi}]); "
                    "some parameters appear in more than one parameter group"
                )
        group = hyperparameters(param_group)
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        group = self._check_group(group)
        group["params"] = params
        if names is not None:
            group[PARAM_NAMES] = names
        self.param_groups.append(group)

    # ---------------------------------------------------------------- stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to ``None``, or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad[...] = 0

    @abc.abstractmethod
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return ``closure()``'s value."""

    # --------------------------------------------------------------- state_dict
    def _check_state(self, param: Tensor, group: ParamGroup, entry: Any, where: str) -> dict[str, Any]:
        """Validate one parameter's saved state; return a fresh, normalised copy.

        Subclasses override this; the base deep-copies whatever it is given.
        """
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where}: a state entry must be a dict, got {_describe(entry)}")
        return copy.deepcopy(dict(entry))

    def state_dict(self) -> StateDict:
        """Return the optimizer's state in torch's layout, as copies.

        Returns
        -------
        dict
            ``{"state": {index: {name: value}}, "param_groups": [{hyperparameters...,
            "params": [index, ...]}]}``.  Indices number the parameters in group
            order, from 0.  Arrays are copied, so later steps do not change a
            state_dict already taken (torch returns references instead).
        """
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            packed["params"] = []
            for p in group["params"]:
                index[id(p)] = len(index)
                packed["params"].append(index[id(p)])
            groups.append(packed)
        state: dict[int, dict[str, Any]] = {}
        for group in self.param_groups:
            for p in group["params"]:
                entry = self.state.get(p)
                if entry:
                    state[index[id(p)]] = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in entry.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: StateDict) -> None:
        """Replace hyperparameters and state with those of ``state_dict``.

        Accepts what :meth:`state_dict` returns, and a torch optimizer's
        state_dict whose tensors were converted to NumPy arrays.  Saved
        parameter indices are matched to this optimizer's parameters by
        position, group by group, as torch does.  Hyperparameters come from
        the saved groups, not from this optimizer's constructor.  Saved
        ``param_names`` replace this optimizer's names; a saved group without
        them keeps the names it has (torch's rule; names never steer the
        matching).

        Raises
        ------
        TypeError, ValueError, KeyError
            When anything in ``state_dict`` is malformed.  The optimizer is then
            exactly as it was: nothing is applied until everything is checked.
        """
        saved_groups, saved_state = split_state_dict(state_dict)
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict has {len(saved_groups)} parameter groups, this optimizer has {len(self.param_groups)}"
            )

        new_groups: list[ParamGroup] = []
        owner: dict[Any, tuple[Tensor, ParamGroup]] = {}
        for gi, (saved, current) in enumerate(zip(saved_groups, self.param_groups)):
            where = f"state_dict['param_groups'][{gi}]"
            if not isinstance(saved, Mapping):
                raise TypeError(f"{where} must be a dict, got {_describe(saved)}")
            if "params" not in saved:
                raise KeyError(f"{where} has no 'params' key")
            indices = saved["params"]
            if not isinstance(indices, (list, tuple)):
                raise TypeError(f"{where}['params'] must be a list of indices, got {_describe(indices)}")
            if len(indices) != len(current["params"]):
                raise ValueError(
                    f"{where} has {len(indices)} parameters, this optimizer's group {gi} has {len(current['params'])}"
                )
            group = {k: v for k, v in hyperparameters(saved).items() if k not in TORCH_ONLY_GROUP_KEYS}
            names = current.get(PARAM_NAMES)
            if PARAM_NAMES in saved:
                names = _checked_names(saved[PARAM_NAMES], len(indices), where)
            for key in self.defaults:
                if key not in group:
                    if key not in self._group_fallbacks:
                        raise KeyError(f"{where} has no {key!r} hyperparameter")
                    group[key] = self._group_fallbacks[key]
            try:
                group = self._check_group(group)
            except (TypeError, ValueError) as err:
                raise type(err)(f"{where}: {err}") from None
            group["params"] = current["params"]
            if names is not None:
                group[PARAM_NAMES] = list(names)
            for index, p in zip(indices, current["params"]):
                if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
                    raise TypeError(f"{where}['params'] holds {_describe(index)}, not an integer index")
                if int(index) in owner:
                    raise ValueError(f"{where}['params'] repeats parameter index {int(index)}")
                owner[int(index)] = (p, group)
            new_groups.append(group)

        new_state: dict[Tensor, dict[str, Any]] = {}
        for key, entry in saved_state.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or int(key) not in owner:
                raise KeyError(
                    f"state_dict['state'] has an entry for parameter index {key!r}, which no param group lists"
                )
            p, group = owner[int(key)]
            new_state[p] = self._check_state(p, group, entry, f"state_dict['state'][{key!r}]")

        self.param_groups = new_groups
        self.state = new_state

    #: Values for hyperparameters that a saved group may lack (torch's
    #: ``__setstate__`` defaults for older checkpoints); others are required.
    _group_fallbacks: Mapping[str, Any] = {}
