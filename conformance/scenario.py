"""A scenario: everything one conformance example feeds both optimizers, as plain data.

A :class:`Scenario` names its matrix case, its param groups' hyperparameters,
its parameters' shapes, streams and layouts, the number of steps, a learning
rate change and a seed.  The arrays themselves follow from it
(:func:`conformance.streams.materialize`), so :meth:`Scenario.to_id` is a
complete, replayable description: ``python -m conformance check --replay ID``
runs exactly the same example again.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import asdict, dataclass, field

from conformance.compare import Hyper
from conformance.matrix import Case, case_by_id

__all__ = ["GroupSpec", "ParamSpec", "Scenario"]

_ID_PREFIX = "v1-"


@dataclass(frozen=True)
class GroupSpec:
    """The continuous hyperparameters of one param group (the flags come from the case)."""

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.9
    weight_decay: float = 1e-2


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its shape, group, gradient stream and how the gradient is laid out."""

    shape: tuple[int, ...] = (31,)
    group: int = 0
    kind: str = "normal"
    scale: float = 1.0
    layout: str = "contiguous"
    #: The gradient is None on steps ``k * none_every - 1`` (0: never).
    none_every: int = 0
    nonfinite: str = "none"
    param_scale: float = 1.0


@dataclass(frozen=True)
class Scenario:
    """One example of the conformance matrix."""

    case: str
    groups: tuple[GroupSpec, ...] = (GroupSpec(),)
    params: tuple[ParamSpec, ...] = (ParamSpec(),)
    steps: int = 12
    seed: int = 0
    #: ``(step, factor)``: before that step every group's lr is multiplied by factor.
    lr_change: tuple[int, float] | None = None
    #: Which check families run on it (:data:`conformance.checks.FAMILIES`).
    checks: tuple[str, ...] = ("lockstep", "state_dict")
    label: str = field(default="", compare=False)

    @property
    def matrix_case(self) -> Case:
        """The case of the matrix this scenario belongs to."""
        return case_by_id(self.case)

    @property
    def dtype(self) -> str:
        """The dtype name of every parameter."""
        return self.matrix_case.dtype

    def hyper(self, group: int, lr: float | None = None) -> Hyper:
        """Return group ``group``'s full hyperparameters (flags from the case)."""
        flags, spec = self.matrix_case.flags, self.groups[group]
        return Hyper(
            lr=spec.lr if lr is None else lr,
            alpha=spec.alpha,
            eps=spec.eps,
            weight_decay=spec.weight_decay if flags.weight_decay > 0 else 0.0,
            momentum=spec.momentum if flags.momentum > 0 else 0.0,
            centered=flags.centered,
            maximize=flags.maximize,
        )

    @property
    def hypers(self) -> list[Hyper]:
        """Every group's hyperparameters, in group order."""
        return [self.hyper(i) for i in range(len(self.groups))]

    @property
    def group_of(self) -> list[int]:
        """The group index of each parameter."""
        return [p.group for p in self.params]

    def to_id(self) -> str:
        """Return a compact, URL-safe string from which :meth:`from_id` rebuilds this scenario."""
        data = asdict(self)
        data.pop("label")
        raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        return _ID_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")

    @classmethod
    def from_id(cls, scenario_id: str) -> Scenario:
        """Rebuild the scenario :meth:`to_id` encoded.

        Raises
        ------
        ValueError
            If ``scenario_id`` is not such a string.
        """
        if not scenario_id.startswith(_ID_PREFIX):
            raise ValueError(f"not a scenario id (must start with {_ID_PREFIX!r}): {scenario_id!r}")
        body = scenario_id[len(_ID_PREFIX) :]
        try:
            raw = zlib.decompress(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            data = json.loads(raw)
            return cls(
                case=data["case"],
                groups=tuple(GroupSpec(**g) for g in data["groups"]),
                params=tuple(ParamSpec(**{**p, "shape": tuple(p["shape"])}) for p in data["params"]),
                steps=int(data["steps"]),
                seed=int(data["seed"]),
                lr_change=None if data["lr_change"] is None else (int(data["lr_change"][0]), data["lr_change"][1]),
                checks=tuple(data["checks"]),
            )
        except (ValueError, KeyError, TypeError, zlib.error) as err:
            raise ValueError(f"corrupt scenario id {scenario_id!r}: {err}") from None
