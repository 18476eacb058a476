"""The conformance case matrix, declared as data.

Every test and the command line generate their cases from :data:`FLAGS`,
:data:`DTYPES` and :data:`TORCH_IMPLS`; there are no hand-written case lists.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from conformance.compare import Hyper

__all__ = ["DTYPES", "FLAGS", "TORCH_IMPLS", "FlagConfig", "flag_configs"]

#: Each numerical flag and the values it takes (momentum and weight decay: off and on).
FLAGS: dict[str, tuple[object, ...]] = {
    "centered": (False, True),
    "momentum": (0.0, 0.9),
    "weight_decay": (0.0, 1e-2),
    "maximize": (False, True),
}

DTYPES = (np.float32, np.float64)

#: torch implementations compared against (``foreach`` values) on the CPU.
TORCH_IMPLS = (False, True)


@dataclass(frozen=True)
class FlagConfig:
    """One combination of the numerical flags."""

    centered: bool
    momentum: float
    weight_decay: float
    maximize: bool

    @property
    def name(self) -> str:
        """A short stable identifier, e.g. ``c1-m1-wd0-max0``."""
        return (
            f"c{int(self.centered)}-m{int(self.momentum > 0)}-"
            f"wd{int(self.weight_decay > 0)}-max{int(self.maximize)}"
        )

    def hyper(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8) -> Hyper:
        """Return this combination's hyperparameters with the given continuous values."""
        return Hyper(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            centered=self.centered,
            maximize=self.maximize,
        )


def flag_configs() -> Iterator[FlagConfig]:
    """Yield every combination of :data:`FLAGS` (16)."""
    keys = list(FLAGS)
    for values in itertools.product(*(FLAGS[k] for k in keys)):
        yield FlagConfig(**dict(zip(keys, values)))
