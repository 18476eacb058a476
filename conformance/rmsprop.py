"""What the harness knows of RMSprop itself, in one module: the record, the axes, the ranges, the state.

The rest of the harness (lockstep and free-running drivers, the candidate
protocol and its adapters, scenarios, reports) reads RMSprop's particulars
from here:

* :class:`Hyper` and :data:`CONTINUOUS`: one param group's hyperparameters;
* :data:`FLAGS`: the numerical flags, the discrete axes of the case matrix;
* :data:`HYPER_RANGES`, :data:`HYPER_LOG_FLOORS`, :data:`HYPER_BOUNDARIES`:
  where drawn values of the continuous ones come from;
* :data:`BUFFERS`: the per-parameter state, by torch's names;
* :data:`REFERENCE` and :func:`reference_class`: the implementation every
  candidate is held to.

The step's arithmetic lives beside it: the exact (wider-precision) step in
:mod:`conformance.oracle`, and the forward-error scales and the bounds derived
from them in :mod:`conformance.compare` and :mod:`conformance.freerun`.  This
module imports neither torch nor NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "BUFFERS",
    "CONTINUOUS",
    "FLAGS",
    "HYPER_BOUNDARIES",
    "HYPER_LOG_FLOORS",
    "HYPER_RANGES",
    "REFERENCE",
    "Hyper",
    "reference_class",
]

#: The implementation under comparison, as reports name it.
REFERENCE = "torch.optim.RMSprop"


def reference_class() -> Any:
    """Return ``torch.optim.RMSprop`` (imports torch)."""
    import torch

    return torch.optim.RMSprop


@dataclass(frozen=True)
class Hyper:
    """One parameter group's RMSprop hyperparameters."""

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    maximize: bool = False

    def kwargs(self) -> dict[str, Any]:
        """Return the constructor keywords shared by Lucid and torch."""
        return dict(vars(self))

    def continuous(self) -> dict[str, float]:
        """Return the continuous hyperparameters (:data:`CONTINUOUS`), by name."""
        return {name: getattr(self, name) for name in CONTINUOUS}


#: The continuous hyperparameters of :class:`Hyper` (the others are the flags ``centered`` and ``maximize``).
CONTINUOUS = ("lr", "alpha", "eps", "momentum", "weight_decay")


#: The per-parameter state arrays of RMSprop, by torch's names.
BUFFERS = ("square_avg", "grad_avg", "momentum_buffer")


#: Each numerical flag and the values it takes (momentum and weight decay: off and on;
#: the "on" value here is only the default, examples draw it from :data:`HYPER_RANGES`).
FLAGS: dict[str, tuple[object, ...]] = {
    "centered": (False, True),
    "momentum": (0.0, 0.9),
    "weight_decay": (0.0, 1e-2),
    "maximize": (False, True),
}


#: The valid range of each continuous hyperparameter, ``(low, high, spacing)``: every
#: drawn value lies in ``[low, high]``, bounds included.  The low end is what torch
#: 2.13 accepts (``0 <= value`` for all five); ``alpha`` stops at 1, which Lucid
#: refuses to exceed (torch accepts ``alpha > 1``, where ``square_avg`` turns negative
#: and every root is NaN); the other high ends are the largest values a training run
#: uses (torch accepts any).  ``"log"`` spacing draws log-uniformly from
#: :data:`HYPER_LOG_FLOORS` up to ``high`` (and ``low`` itself through
#: :data:`HYPER_BOUNDARIES`); ``momentum`` and ``weight_decay`` are drawn only when
#: the case's flag switches them on.  The eps range is what torch's own tests never
#: exercise (they keep the default 1e-8).
HYPER_RANGES: dict[str, tuple[float, float, str]] = {
    "lr": (0.0, 1.0, "log"),
    "alpha": (0.0, 1.0, "linear"),
    "eps": (0.0, 1e-2, "log"),
    "momentum": (0.0, 0.99, "linear"),
    "weight_decay": (0.0, 1e-1, "log"),
}

#: Where the log-uniform part of a ``"log"`` range starts (zero itself is a boundary value).
HYPER_LOG_FLOORS: dict[str, float] = {"lr": 1e-6, "eps": 1e-12, "weight_decay": 1e-6}

#: Values at the edges of each range that implementations get wrong, drawn with a
#: probability of their own (:func:`conformance.strategies.hyper_value`): zero wherever
#: torch accepts it (``lr = 0`` still updates the state; ``eps = 0`` divides by the bare
#: root; ``momentum = 0`` or ``weight_decay = 0`` inside a case that switches them on
#: takes the plain path, as torch decides per step with ``momentum > 0`` and
#: ``weight_decay != 0``), and ``alpha`` at both ends and at 1/2.  torch's
#: ``grad_avg.lerp_(g, 1 - alpha)`` rounds differently for a weight below 1/2 (``alpha >
#: 1/2``) and from 1/2 up (``alpha <= 1/2``), so both branches run; near 1 the weight
#: ``1 - alpha`` of ``square_avg`` is a cancellation (it must be rounded once from the
#: Python float, as torch does: ``1 - float32(alpha)`` is 1.3% off at ``1 - 1e-6``).
HYPER_BOUNDARIES: dict[str, tuple[float, ...]] = {
    "lr": (0.0, 1.0),
    "alpha": (0.0, 1e-6, 0.5, 1.0 - 1e-6, 1.0),
    "eps": (0.0,),
    "momentum": (0.0,),
    "weight_decay": (0.0,),
}
