"""``RMSprop``: hyperparameter and state validation around :func:`rmsprop_update`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from numbers import Real
from typing import Any

import numpy as np

from lucid._grad_mode import enable_grad
from lucid.optim._fast import FastStep, resolve_num_threads
from lucid.optim._kernel import Accelerator, resolve_accelerator
from lucid.optim.optimizer import (
    SUPPORTED_DTYPE_NAMES,
    SUPPORTED_DTYPES,
    Optimizer,
    ParamGroup,
    _describe,
    hyperparameters,
    interrupts_deferred,
)
from lucid.tensor import Tensor

__all__ = ["RMSprop"]

_REAL_HYPERPARAMETERS = ("lr", "alpha", "eps", "weight_decay", "momentum")
_BOOL_HYPERPARAMETERS = ("centered", "maximize")
_BUFFERS = ("square_avg", "momentum_buffer", "grad_avg")
_BUFFER_KEYS = frozenset(_BUFFERS)
#: Group keys kept but not used by the step: torch's LR schedulers write ``initial_lr``.
_BOOKKEEPING_KEYS = ("initial_lr",)
_GROUP_KEYS = frozenset(_REAL_HYPERPARAMETERS + _BOOL_HYPERPARAMETERS + _BOOKKEEPING_KEYS)


def _as_real_number(key: str, value: Any) -> float:
    """Return ``value`` as a float, or raise ``TypeError`` naming ``key``.

    Accepts Python and NumPy real numbers and one-element real arrays (torch's
    tensor ``lr`` after conversion); refuses ``bool``, strings and the rest.
    """
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "fiu":
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real):
        raise TypeError(f"{key} must be a real number, got {_describe(value)}")
    try:
        return float(value)
    except OverflowError:  # an int beyond float range, such as 10**400
        raise ValueError(f"Invalid {key} value: {_describe(value)} (must be finite)") from None


def _lacks_buffers(state: Mapping[str, Any] | None, group: ParamGroup) -> bool:
    """Whether ``state`` is empty or lacks a buffer ``group``'s flags use (:meth:`RMSprop._new_entry` adds them)."""
    return (
        not state
        or "square_avg" not in state
        or (group["momentum"] > 0 and "momentum_buffer" not in state)
        or (group["centered"] and "grad_avg" not in state)
    )


