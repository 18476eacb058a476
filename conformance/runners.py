"""Drive a candidate (any :class:`~conformance.candidate.Adapter`) and ``torch.optim.RMSprop`` through identical steps.

:class:`LockstepPair` is the one driver every check, the sign test and the
drift measurement share: each builds a pair, applies the scenario's schedule,
optionally re-syncs the candidate to torch, and steps both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray

from conformance.adapters.objects import state_buffers
from conformance.candidate import DEFAULT_CANDIDATE, Adapter, CandidateError, Group, resolve
from conformance.rmsprop import Hyper, reference_class
from conformance.streams import as_real, copy_layout

if TYPE_CHECKING:
    from conformance.scenario import HyperChange

__all__ = ["CandidateStepError", "LockstepPair", "StepRecord"]


class CandidateStepError(CandidateError):
    """The candidate raised while it was built or stepped: the message names the step and every parameter."""


@dataclass
class StepRecord:
    """Both sides' values after one step, for one parameter, as ndarrays.

    A complex parameter's values are recorded as their (real, imaginary) pairs
    (:func:`conformance.streams.as_real`, shape ``(*shape, 2)``), the view torch's
    step computes on, so every comparison judges them as real numbers of the
    real dtype.
    """

    param0: NDArray[Any]
    grad: NDArray[Any] | None
    torch_state0: dict[str, NDArray[Any]]
    torch_param: NDArray[Any]
    candidate_param: NDArray[Any]
    torch_state: dict[str, NDArray[Any]] = field(default_factory=dict)
    candidate_state: dict[str, NDArray[Any]] = field(default_factory=dict)
    #: The hyperparameters of the parameter's group at this step (None: the caller's).
    hyper: Hyper | None = None
    #: Whether the parameter is complex (every array here its real pairs, last axis of 2).
    pairs: bool = False


def _real_buffers(state: dict[str, Any]) -> dict[str, NDArray[Any]]:
    """Return copies of torch's buffers, complex ones as their real pairs (for a :class:`StepRecord`)."""
    return {key: as_real(value.copy()) for key, value in state_buffers(state).items()}


