"""Drive a Lucid-interface optimizer and ``torch.optim.RMSprop`` through identical steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import lucid
from conformance.compare import Hyper

__all__ = ["BUFFERS", "LockstepPair", "StepRecord"]

#: The per-parameter state arrays of RMSprop, by torch's names.
BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")


@dataclass
class StepRecord:
    """Both sides' values after one step, for one parameter, as ndarrays."""

    param0: NDArray[Any]
    grad: NDArray[Any] | None
    torch_state0: dict[str, NDArray[Any]]
    torch_param: NDArray[Any]
    lucid_param: NDArray[Any]
    torch_state: dict[str, NDArray[Any]] = field(default_factory=dict)
    lucid_state: dict[str, NDArray[Any]] = field(default_factory=dict)


def _buffers(state: dict[str, Any]) -> dict[str, NDArray[Any]]:
    out = {}
    for key in BUFFERS:
        if key in state:
            value = state[key]
            out[key] = (
                value.detach().cpu().numpy().copy() if isinstance(value, torch.Tensor) else np.array(value)
            )
    return out


class LockstepPair:
    """A torch RMSprop and a Lucid-interface optimizer over copies of the same parameters.

    Parameters
    ----------
    params0 : list of ndarray
        Initial parameter values (one param group).
    hyper : Hyper
        Hyperparameters for both sides.
    foreach : bool
        torch's implementation switch.
    optimizer_class : type, default lucid.optim.RMSprop
        The Lucid-interface class under test.
    device : str, default "cpu"
        torch's device.
    """

    def __init__(
        self,
        params0: list[NDArray[Any]],
        hyper: Hyper,
        foreach: bool,
        optimizer_class: type = lucid.optim.RMSprop,
        device: str = "cpu",
    ) -> None:
        self.hyper = hyper
        self.torch_params = [
            torch.nn.Parameter(torch.from_numpy(np.array(p, copy=True)).to(device)) for p in params0
        ]
        self.lucid_params = [lucid.nn.Parameter(np.array(p, copy=True)) for p in params0]
        self.torch_opt = torch.optim.RMSprop(self.torch_params, foreach=foreach, **hyper.kwargs())
        self.lucid_opt = optimizer_class(self.lucid_params, **hyper.kwargs())

    def set_lr(self, lr: float) -> None:
        """Change the learning rate on both sides, as a scheduler would."""
        for opt in (self.torch_opt, self.lucid_opt):
            for group in opt.param_groups:
                group["lr"] = lr

    def sync_lucid_to_torch(self) -> None:
        """Copy torch's parameters and buffers into Lucid (in place), for a lockstep step."""
        for tp, lp in zip(self.torch_params, self.lucid_params):
            lp.data[...] = tp.detach().cpu().numpy()
            tstate = self.torch_opt.state.get(tp, {})
            lstate = self.lucid_opt.state.get(lp, {})
            for key, value in _buffers(tstate).items():
                if key in lstate:
                    lstate[key][...] = value
            if "step" in tstate and "step" in lstate:
                lstate["step"] = float(tstate["step"])

    def step(self, grads: list[NDArray[Any] | None]) -> list[StepRecord]:
        """Give both sides the same gradients, step once, and return what each holds."""
        records = []
        for tp, lp, g in zip(self.torch_params, self.lucid_params, grads):
            records.append(
                StepRecord(
                    param0=tp.detach().cpu().numpy().copy(),
                    grad=None if g is None else np.array(g, copy=True),
                    torch_state0=_buffers(self.torch_opt.state.get(tp, {})),
                    torch_param=np.empty(0),
                    lucid_param=np.empty(0),
                )
            )
            tp.grad = None if g is None else torch.from_numpy(np.array(g, copy=True)).to(tp.device)
            lp.grad = None if g is None else np.array(g, copy=True)
        self.torch_opt.step()
        self.lucid_opt.step()
        for rec, tp, lp in zip(records, self.torch_params, self.lucid_params):
            rec.torch_param = tp.detach().cpu().numpy().copy()
            rec.lucid_param = np.array(lp.data, copy=True)
            rec.torch_state = _buffers(self.torch_opt.state.get(tp, {}))
            rec.lucid_state = _buffers(self.lucid_opt.state.get(lp, {}))
        return records