class RMSprop(Optimizer):
    r"""RMSprop, computing exactly what ``torch.optim.RMSprop`` computes.

    .. math::

        v_t = \alpha v_{t-1} + (1-\alpha) g_t^2, \qquad
        \theta_t = \theta_{t-1} - \gamma \, \frac{g_t}{\sqrt{v_t} + \epsilon}

    with epsilon *outside* the square root (torch's choice; the textbook
    formula puts it inside), and the learning rate applied outside the momentum
    buffer.  See :func:`lucid.optim.functional.rmsprop_update` for every flag.

    Parameters
    ----------
    params : iterable of Parameter, or iterable of dict
        Parameters, or parameter groups with per-group hyperparameters.
    lr : float, default 1e-2
        Learning rate :math:`\gamma`, finite and >= 0.
    alpha : float, default 0.99
        Smoothing constant, in [0, 1].
    eps : float, default 1e-8
        Added to the root of the mean square; finite and >= 0.
    weight_decay : float, default 0.0
        L2 penalty added to the gradient; finite and >= 0.
    momentum : float, default 0.0
        Momentum factor; finite and >= 0.
    centered : bool, default False
        Normalise by an estimate of the gradient's variance instead of its
        second moment.
    maximize : bool, default False
        Ascend instead of descend.

    Notes
    -----
    Refused, as torch refuses them: negative or NaN ``lr``, ``eps``,
    ``momentum``, ``weight_decay`` or ``alpha``.  Refused, where torch accepts
    them: infinite hyperparameters, ``alpha > 1``, a non-number (``TypeError``), a
    non-bool ``centered`` or ``maximize``, and a param group key that is not a
    hyperparameter (``TypeError``: a typo such as ``weight_decy`` would
    otherwise be ignored silently).  ``initial_lr``, which torch's schedulers
    write into groups, is kept; torch's implementation switches (``foreach``,
    ``capturable``, ``differentiable``, ``fused``) are dropped when a torch
    state_dict is loaded.  Every refusal names the offending key and value and
    changes nothing.

    Parameters must be float32, float64, complex64 or complex128 (float16,
    bfloat16 and longdouble are refused when the group is built, ``TypeError``).
    Gradients, parameters, state and each group's hyperparameters as they are
    then are checked at :meth:`step`, all of them before anything changes (see
    :meth:`step`): a ``.grad`` that is not an ndarray, or has another shape, is
    refused; so is one of another dtype (``TypeError``), never cast: torch
    refuses assigning a gradient whose dtype differs from the parameter's, and a
    silent cast would round a float64 gradient or widen a float32 step.  A real
    gradient for a complex parameter, or the reverse, is refused the same way.

    NaN and Inf in gradients, parameters or state propagate as in torch, to the
    same positions, without warnings.

    State per parameter, with torch's names: ``step`` (a float),
    ``square_avg``, ``momentum_buffer`` (when momentum > 0) and ``grad_avg``
    (when centered), arrays of the parameter's shape and dtype.  If momentum or
    centering is switched on after state exists, the missing buffer starts at
    zero (torch raises a ``KeyError`` there).  Complex parameters are updated
    as torch's default CPU path (``foreach=False``) updates them: the weight
    decay in complex arithmetic, then everything else on (real, imaginary)
    pairs.  (torch's ``foreach=True`` path decays the pairs instead, which can
    differ by one rounding, and by NaN where a part is infinite.)

    Small parameters (fewer than 8192 elements) of a group and dtype share
    flat storage: their state buffers are views of it, and from the first
    step on so is ``p.data`` where nothing but ``p`` references its array and
    the array owns its memory (an array anyone else holds is updated in place
    instead).  Assigning another array to ``p.data`` or to a state buffer is
    noticed by identity at the next step, checked and honoured.  See
    docs/optimizer.md, "Small parameters share storage".

    Examples
    --------
    >>> import lucid.nn as nn, lucid.optim as optim, numpy as np
    >>> w = nn.Parameter([1.0, 2.0])
    >>> opt = optim.RMSprop([w], lr=0.1)
    >>> w.grad = np.array([0.5, -0.5], dtype=np.float32)
    >>> opt.step()
    >>> w.data  # 1 - 0.1 * 0.5 / (sqrt(0.01 * 0.25) + 1e-8), rounded in float32
    array([2.3841858e-07, 2.9999998e+00], dtype=float32)
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[ParamGroup],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
            "maximize": maximize,
        }
        self._check_group(defaults)
        super().__init__(params, defaults)

    #: torch's ``RMSprop.__setstate__`` defaults for checkpoints that lack them.
    _group_fallbacks: Mapping[str, Any] = {"momentum": 0.0, "centered": False, "maximize": False}

    def _check_group(self, group: ParamGroup) -> ParamGroup:
        unknown = sorted(map(repr, set(group) - _GROUP_KEYS))
        if unknown:
            raise TypeError(f"unknown hyperparameter {', '.join(unknown)}; RMSprop takes {sorted(_GROUP_KEYS)}")
        missing = [repr(key) for key in _REAL_HYPERPARAMETERS + _BOOL_HYPERPARAMETERS if key not in group]
        if missing:  # only a group edited after it was added can lack one
            raise KeyError(f"missing hyperparameter {', '.join(missing)}")
        checked = dict(group)
        for key in _BOOKKEEPING_KEYS:
            if key in group:
                checked[key] = _as_real_number(key, group[key])
        for key in _REAL_HYPERPARAMETERS:
            value = _as_real_number(key, group[key])
            if math.isnan(value) or math.isinf(value):
                raise ValueError(f"Invalid {key} value: {value} (must be finite)")
            if value < 0:
                raise ValueError(f"Invalid {key} value: {value} (must be >= 0)")
            checked[key] = value
        if checked["alpha"] > 1:
            raise ValueError(f"Invalid alpha value: {checked['alpha']} (must be in [0, 1])")
        for key in _BOOL_HYPERPARAMETERS:
            if not isinstance(group[key], (bool, np.bool_)):
                raise TypeError(f"{key} must be a bool, got {_describe(group[key])}")
            checked[key] = bool(group[key])
        return checked

    def _check_state(self, param: Tensor, group: ParamGroup, entry: Any, where: str) -> dict[str, Any]:
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where}: a state entry must be a dict, got {_describe(entry)}")
        unknown = sorted(map(repr, set(entry) - {"step", *_BUFFERS}))
        if unknown:
            raise KeyError(f"{where}: unknown state keys {', '.join(unknown)}")
        required = ["step", "square_avg"]
        if group["momentum"] > 0:
            required.append("momentum_buffer")
        if group["centered"]:
            required.append("grad_avg")
        for key in required:
            if key not in entry:
                raise KeyError(f"{where}: missing {key!r} (required by this group's settings)")
        try:
            step = _as_real_number("step", entry["step"])
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None
        if not math.isfinite(step) or step < 0:
            raise ValueError(f"{where}: step must be finite and >= 0, got {step}")
        checked: dict[str, Any] = {"step": step}
        for key in _BUFFERS:
            if key not in entry:
                continue
            value = entry[key]
            if not isinstance(value, np.ndarray) or isinstance(value, np.ma.MaskedArray):
                raise TypeError(f"{where}[{key!r}] must be an ndarray (not masked), got {_describe(value)}")
            if value.shape != param.shape:
                raise ValueError(f"{where}[{key!r}] has shape {value.shape}, the parameter has {param.shape}")
            if value.dtype != param.dtype:
                raise TypeError(f"{where}[{key!r}] has dtype {value.dtype}, the parameter has {param.dtype}")
            checked[key] = np.array(value, copy=True)
        return checked

    def _plain_grad(self, param: Tensor, state: dict[str, Any] | None) -> np.ndarray | None:
        """Return ``param.grad`` if it passes :meth:`_checked_grad` trivially, else None.

        ``state`` is ``param``'s state, or None.  The common case, a plain ndarray gradient matching a plain, writable
        ndarray parameter of a supported dtype, whose state is a float step and
        writable buffers that match, costs a few attribute reads here; anything
        else goes through the full check and its messages.
        """
        grad, data = param.grad, param.data
        if not (
            type(grad) is np.ndarray
            and type(data) is np.ndarray
            and grad.shape == data.shape
            and grad.dtype == data.dtype
            and data.dtype.type in SUPPORTED_DTYPES
            and data.flags.writeable
        ):
            return None
        if state:
            if type(state.get("step")) is not float or "square_avg" not in state:
                return None
            for key, buf in state.items():
                if key != "step" and (
                    key not in _BUFFER_KEYS
                    or type(buf) is not np.ndarray
                    or buf.shape != data.shape
                    or buf.dtype != data.dtype
                    or not buf.flags.writeable
                ):
                    return None
        return grad

    def _checked_grad(self, param: Tensor, where: str) -> np.ndarray:
        """Return ``param.grad`` after checking it, ``param`` and its state can make a step."""
        grad = param.grad
        if not isinstance(param.data, np.ndarray) or param.dtype.type not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{where}: the parameter's data is {_describe(param.data)}; "
                f"only {SUPPORTED_DTYPE_NAMES} arrays can be optimized"
            )
        if not param.data.flags.writeable:
            raise ValueError(f"{where}: the parameter's data is read-only; the step updates it in place")
        state = self.state.get(param, {})
        if state:
            for key in ("step", "square_avg"):
                if key not in state:
                    raise KeyError(f"{where}: state has no {key!r}")
            step = state["step"]
            if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, float, np.integer, np.floating)):
                raise TypeError(f"{where}: state['step'] must be a number, got {_describe(step)}")
        for key in _BUFFERS:
            value = state.get(key)
            if value is None:
                continue
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where}: state[{key!r}] must be an ndarray, got {_describe(value)}")
            if (value.shape, value.dtype) != (param.shape, param.dtype):
                raise ValueError(
                    f"{where}: state[{key!r}] is {_describe(value)} but the parameter is now "
                    f"{_describe(param.data)}; was .data replaced after the optimizer saw it?"
                )
            if not value.flags.writeable:
                raise ValueError(f"{where}: state[{key!r}] is read-only; the step updates it in place")
        if not isinstance(grad, np.ndarray):
            raise TypeError(f"{where}: .grad must be an ndarray or None, got {_describe(grad)}")
        if isinstance(grad, np.ma.MaskedArray):
            raise TypeError(f"{where}: .grad is a masked array; its mask would be ignored, so pass a plain ndarray")
        grad = np.asarray(grad)  # np.matrix, np.memmap: a plain view, so that * stays elementwise
        if grad.shape != param.shape:
            raise ValueError(f"{where}: .grad has shape {grad.shape}, the parameter has {param.shape}")
        if grad.dtype != param.dtype:
            raise TypeError(
                f"{where}: .grad has dtype {grad.dtype}, the parameter has {param.dtype} "
                "(torch refuses a gradient of another dtype too)"
            )
        return grad

    def _checked_groups(self) -> list[ParamGroup]:
        """Return each group's hyperparameters as they are now, checked and normalised (the groups stay as they are)."""
        checked = []
        for gi, group in enumerate(self.param_groups):
            try:
                checked.append(self._check_group(hyperparameters(group)))
            except (TypeError, ValueError, KeyError) as err:
                raise type(err)(f"param_groups[{gi}]: {err.args[0]}") from None
        return checked

    def _new_entry(self, param: Tensor, state: dict[str, Any] | None, group: ParamGroup) -> dict[str, Any]:
        """Return ``param``'s state (``state``) as a new dict, with zero buffers for what it lacks and ``group`` uses.

        Nothing is stored: the step stores it when it commits.
        """
        entry = dict(state) if state else {"step": 0.0, "square_avg": np.zeros_like(param.data)}
        if group["momentum"] > 0 and "momentum_buffer" not in entry:
            entry["momentum_buffer"] = np.zeros_like(param.data)
        if group["centered"] and "grad_avg" not in entry:
            entry["grad_avg"] = np.zeros_like(param.data)
        return entry

    def _state_for(self, param: Tensor, group: ParamGroup) -> dict[str, Any]:
        """Return ``param``'s state, creating and storing the zero buffers ``group``'s flags need.

        For subclasses with a step of their own (the deliberately wrong variants
        of the tests and of the conformance mutants); :meth:`step` stores new
        state only when it commits.
        """
        state = self.state.get(param)
        if _lacks_buffers(state, group):
            state = self.state[param] = self._new_entry(param, state, group)
        return state

    #: Threads for :meth:`step`: an int from 1 to 64, or None for ``$LUCID_NUM_THREADS``, else the
    #: CPUs available (at most 8).  Set it on the class or on one optimizer (``opt.num_threads = 1``);
    #: the results do not depend on it, bit for bit.
    num_threads: int | None = None
    #: The step's accelerator: ``"auto"`` (numba's compiled kernel where it imports, compiles and
    #: passes its self-check, else NumPy), ``"numba"`` (insist: a step refuses to run, changing
    #: nothing, when numba cannot), ``"numpy"``, or None for ``$LUCID_ACCELERATOR``, else ``"auto"``.
    #: Set it on the class or on one optimizer; the results do not depend on it, bit for bit.
    accelerator: str | None = None

    @property
    def backend(self) -> Accelerator:
        """The path :meth:`step` takes with the current :attr:`accelerator`, and why.

        ``str(opt.backend)`` reads, for instance, ``numba (numba 0.68.1 kernel)``
        or ``numpy (LUCID_ACCELERATOR='auto' and numba is not installed ...)``.
        The first call with ``"auto"`` or ``"numba"`` imports and compiles the
        kernel (about a second, less from numba's cache).

        Raises
        ------
        ValueError, RuntimeError
            As :meth:`step` does for a bad :attr:`accelerator`, or ``"numba"``
            where numba cannot run.
        """
        return resolve_accelerator(self.accelerator)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter whose ``.grad`` is not None.

        All or nothing, in three phases.  First everything the step reads is
        checked: each group's hyperparameters as they are now (a scheduler, or
        anyone, may have edited them), the thread count, and for each parameter
        its gradient, dtype and writability and those of its state.  Then
        everything the step needs is allocated: new state buffers, scratch,
        flat storage, and the new values of the parameters that take the
        reference path.  Only then is anything written: step counters, new
        state, the update.  A refusal (``TypeError``, ``ValueError``,
        ``KeyError``, naming the parameter or group) or a ``MemoryError`` in the
        first two phases changes nothing.  SIGINT during the writes, in the
        main thread with Python's default handler, is held back until they are
        done and then raised as ``KeyboardInterrupt``.  (The writes allocate
        no more than block-sized temporaries.)  A gradient sharing memory with
        its parameter or state is read as it was when ``step`` was called.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss; run with gradients on.

        Returns
        -------
        object
            What ``closure`` returned, or None.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        # 1. check (and 2. make new state entries, which are not state until the commit)
        hypers = self._checked_groups()
        threads = resolve_num_threads(self.num_threads)
        kernel = resolve_accelerator(self.accelerator).kernel
        if self.__dict__.get("_fast_step") is None:
            self._fast_step = FastStep()
        replayed = self._fast_step.replay(self.param_groups, hypers, self.state, threads, kernel)
        if replayed is not None:  # the last step's parameters and state, unchanged: checked, packed, prepared
            entries, update = replayed
            with interrupts_deferred():
                for entry in entries:
                    entry["step"] += 1.0
                update()
            return loss
        work = []
        created = []
        for gi, (group, hyper) in enumerate(zip(self.param_groups, hypers)):
            for pi, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                state = self.state.get(param)
                grad = self._plain_grad(param, state)
                if grad is None:
                    grad = self._checked_grad(param, f"param_groups[{gi}]['params'][{pi}]")
                entry = state
                if _lacks_buffers(state, hyper):
                    entry = self._new_entry(param, state, hyper)
                    created.append((param, entry))
                work.append((gi, hyper, param, grad, entry))
        # 2. allocate: rmsprop_update's bits, blocked, in place and threaded (complex and strided:
        # rmsprop_update itself, computed here)
        update = self._fast_step.prepare(work, threads, kernel)
        # 3. commit
        with interrupts_deferred():
            self.state.update(created)
            for *_, entry in work:
                entry["step"] += 1.0
            update()
            self._fast_step.record(self.param_groups, self.state)
        return loss
