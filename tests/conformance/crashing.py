"""Candidates that crash, hang, raise, or lack a method or an option: for the exit-status, worker and jobs tests."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from lucid.optim import RMSprop


class DiesInStep(RMSprop):
    """Lucid's RMSprop, except that ``step`` ends the process at once, with no Python exception."""

    def step(self, closure: Any = None) -> Any:
        os._exit(70)


class RaisesOnZeroD(RMSprop):
    """Lucid's RMSprop, except that ``step`` raises IndexError when a parameter is 0-d (as lucid-dl 2.x did)."""

    def step(self, closure: Any = None) -> Any:
        if any(p.data.ndim == 0 for group in self.param_groups for p in group["params"]):
            raise IndexError("tuple index out of range")
        return super().step(closure)


class NoZeroGrad:
    """A class with ``step``, ``state_dict`` and ``load_state_dict`` but no ``zero_grad``: not an optimizer."""

    def __init__(self, params: Any, **hypers: Any) -> None:
        self.params = list(params)

    def step(self) -> None:
        """Do nothing."""

    def state_dict(self) -> dict[str, Any]:
        """Return nothing."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take nothing."""


class WithoutMaximize(RMSprop):
    """Lucid's RMSprop with a constructor that has no ``maximize`` (an optional feature it lacks)."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(params, lr, alpha, eps, weight_decay, momentum, centered)


class SegfaultsInStep(RMSprop):
    """Lucid's RMSprop, except that its third ``step`` kills the process with SIGSEGV (a crash in native code)."""

    def step(self, closure: Any = None) -> Any:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3:
            os.kill(os.getpid(), signal.SIGSEGV)
        return super().step(closure)


class HangsInStep(RMSprop):
    """Lucid's RMSprop, except that ``step`` never returns (a deadlock in the candidate)."""

    def step(self, closure: Any = None) -> Any:
        threading.Event().wait()


class RaisesWhenCentered(RMSprop):
    """Lucid's RMSprop, except that building it with ``centered=True`` raises (a feature it fails on)."""

    def __init__(self, params: Any, *args: Any, centered: bool = False, **kwargs: Any) -> None:
        if centered:
            raise NotImplementedError("centered=True")
        super().__init__(params, *args, **kwargs)


class IndexesZeroD(RMSprop):
    """Lucid's RMSprop, except that its loop over the parameters indexes a 0-d one (as lucid-dl 2.9.0's step does)."""

    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            for param in group["params"]:
                if param.data.ndim == 0:
                    param.data[:] = 0.0  # IndexError: too many indices for a 0-d array
        return super().step(closure)


class WritesToStandardOutput(RMSprop):
    """Lucid's RMSprop, except that ``step`` writes to file descriptor 1 and prints, as native code and debugging do."""

    def step(self, closure: Any = None) -> Any:
        os.write(1, b'{"ok": true, "result": "not a reply"}\n')
        print("step")
        return super().step(closure)
