"""What the harness needs of an RMSprop under test, and how ``--optimizer`` chooses the adapter that gives it.

The harness never touches a candidate's own objects: it talks to an
:class:`Adapter` (what ``--optimizer module:attr`` resolves to: the
candidate's name, version and features, and a way to build it) and to the
:class:`Candidate` it creates (one optimizer over its own copies of the
parameters, with NumPy arrays in and out, its buffers under torch's names).

Which adapter :func:`resolve` chooses, from what ``module:attr`` names:

* an object that already is an :class:`Adapter` (``conformance.adapters.optax:rmsprop``);
* a ``torch.optim.Optimizer`` subclass: driven on torch tensors, on the case's
  device (:class:`~conformance.adapters.objects.ObjectAdapter`);
* a class with Lucid's Optimizer interface (``step``, ``zero_grad``,
  ``state_dict``, ``load_state_dict``; NumPy arrays as state, Lucid parameters):
  the same adapter, on Lucid's parameters;
* a function of the ``optax`` package (``optax:rmsprop``): its adapter,
  :mod:`conformance.adapters.optax`.

One setting selects the candidate for the command line and the test suite
alike: ``CONFORMANCE_CANDIDATE=module:attr`` (default :data:`DEFAULT_CANDIDATE`).
"""

from __future__ import annotations

import functools
import importlib
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from numpy.typing import NDArray

from conformance.adapters import wire
from conformance.rmsprop import Hyper

__all__ = [
    "CANDIDATE_SETTING",
    "DEFAULT_CANDIDATE",
    "PYTHON_SETTING",
    "REQUIRED_ATTRIBUTES",
    "WORKER_TIMEOUT",
    "Adapter",
    "Candidate",
    "CandidateError",
    "CandidateSpecError",
    "Group",
    "Support",
    "candidate_options",
    "chosen_candidate",
    "chosen_python",
    "distribution_version",
    "resolve",
    "worker_adapter",
]

#: The candidate every command and the test suite check unless told otherwise.
DEFAULT_CANDIDATE = "lucid.optim:RMSprop"

#: The environment variable that names the candidate (``module:attr``) for the CLI and pytest alike.
CANDIDATE_SETTING = "CONFORMANCE_CANDIDATE"

#: The environment variable that names the interpreter a candidate runs under, in a worker
#: process (``--candidate-python``); unset, it runs in the harness's process.
PYTHON_SETTING = "CONFORMANCE_CANDIDATE_PYTHON"

#: Seconds a worker process may take to answer one request (``--candidate-timeout``), its start included.
WORKER_TIMEOUT = 120.0

#: The methods a class needs to be driven through its optimizer object.
REQUIRED_ATTRIBUTES = ("step", "state_dict", "load_state_dict", "zero_grad")


class CandidateSpecError(ValueError):
    """``module:attr`` is malformed or names nothing: a usage error (exit status 2)."""


class CandidateError(RuntimeError):
    """The candidate could not be run: it raised, lacks a required method, or its worker died (exit status 3)."""


@dataclass(frozen=True)
class Support:
    """What a candidate implements; a case that needs anything else is "not supported by the candidate".

    Attributes
    ----------
    maximize : bool
        torch's ``maximize=True``.
    complex : bool
        Complex parameters (stepped as torch steps their real views).
    dtypes : tuple of str
        The real dtypes it steps in (``float32``, ``float64``).
    per_group : bool
        Param groups with hyperparameters of their own.
    object_api : bool
        An optimizer object with torch's methods (``zero_grad``, ``step(closure)``,
        ``param_groups``, ...): the ``contract`` family applies.
    """

    maximize: bool = True
    complex: bool = True
    dtypes: tuple[str, ...] = ("float32", "float64")
    per_group: bool = True
    object_api: bool = True

    def missing(self, dtype: str, hypers: Sequence[Hyper]) -> list[str]:
        """Return what a scenario of ``dtype`` with these groups needs that the candidate lacks (empty: nothing)."""
        out = []
        real = {"complex64": "float32", "complex128": "float64"}.get(dtype, dtype)
        if dtype != real and not self.complex:
            out.append("complex parameters")
        if real not in self.dtypes:
            out.append(f"{real} parameters")
        if any(h.maximize for h in hypers) and not self.maximize:
            out.append("maximize=True")
        if len(hypers) > 1 and not self.per_group:
            out.append("per-group hyperparameters")
        return out