class LockstepPair:
    """``torch.optim.RMSprop`` and a candidate over copies of the same parameters.

    Parameters
    ----------
    params0 : list of ndarray
        Initial parameter values.
    hyper : Hyper
        Hyperparameters for both sides (the constructor's defaults when
        ``group_hypers`` is given).
    foreach : bool
        torch's implementation switch.
    candidate : Adapter, class or str, optional
        The implementation under test (:func:`conformance.candidate.resolve`;
        default :data:`~conformance.candidate.DEFAULT_CANDIDATE`).
    device : str, default "cpu"
        torch's device (and a torch candidate's).
    group_hypers : sequence of Hyper, optional
        One entry per param group, each group with its own hyperparameters;
        ``group_of`` then gives each parameter's group.  Default: one group.
    group_of : sequence of int, optional
        The group index of each parameter (default: all in group 0).
    capturable : bool, default False
        torch's ``capturable`` (CUDA only).
    tensor_lr : bool, default False
        Give torch the learning rate as a 0-d tensor of the parameters' dtype on
        ``device``; the candidate gets that tensor's value as a float, so both use
        the same number (:attr:`hypers` holds it).
    lr_schedule : dict, optional
        ``{step: lr}``: :meth:`apply_schedule` sets every group's lr before those steps.
    lr_factors : dict, optional
        ``{step: factor}``: :meth:`apply_schedule` multiplies every group's lr
        before those steps.
    schedule : sequence of HyperChange, optional
        Changes of any hyperparameter, per group
        (:class:`~conformance.scenario.HyperChange`): :meth:`apply_schedule`
        applies a step's changes, in order, after ``lr_schedule`` and ``lr_factors``.

    Raises
    ------
    CandidateStepError
        If the candidate raised while it was built (the message names every parameter).
    """

    def __init__(
        self,
        params0: list[NDArray[Any]],
        hyper: Hyper,
        foreach: bool,
        candidate: Adapter | type | str | None = None,
        device: str = "cpu",
        *,
        group_hypers: list[Hyper] | None = None,
        group_of: list[int] | None = None,
        capturable: bool = False,
        tensor_lr: bool = False,
        lr_schedule: dict[int, float] | None = None,
        lr_factors: dict[int, float] | None = None,
        schedule: Sequence[HyperChange] = (),
    ) -> None:
        self.adapter = resolve(candidate if candidate is not None else DEFAULT_CANDIDATE)
        self.lr_schedule = dict(lr_schedule or {})
        self.lr_factors = dict(lr_factors or {})
        self.schedule = tuple(schedule)
        self.hyper = hyper
        self.device = device
        self.tensor_lr = tensor_lr
        self.steps_taken = 0
        self.shapes = [(np.shape(p), np.asarray(p).dtype) for p in params0]
        self.torch_params = [torch.nn.Parameter(torch.from_numpy(np.array(p, copy=True)).to(device)) for p in params0]
        hypers = list(group_hypers) if group_hypers is not None else [hyper]
        group_of = list(group_of) if group_of is not None else [0] * len(params0)
        self._lr_dtype = torch.from_numpy(np.asarray(params0[0])).dtype if params0 else torch.float32
        if tensor_lr:
            hypers = [Hyper(**{**h.kwargs(), "lr": self._torch_lr(h.lr).item()}) for h in hypers]
        self.hypers = hypers
        self.group_of = group_of
        members = [[i for i, g in enumerate(group_of) if g == k] for k in range(len(hypers))]
        torch_groups = [
            {"params": [self.torch_params[i] for i in idx], **self._torch_kwargs(h)} for idx, h in zip(members, hypers)
        ]
        extra = {"capturable": True} if capturable else {}
        defaults = self._torch_kwargs(hypers[0])
        self.torch_opt = reference_class()(torch_groups, foreach=foreach, **extra, **defaults)
        #: The candidate's groups as it was built (members and hyperparameters).
        self.groups = [Group(tuple(idx), h) for idx, h in zip(members, hypers)]
        self.candidate = self._call("building it", self.adapter.create, list(params0), self.groups, device)

    def _describe(self, index: int) -> str:
        shape, dtype = self.shapes[index]
        return f"#{index} {dtype}{list(shape)} group {self.group_of[index]}"

    def describe_params(self, most: int = 8) -> str:
        """Name the parameters by index, shape, dtype and group, for a message: all, or ``most`` of a longer list.

        Of more than ``most``, the first ``most - 2``, the last and the count are
        named, and every 0-d and empty parameter (the shapes implementations
        most often mishandle).
        """
        count = len(self.shapes)
        if count <= most:
            return "parameters " + ", ".join(self._describe(i) for i in range(count))
        odd = [i for i, (shape, _) in enumerate(self.shapes) if len(shape) == 0 or 0 in shape]
        named = sorted({*range(most - 2), count - 1, *odd})
        parts, previous = [], -1
        for i in named:
            if i > previous + 1:
                parts.append("...")
            parts.append(self._describe(i))
            previous = i
        return f"{count} parameters: " + ", ".join(parts)

    def _call(self, what: str, method: Any, *args: Any) -> Any:
        """Call a candidate method; an exception becomes :class:`CandidateStepError` naming ``what`` and the params."""
        try:
            return method(*args)
        except Exception as err:
            kind = getattr(err, "remote_type", type(err).__name__)  # a worker's exception: the candidate's own type
            index = getattr(err, "parameter", None)  # the parameter it was working on, where its traceback says
            on = f" (its traceback holds parameter {self._describe(index)})" if isinstance(index, int) else ""
            raise CandidateStepError(
                f"{self.adapter.name} raised {kind} {what}{on}: {err} ({self.describe_params()})"
            ) from err

    def _torch_lr(self, lr: float) -> Any:
        if not self.tensor_lr:
            return lr
        return torch.tensor(lr, dtype=self._lr_dtype, device=self.device)

    def _torch_kwargs(self, hyper: Hyper) -> dict[str, Any]:
        return {**hyper.kwargs(), "lr": self._torch_lr(hyper.lr)}

    def set_lr(self, lr: float) -> None:
        """Change the learning rate of every group on both sides, as a scheduler would."""
        self.scale_lr(None, lr)

    def scale_lr(self, factor: float | None, lr: float | None = None) -> list[Hyper]:
        """Multiply every group's lr by ``factor`` (or set it to ``lr``) on both sides; return :attr:`hypers`."""
        if factor is None:
            return self.change("lr", float(lr if lr is not None else self.hyper.lr))
        return self.change("lr", factor, scale=True)

    def change(self, name: str, value: float, group: int | None = None, *, scale: bool = False) -> list[Hyper]:
        """Set hyperparameter ``name`` of ``group`` (every group when None) to ``value`` on both sides.

        With ``scale`` the current value is multiplied by ``value`` instead.  The
        change goes through torch's ``param_groups`` and the candidate's
        :meth:`~conformance.candidate.Candidate.set_hyper`, as a scheduler's does;
        with a tensor lr, torch's tensor is filled in place (as a captured
        scheduler must) and the candidate gets its value.  Returns the new
        :attr:`hypers`.
        """
        new = list(self.hypers)
        for k in range(len(new)) if group is None else (group,):
            target = getattr(new[k], name) * value if scale else value
            tgroup = self.torch_opt.param_groups[k]
            if name == "lr" and self.tensor_lr:
                tgroup["lr"].fill_(target)
                target = float(tgroup["lr"].item())
            else:
                tgroup[name] = target
            self._call(f"setting {name} of group {k}", self.candidate.set_hyper, k, name, target)
            new[k] = replace(new[k], **{name: target})
        self.hypers = new
        self.hyper = replace(self.hyper, **{name: getattr(new[0], name)})
        return new

    def reload_hypers(self) -> list[Hyper]:
        """Read every group's hyperparameters back from torch's ``param_groups`` into :attr:`hypers`.

        After ``load_state_dict`` torch holds the saved groups' values, whatever
        the optimizer was built with; the comparisons that follow must use those.
        """

        def number(value: Any) -> Any:
            return float(value.item()) if isinstance(value, torch.Tensor) else value

        names = [f.name for f in fields(Hyper)]
        self.hypers = [Hyper(**{k: number(g[k]) for k in names}) for g in self.torch_opt.param_groups]
        self.hyper = self.hypers[0]
        return self.hypers

    def apply_schedule(self, step: int) -> None:
        """Apply what is due before ``step``: :attr:`lr_schedule`, :attr:`lr_factors`, then :attr:`schedule`."""
        if step in self.lr_schedule:
            self.set_lr(self.lr_schedule[step])
        if step in self.lr_factors:
            self.scale_lr(self.lr_factors[step])
        for c in self.schedule:
            if c.step == step:
                self.change(c.name, c.value, c.group, scale=c.scale)

    def sync_candidate_to_torch(self) -> None:
        """Copy torch's parameters, buffers and step counts into the candidate, for a lockstep step."""
        for i, tp in enumerate(self.torch_params):
            tstate = self.torch_opt.state.get(tp, {})
            step = float(tstate["step"]) if "step" in tstate else None
            self._call(
                f"when its state was written (before step {self.steps_taken})",
                self.candidate.write,
                i,
                tp.detach().cpu().numpy(),
                state_buffers(tstate),
                step,
            )

    def candidate_values(self) -> list[NDArray[Any]]:
        """Return copies of the candidate's parameters."""
        return [self._call("reading its parameters", self.candidate.param, i) for i in range(len(self.shapes))]

    def step_candidate(self, grads: list[NDArray[Any] | None]) -> None:
        """Step the candidate alone (torch stays where it is), for a run that compares the candidate with itself."""
        self._call(f"at step {self.steps_taken}", self.candidate.step, list(grads))
        self.steps_taken += 1

    def step(self, grads: list[NDArray[Any] | None]) -> list[StepRecord]:
        """Give both sides the same gradients, step once, and return what each holds.

        Raises
        ------
        CandidateStepError
            If the candidate raised (the message names the step and every parameter).
        """
        records = []
        for tp, g in zip(self.torch_params, grads):
            records.append(
                StepRecord(
                    param0=as_real(tp.detach().cpu().numpy().copy()),
                    grad=None if g is None else as_real(np.array(g, copy=True)),
                    torch_state0=_real_buffers(self.torch_opt.state.get(tp, {})),
                    torch_param=np.empty(0),
                    candidate_param=np.empty(0),
                    hyper=self.hypers[self.group_of[len(records)]],
                    pairs=tp.is_complex(),
                )
            )
            # torch's own copy, in the stream's layout (non-contiguous stays so); the candidate makes its own.
            tp.grad = None if g is None else torch.from_numpy(copy_layout(g)).to(tp.device)
        self.torch_opt.step()
        self._call(f"at step {self.steps_taken}", self.candidate.step, list(grads))
        self.steps_taken += 1
        for i, (rec, tp, value) in enumerate(zip(records, self.torch_params, self.candidate_values())):
            rec.torch_param = as_real(tp.detach().cpu().numpy().copy())
            rec.candidate_param = as_real(value)
            rec.torch_state = _real_buffers(self.torch_opt.state.get(tp, {}))
            rec.candidate_state = {
                k: as_real(v) for k, v in self._call("reading its buffers", self.candidate.buffers, i).items()
            }
        return records
