"""A candidate that drifts: Lucid's RMSprop, then every parameter nudged up by one ULP per step.

The smallest systematic change an implementation can make.  ``compare`` must
flag it against a Lucid baseline::

    python -m conformance run --out current --optimizer conformance.examples.perturbed:OneUlpRMSprop
    python -m conformance compare baselines current/drift.json   # exits 1, naming every configuration
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import lucid.optim

__all__ = ["OneUlpRMSprop"]


class OneUlpRMSprop(lucid.optim.RMSprop):
    """:class:`lucid.optim.RMSprop` whose every updated element ends one ULP towards +inf."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take Lucid's step, then move each updated parameter to the next float above it."""
        loss = super().step(closure)
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.data[...] = np.nextafter(param.data, param.data.dtype.type(np.inf))
        return loss