@dataclass(frozen=True)
class Group:
    """One param group to build: the indices of its parameters and its hyperparameters."""

    params: tuple[int, ...]
    hyper: Hyper


@runtime_checkable
class Candidate(Protocol):
    """One optimizer under test over its own copies of the parameters (made by :meth:`Adapter.create`).

    Parameters are addressed by their index in the order given to ``create``;
    every array in or out is a NumPy array of the parameter's dtype, and the
    buffers go by torch's names (``square_avg``, ``grad_avg``, ``momentum_buffer``).
    """

    def step(self, grads: Sequence[NDArray[Any] | None]) -> None:
        """Take one step with these gradients, one per parameter (None: that parameter has no gradient)."""

    def param(self, index: int) -> NDArray[Any]:
        """Return a copy of parameter ``index``'s values."""

    def buffers(self, index: int) -> dict[str, NDArray[Any]]:
        """Return copies of parameter ``index``'s buffers, by torch's names (empty before its first step)."""

    def write(self, index: int, param: NDArray[Any], buffers: dict[str, NDArray[Any]], step: float | None) -> None:
        """Overwrite parameter ``index``'s values, those of its buffers it has, and its step count."""

    def set_hyper(self, group: int, name: str, value: float) -> None:
        """Set hyperparameter ``name`` of param group ``group``, as a scheduler would between steps."""

    def state_dict(self) -> dict[str, Any]:
        """Return the state in torch's layout, NumPy arrays for tensors and floats for ``step``."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict in torch's layout (NumPy arrays)."""


@runtime_checkable
class Adapter(Protocol):
    """What ``--optimizer`` resolves to: a named, versioned way to build :class:`Candidate` objects.

    Attributes
    ----------
    name : str
        What every message, column and figure calls the candidate (``optax.rmsprop``).
    version : str
        Its distribution's version (:func:`distribution_version`; "unknown" when it has none).
    supports : Support
        Its features.
    optimizer_class : type or None
        The class itself, where it has an optimizer object with torch's API (for
        the ``contract`` family); None otherwise.
    """

    name: str
    version: str
    supports: Support
    optimizer_class: type | None

    def create(self, params0: Sequence[NDArray[Any]], groups: Sequence[Group], device: str) -> Candidate:
        """Build the candidate over copies of ``params0``, grouped by ``groups``, on ``device``."""


#: The installed version of the distribution that provides a module ("unknown" if none says), from the
#: package metadata, never the module's own ``__version__`` (:func:`conformance.adapters.wire.distribution_version`).
distribution_version = functools.cache(wire.distribution_version)


def _split(spec: str) -> tuple[str, str]:
    """Return ``module:attr``'s two parts; a usage error if it is not of that form."""
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise CandidateSpecError(f"candidate must be given as 'package.module:attr', got {spec!r}")
    return module_name, qualname


def _import(spec: str) -> tuple[str, object]:
    module_name, qualname = _split(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):  # the named module itself is not there
            raise CandidateSpecError(f"cannot import candidate module {module_name!r}: {err}") from err
        raise CandidateError(f"the candidate module {module_name!r} failed to import: {err}") from err
    except Exception as err:  # the candidate's own module raised while importing
        raise CandidateError(
            f"the candidate module {module_name!r} raised on import: {type(err).__name__}: {err}"
        ) from err
    obj: object = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CandidateSpecError(f"module {module_name!r} has no attribute {qualname!r}") from None
    return module_name, obj


