"""What every check family shares: the outcome record, the device gate, and the pair options of a scenario."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from conformance.scenario import Scenario

__all__ = ["CheckOutcome", "DeviceUnavailableError", "pair_options", "require_device"]


class DeviceUnavailableError(RuntimeError):
    """The case needs a device this machine does not have."""


def require_device(device: str) -> None:
    """Raise :class:`DeviceUnavailableError` (naming the reason) if torch cannot use ``device``."""
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) "
            "sees no GPU, so the cuda cases cannot run here"
        )


@dataclass(frozen=True)
class CheckOutcome:
    """One named check's result on one scenario.

    Three kinds besides a pass: a disagreement (``passed`` False), a candidate
    that could not run (``raised``: it raised, so nothing was compared; also
    ``passed`` False, but never a numerical verdict), and a case the candidate
    does not support (``unsupported`` names what it lacks; ``passed`` True,
    since nothing was judged, unless the caller is strict).
    """

    check: str
    passed: bool
    detail: str
    verdict: str = ""
    #: The candidate raised: the check could not compare anything.
    raised: bool = False
    #: What the scenario needs that the candidate does not support (empty: supported).
    unsupported: str = ""

    @property
    def status(self) -> str:
        """``ok``, ``FAIL`` (disagrees), ``ERROR`` (the candidate raised) or ``n/a`` (not supported)."""
        if self.unsupported:
            return "n/a "
        if self.raised:
            return "ERROR"
        return "ok  " if self.passed else "FAIL"

    def __str__(self) -> str:
        verdict = f"; {self.verdict}" if self.verdict else ""
        return f"{self.status} {self.check}: {self.detail}{verdict}"


def pair_options(scenario: Scenario) -> dict[str, Any]:
    """Return the :class:`~conformance.runners.LockstepPair` options of ``scenario`` (device checked first)."""
    case = scenario.matrix_case
    require_device(case.device)
    return {
        "device": case.device,
        "group_hypers": scenario.hypers,
        "group_of": scenario.group_of,
        "capturable": case.impl.capturable,
        "tensor_lr": case.impl.tensor_lr,
        "schedule": scenario.changes,
    }
