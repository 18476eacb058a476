"""Candidates with an optimizer object: a ``torch.optim.Optimizer`` subclass, or a class with Lucid's interface.

Both are driven the way a training loop drives them: parameters of the
library (``torch.nn.Parameter`` on the case's device, or ``lucid.nn.Parameter``),
gradients assigned to ``p.grad``, ``step()``, buffers read from and written to
``opt.state[p]`` under torch's names, hyperparameters changed in
``param_groups``.  :class:`Library` holds what differs between the two
libraries; the ``contract`` family (:mod:`conformance.checks.contract`) uses
it too, so both reach a candidate the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import lucid
from conformance import statedict
from conformance.adapters.wire import optional_off, parameter_in_traceback, takes_keyword
from conformance.candidate import REQUIRED_ATTRIBUTES, CandidateError, Group, Support, distribution_version
from conformance.rmsprop import BUFFERS
from conformance.streams import copy_layout

__all__ = ["Library", "ObjectAdapter", "ObjectCandidate", "is_torch_optimizer", "state_buffers"]


def state_buffers(state: dict[str, Any]) -> dict[str, NDArray[Any]]:
    """Return the buffers in one parameter's ``opt.state[p]`` by torch's names, as ndarrays.

    A CPU tensor or an ndarray is returned as a view of the optimizer's own
    memory; a CUDA tensor as a host copy.
    """
    out = {}
    for key in BUFFERS:
        if key in state:
            value = state[key]
            out[key] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return out


def is_torch_optimizer(cls: object) -> bool:
    """Whether ``cls`` is a ``torch.optim.Optimizer`` subclass (driven on torch tensors)."""
    return isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)


class Library:
    """How the harness reaches one library's optimizer objects: Lucid's interface (NumPy arrays) or torch's.

    Parameters
    ----------
    cls : type
        The optimizer class.
    dtype : numpy dtype
        The parameters' dtype.
    device : str, default "cpu"
        torch's device for the parameters (a Lucid-interface class is on the host).
    """

    def __init__(self, cls: type, dtype: np.dtype[Any], device: str = "cpu") -> None:
        self.optimizer_class = cls
        self.dtype = dtype
        self.torch = is_torch_optimizer(cls)
        self.device = device if self.torch else "cpu"

    def cls(self, *args: Any, **kwargs: Any) -> Any:
        """Build the optimizer, with ``maximize`` passed only when on (:func:`.wire.optional_off`)."""
        return self.optimizer_class(*args, **optional_off(kwargs))

    def param(self, values: NDArray[Any]) -> Any:
        """Return a new parameter holding a copy of ``values``."""
        copy = np.array(values, dtype=self.dtype, copy=True)
        return torch.nn.Parameter(self._native(copy)) if self.torch else lucid.nn.Parameter(copy)

    def set_grad(self, p: Any, grad: NDArray[Any] | None) -> Any:
        """Give ``p`` its own copy of ``grad`` (in ``grad``'s layout); return the object now in ``p.grad``."""
        if grad is None:
            p.grad = None
        else:
            own = copy_layout(np.asarray(grad, dtype=self.dtype))
            p.grad = self._native(own)
        return p.grad

    def _native(self, array: NDArray[Any]) -> Any:
        """``array`` as the library's own: a torch tensor (sharing its memory on the CPU), or the ndarray itself."""
        return torch.from_numpy(array).to(self.device) if self.torch else array

    def assign_grad(self, p: Any, grad: NDArray[Any]) -> None:
        """``p.grad = grad`` as it is (no cast to the parameter's dtype): torch refuses another shape or dtype here."""
        p.grad = self._native(np.array(grad, copy=True))

    def scalar(self, value: float) -> Any:
        """``value`` as the library's 0-d float64 tensor (torch: ``torch.tensor``; Lucid: a 0-d ndarray)."""
        return torch.tensor(value, dtype=torch.float64) if self.torch else np.array(value, dtype=np.float64)

    def as_array(self, data: Any) -> NDArray[Any]:
        """Return a copy of ``data`` (a parameter's ``.data``, torch's or Lucid's) as an ndarray."""
        return data.detach().cpu().numpy().copy() if self.torch else np.array(data, copy=True)

    def replace_data(self, p: Any, values: NDArray[Any], in_place: bool) -> None:
        """Give ``p`` the ``values``: written into its array (``in_place``) or as a new array assigned to ``p.data``."""
        new = self._native(np.array(values, dtype=self.dtype, copy=True))
        if in_place:
            p.data[...] = new
        else:
            p.data = new

    def replace_buffer(self, opt: Any, p: Any, key: str, values: NDArray[Any], in_place: bool) -> None:
        """Give ``opt.state[p][key]`` the ``values``: written into the buffer, or a new buffer assigned."""
        new = self._native(np.array(values, dtype=self.dtype, copy=True))
        if in_place:
            opt.state[p][key][...] = new
        else:
            opt.state[p][key] = new

    def grad(self, p: Any) -> NDArray[Any] | None:
        """Return ``p.grad`` as an ndarray (a view where possible), or None."""
        g = p.grad
        if g is None:
            return None
        return g.detach().cpu().numpy() if self.torch else np.asarray(g)

    def values(self, p: Any) -> NDArray[Any]:
        """Return a copy of ``p``'s values."""
        return p.detach().cpu().numpy().copy() if self.torch else np.array(p.data, copy=True)

    def buffers(self, opt: Any, p: Any) -> dict[str, NDArray[Any]]:
        """``p``'s state buffers by torch's names, as views of the optimizer's own arrays (host copies on CUDA)."""
        return state_buffers(opt.state.get(p) or {})

    def step_count(self, opt: Any, p: Any) -> float | None:
        """``p``'s step counter, or None without state."""
        state = opt.state.get(p) or {}
        return float(state["step"]) if "step" in state else None

    def grad_enabled(self) -> bool:
        """Whether this library records gradients now."""
        return torch.is_grad_enabled() if self.torch else lucid.is_grad_enabled()

    def no_grad(self) -> contextlib.AbstractContextManager[Any]:
        """Return the library's ``no_grad`` context."""
        return torch.no_grad() if self.torch else lucid.no_grad()

    def state_dict(self, opt: Any) -> dict[str, Any]:
        """``opt.state_dict()`` in NumPy form."""
        return statedict.to_numpy(opt.state_dict()) if self.torch else opt.state_dict()

    def load(self, opt: Any, sd: dict[str, Any]) -> None:
        """``opt.load_state_dict`` of a NumPy-form state_dict."""
        opt.load_state_dict(statedict.to_torch(sd, self.device) if self.torch else sd)


class ObjectCandidate:
    """One optimizer object over its own parameters, behind the :class:`~conformance.candidate.Candidate` protocol."""

    def __init__(self, cls: type, params0: Sequence[NDArray[Any]], groups: Sequence[Group], device: str) -> None:
        dtype = np.asarray(params0[0]).dtype if len(params0) else np.dtype(np.float32)
        self.library = Library(cls, dtype, device)
        self.params = [self.library.param(np.asarray(p)) for p in params0]
        if len(groups) == 1 and len(groups[0].params) == len(self.params):
            # One group: the plain ``cls(params, **hypers)`` a simple optimizer is written for.
            self.opt = self.library.cls(self.params, **groups[0].hyper.kwargs())
        else:
            dicts = [{"params": [self.params[i] for i in g.params], **optional_off(g.hyper.kwargs())} for g in groups]
            self.opt = self.library.cls(dicts, **groups[0].hyper.kwargs())

    def step(self, grads: Sequence[NDArray[Any] | None]) -> None:
        """Give each parameter its own copy of its gradient (in the stream's layout), then ``opt.step()``."""
        for p, g in zip(self.params, grads):
            self.library.set_grad(p, g)
        try:
            self.opt.step()
        except Exception as err:
            # Which parameter: from the candidate's frames, not this one's loop variable.
            err.parameter = parameter_in_traceback(err.__traceback__.tb_next, self.params)  # type: ignore[union-attr,attr-defined]
            raise

    def param(self, index: int) -> NDArray[Any]:
        """Return a copy of parameter ``index``'s values."""
        return self.library.values(self.params[index])

    def buffers(self, index: int) -> dict[str, NDArray[Any]]:
        """Return copies of ``opt.state[p]``'s buffers."""
        return {k: v.copy() for k, v in self.library.buffers(self.opt, self.params[index]).items()}

    def write(self, index: int, param: NDArray[Any], buffers: dict[str, NDArray[Any]], step: float | None) -> None:
        """Write the values into ``p.data`` and the buffers ``opt.state[p]`` has, in place; set its step count."""
        p = self.params[index]
        self.library.replace_data(p, param, in_place=True)
        state = self.opt.state.get(p) or {}
        for key, value in buffers.items():
            if key in state:
                self.library.replace_buffer(self.opt, p, key, value, in_place=True)
        if step is not None and "step" in state:
            if isinstance(state["step"], torch.Tensor):
                state["step"].fill_(step)
            else:
                state["step"] = float(step)

    def set_hyper(self, group: int, name: str, value: float) -> None:
        """``opt.param_groups[group][name] = value``."""
        self.opt.param_groups[group][name] = value

    def state_dict(self) -> dict[str, Any]:
        """``opt.state_dict()`` in NumPy form."""
        return self.library.state_dict(self.opt)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``opt.load_state_dict`` of a NumPy-form state_dict (as tensors on the device for torch)."""
        self.library.load(self.opt, state_dict)


def declared_support(cls: type) -> Support:
    """Return what ``cls`` implements: ``maximize`` where its constructor takes it, and what it declares.

    A class may declare what it lacks without importing this project, as a
    class attribute ``conformance_support``: a dict of
    :class:`~conformance.candidate.Support` fields (``{"complex": False}``).

    Raises
    ------
    CandidateError
        If the declaration is not such a dict.
    """
    declared = getattr(cls, "conformance_support", {})
    known = {f.name for f in fields(Support)}
    if not isinstance(declared, dict) or set(declared) - known:
        raise CandidateError(
            f"{cls.__module__}.{cls.__qualname__}.conformance_support must be a dict of some of {sorted(known)}, "
            f"got {declared!r}"
        )
    return Support(**{"maximize": takes_keyword(cls, "maximize"), **declared})


class ObjectAdapter:
    """The :class:`~conformance.candidate.Adapter` of a class with an optimizer object (torch's or Lucid's interface).

    Parameters
    ----------
    cls : type
        The optimizer class.
    name : str, optional
        What to call it (default ``module.Class``; :func:`~conformance.candidate.resolve`
        passes the ``module:attr`` it was given, spelled ``module.attr``).

    Raises
    ------
    CandidateError
        If the class lacks one of the methods the harness calls.
    """

    def __init__(self, cls: type, name: str | None = None) -> None:
        missing = [name for name in REQUIRED_ATTRIBUTES if not callable(getattr(cls, name, None))]
        if missing:
            raise CandidateError(
                f"candidate {cls.__module__}.{cls.__qualname__} lacks the Optimizer interface: no {', '.join(missing)}"
            )
        self.optimizer_class = cls
        self.name = name or f"{cls.__module__}.{cls.__qualname__}"
        self.version = distribution_version(cls.__module__)
        self.supports = declared_support(cls)

    def __repr__(self) -> str:
        return f"ObjectAdapter({self.name})"

    def __reduce__(self) -> tuple[Any, ...]:
        return ObjectAdapter, (self.optimizer_class, self.name)

    def create(self, params0: Sequence[NDArray[Any]], groups: Sequence[Group], device: str) -> ObjectCandidate:
        """Build ``optimizer_class`` over new parameters holding copies of ``params0``."""
        return ObjectCandidate(self.optimizer_class, params0, groups, device)