def resolve(candidate: str | type | Adapter, python: str | None = None, timeout: float | None = None) -> Adapter:
    """Return the adapter for ``candidate``: an import path ``module:attr``, a class, or an adapter.

    With ``python`` (an interpreter), the candidate runs in a worker process
    under it (:class:`~conformance.adapters.worker.WorkerAdapter`): ``module:attr``
    is then imported there, not here; only a path into this project
    (``conformance.…``) is imported here too, to see whether it names a
    :class:`~conformance.adapters.worker.WorkerSpec` (``conformance.adapters.lucid_dl:rmsprop``),
    whose candidate the worker then imports.  Such a spec given without an
    interpreter is a usage error that says how to make one.  ``timeout``: the
    seconds the worker may take to answer one request (default :data:`WORKER_TIMEOUT`).

    Raises
    ------
    CandidateSpecError
        If the path is malformed or names nothing, or names something no adapter drives.
    CandidateError
        If the candidate's module raised on import, or its class lacks a required method.
    """
    from conformance.adapters.objects import ObjectAdapter
    from conformance.adapters.worker import WorkerSpec

    obj: object = candidate
    where = candidate if isinstance(candidate, str) else None
    if isinstance(candidate, str):
        _split(candidate)
        if python and not candidate.startswith("conformance."):
            return worker_adapter(python, candidate, timeout)
        module_name, obj = _import(candidate)
        if isinstance(obj, WorkerSpec):
            if not python:
                raise CandidateSpecError(
                    f"{candidate} runs in a worker process: give --candidate-python PATH (or ${PYTHON_SETTING}), "
                    f"an interpreter whose environment has it ({obj.install})"
                )
            return worker_adapter(python, obj, timeout)
        if python:  # a class of this project, run in the worker all the same (if it can import it there)
            return worker_adapter(python, candidate, timeout)
        if module_name.partition(".")[0] == "optax" and callable(obj) and not isinstance(obj, type):
            from conformance.adapters.optax import OptaxAdapter

            return OptaxAdapter(obj)  # type: ignore[arg-type]
    if isinstance(obj, Adapter) and not isinstance(obj, type):
        return obj
    if isinstance(obj, type):
        return ObjectAdapter(obj, where.replace(":", ".") if where else None)
    raise CandidateSpecError(
        f"candidate {where or obj!r} is a {type(obj).__name__}: expected an optimizer class "
        "(torch.optim.Optimizer subclass, or Lucid's Optimizer interface), an optax function, or an adapter"
    )


def worker_adapter(python: str, spec: Any, timeout: float | None = None, info: dict[str, Any] | None = None) -> Adapter:
    """Return this process's one worker adapter for ``python``, ``spec`` and ``timeout`` (made on first use).

    Every pair built from it shares its worker process; a copy unpickled in
    another process (``info`` given) is that process's one adapter too.
    """
    from conformance.adapters.worker import WorkerAdapter, WorkerSpec

    key = (python, spec if isinstance(spec, WorkerSpec) else WorkerSpec(spec), timeout or WORKER_TIMEOUT)
    if key not in _WORKERS:
        _WORKERS[key] = WorkerAdapter(*key, info=info)
    return _WORKERS[key]


_WORKERS: dict[tuple[str, Any, float], Adapter] = {}


def chosen_candidate() -> str:
    """Return the candidate the setting :data:`CANDIDATE_SETTING` names (default :data:`DEFAULT_CANDIDATE`)."""
    return os.environ.get(CANDIDATE_SETTING, "").strip() or DEFAULT_CANDIDATE


def candidate_options(optimizer: str | None, python: str | None = None) -> list[str]:
    """Return the command-line words that name this candidate again (none for the default, in this process)."""
    words = [] if optimizer in (None, DEFAULT_CANDIDATE) else ["--optimizer", shlex.quote(optimizer)]
    return words + (["--candidate-python", shlex.quote(python)] if python else [])


def chosen_python() -> str | None:
    """Return the worker interpreter the setting :data:`PYTHON_SETTING` names (None: the candidate runs here)."""
    return os.environ.get(PYTHON_SETTING, "").strip() or None
