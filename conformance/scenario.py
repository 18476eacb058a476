"""A scenario: everything one conformance example feeds both optimizers, as plain data.

A :class:`Scenario` names its matrix case, its param groups' hyperparameters,
its parameters' shapes, streams and layouts, the number of steps, a schedule
of hyperparameter changes (:class:`HyperChange`) and a seed.  The arrays themselves follow from it
(:func:`conformance.streams.materialize`), so :meth:`Scenario.to_id` is a
complete, replayable description: ``python -m conformance check --replay ID``
runs exactly the same example again.

A replay id may come from anywhere (a log, a colleague, a hand edit), so
:meth:`Scenario.from_id` checks every field before anything is computed:
types, known names (case, stream kind, layout, check family), group indices,
and bounds on the size of the work (:data:`MAX_STEPS`, :data:`MAX_ELEMENTS`,
:data:`MAX_ELEMENT_STEPS`) and of the token itself (:data:`MAX_TOKEN_BYTES`,
:data:`MAX_NESTING`).  A bad token is a :class:`ScenarioIdError` naming the
field (``scenario id 'v1-...': steps must be an integer in 1..10000, got
1000000000``): a usage error, never a disagreement of the candidate.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import zlib
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from conformance.matrix import Case, case_by_id
from conformance.rmsprop import CONTINUOUS, Hyper
from conformance.streams import LAYOUTS, NONFINITE, SPECIALS, STREAM_KINDS

__all__ = [
    "DEFAULT_GROUP",
    "FAMILIES",
    "MAX_CHANGES",
    "MAX_ELEMENTS",
    "MAX_ELEMENT_STEPS",
    "MAX_NESTING",
    "MAX_PARAMS",
    "MAX_STEPS",
    "MAX_TOKEN_BYTES",
    "SCHEDULABLE",
    "HyperChange",
    "ParamSpec",
    "Scenario",
    "ScenarioIdError",
]

_ID_PREFIX = "v1-"

#: Check families and the checks each produces (run by :mod:`conformance.checks`).
FAMILIES: dict[str, tuple[str, ...]] = {
    "lockstep": ("lockstep", "nonfinite", "dtype"),
    "freerun": ("freerun", "growth"),
    "sign": ("sign", "magnitude"),
    "state_dict": ("state_dict", "torch_to_candidate", "candidate_to_torch", "candidate_roundtrip", "reordered_load"),
    "contract": (
        "contract_positional",
        "contract_zero_grad",
        "contract_closure",
        "contract_grad_untouched",
        "contract_state_isolation",
        "contract_load_hypers",
        "contract_load_mapping",
        "contract_named_params",
        "contract_param_groups",
        "contract_bad_grad",
        "contract_in_place",
    ),
}

#: Most steps of a replayed scenario (the probes take 120, drawn scenarios at most 12).
MAX_STEPS = 10_000
#: Most elements of one parameter (the sign probe's are 2048).
MAX_ELEMENTS = 2**20
#: Most gradient elements of a whole scenario, all parameters times steps (2^24 float64 values: 128 MiB).
MAX_ELEMENT_STEPS = 2**24
#: Most parameters and param groups of a replayed scenario; most dimensions of a shape.
MAX_PARAMS = 64
_MAX_GROUPS = 16
_MAX_NDIM = 8
#: Most bytes a token inflates to (the probes' are under 1 KiB), and the deepest nesting of its JSON (4).
MAX_TOKEN_BYTES = 2**16
MAX_NESTING = 8
#: Most hyperparameter changes in one schedule.
MAX_CHANGES = 64


#: The hyperparameters a schedule may change mid-run, through ``param_groups``.  The
#: flags cannot change: ``centered`` and ``momentum``'s on/off decide which buffers
#: torch creates with a parameter's first state (it raises ``KeyError`` when a later
#: step needs one it never made), and ``maximize``/``centered`` are axes of the case.
SCHEDULABLE = CONTINUOUS


class ScenarioIdError(ValueError):
    """A scenario (replay) id that is corrupt or outside the bounds; the message names the field."""


#: A param group's hyperparameters when none are given: momentum and weight decay at the values
#: used where the case turns them on.
DEFAULT_GROUP = Hyper(momentum=0.9, weight_decay=1e-2)


@dataclass(frozen=True)
class HyperChange:
    """Before step ``step``, set hyperparameter ``name`` of param group ``group`` to ``value``.

    ``group=None`` changes every group; ``scale=True`` multiplies the current
    value by ``value`` instead (as a learning-rate scheduler does).  Both sides,
    torch and the candidate, see the change in their ``param_groups``.
    """

    step: int
    name: str
    value: float
    group: int | None = None
    scale: bool = False


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
    #: Finite special values inside the gradient (:data:`conformance.streams.SPECIALS`).
    special: str = "none"
    #: The first step with a gradient (None before it): torch creates the state, and starts
    #: its step counter, at a parameter's first gradient, not at construction.
    first_step: int = 0


@dataclass(frozen=True)
class Scenario:
    """One example of the conformance matrix."""

    case: str
    #: Each param group's continuous hyperparameters (:data:`~conformance.rmsprop.CONTINUOUS`);
    #: ``centered`` and ``maximize`` are the case's, and momentum and weight decay apply
    #: only where the case turns them on (:meth:`hyper`).
    groups: tuple[Hyper, ...] = (DEFAULT_GROUP,)
    params: tuple[ParamSpec, ...] = (ParamSpec(),)
    steps: int = 12
    seed: int = 0
    #: ``(step, factor)``: before that step every group's lr is multiplied by factor
    #: (the schedule's first change at that step; kept so older replay ids load).
    lr_change: tuple[int, float] | None = None
    #: Changes of any :data:`SCHEDULABLE` hyperparameter mid-run, per group.
    schedule: tuple[HyperChange, ...] = ()
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
        values = self.groups[group].continuous()
        if lr is not None:
            values["lr"] = lr
        return self.matrix_case.flags.hyper(**values)

    @property
    def hypers(self) -> list[Hyper]:
        """Every group's hyperparameters, in group order."""
        return [self.hyper(i) for i in range(len(self.groups))]

    @property
    def changes(self) -> tuple[HyperChange, ...]:
        """Every change mid-run, in the order they apply: :attr:`lr_change` first, then :attr:`schedule` by step."""
        if self.lr_change is None:
            return tuple(sorted(self.schedule, key=lambda c: c.step))
        step, factor = self.lr_change
        return tuple(sorted((HyperChange(step, "lr", factor, scale=True), *self.schedule), key=lambda c: c.step))

    @property
    def group_of(self) -> list[int]:
        """The group index of each parameter."""
        return [p.group for p in self.params]

    def to_id(self) -> str:
        """Return a compact, URL-safe string from which :meth:`from_id` rebuilds this scenario."""
        data = asdict(self)
        data.pop("label")
        data["groups"] = [g.continuous() for g in self.groups]  # the flags are the case's
        if not data["schedule"]:
            data.pop("schedule")  # ids without a schedule stay as they were before it existed
        raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        return _ID_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")

    @classmethod
    def from_id(cls, scenario_id: str) -> Scenario:
        """Rebuild the scenario :meth:`to_id` encoded, checking every field.

        Raises
        ------
        ScenarioIdError
            If ``scenario_id`` is not such a string, or a field is missing, of the
            wrong type, unknown or out of bounds (the message names it).
        """
        shown = scenario_id if len(scenario_id) <= 40 else f"{scenario_id[:36]}..."
        if not scenario_id.startswith(_ID_PREFIX):
            raise ScenarioIdError(f"not a scenario id (must start with {_ID_PREFIX!r}): {shown!r}")
        body = scenario_id[len(_ID_PREFIX) :]
        try:
            packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            inflate = zlib.decompressobj()
            raw = inflate.decompress(packed, MAX_TOKEN_BYTES + 1)
        except (ValueError, binascii.Error, zlib.error) as err:
            raise ScenarioIdError(f"corrupt scenario id {shown!r}: {err}") from None
        if len(raw) > MAX_TOKEN_BYTES:
            raise ScenarioIdError(f"corrupt scenario id {shown!r}: it inflates to more than {MAX_TOKEN_BYTES} bytes")
        if not inflate.eof:
            raise ScenarioIdError(f"corrupt scenario id {shown!r}: truncated")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ScenarioIdError(f"corrupt scenario id {shown!r}: {err}") from None
        depth = _nesting(text)
        if depth > MAX_NESTING:
            raise ScenarioIdError(
                f"scenario id {shown!r}: its data is nested {depth} levels deep (at most {MAX_NESTING})"
            )
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ScenarioIdError(f"corrupt scenario id {shown!r}: {err}") from None
        try:
            return _scenario(data)
        except ScenarioIdError as err:
            raise ScenarioIdError(f"scenario id {shown!r}: {err}") from None


def _nesting(text: str) -> int:
    """Deepest nesting of arrays and objects in the JSON ``text`` (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:56]}...{text[-1]}"


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ScenarioIdError(f"{name} must be an integer in {low}..{high}, got {_show(value)}")
    return value


def _number(value: Any, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioIdError(f"{name} must be a finite number, got {_show(value)}")
    if positive and not value > 0:
        raise ScenarioIdError(f"{name} must be > 0, got {_show(value)}")
    if nonnegative and not value >= 0:
        raise ScenarioIdError(f"{name} must be >= 0, got {_show(value)}")
    return float(value)


def _choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ScenarioIdError(f"{name} must be one of {', '.join(options)}; got {_show(value)}")
    return value


def _list(value: Any, name: str, low: int, high: int) -> list[Any]:
    if not isinstance(value, list) or not low <= len(value) <= high:
        raise ScenarioIdError(f"{name} must be a list of {low} to {high} items, got {_show(value)}")
    return value


def _object(value: Any, name: str, known: set[str], required: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioIdError(f"{name} must be an object, got {_show(value)}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise ScenarioIdError(f"{name} has unknown field(s) {', '.join(map(repr, unknown))}")
    missing = sorted(required - set(value))
    if missing:
        raise ScenarioIdError(f"{name} lacks field(s) {', '.join(map(repr, missing))}")
    return value


def _group(value: Any, name: str) -> Hyper:
    data = _object(value, name, set(CONTINUOUS))
    spec = Hyper(**{key: _number(item, f"{name}.{key}", nonnegative=True) for key, item in data.items()})
    if spec.alpha > 1:  # torch accepts it (every root is then NaN); Lucid refuses it
        raise ScenarioIdError(f"{name}.alpha must be in [0, 1], got {_show(spec.alpha)}")
    return spec


def _param(value: Any, name: str, groups: int) -> ParamSpec:
    data = _object(value, name, {f.name for f in fields(ParamSpec)})
    checked: dict[str, Any] = {}
    if "shape" in data:
        dims = _list(data["shape"], f"{name}.shape", 0, _MAX_NDIM)
        shape = tuple(_int(d, f"{name}.shape", 0, MAX_ELEMENTS) for d in dims)
        if math.prod(shape) > MAX_ELEMENTS:
            raise ScenarioIdError(
                f"{name}.shape {list(shape)} has {math.prod(shape)} elements, more than {MAX_ELEMENTS}"
            )
        checked["shape"] = shape
    if "group" in data:
        checked["group"] = _int(data["group"], f"{name}.group", 0, groups - 1)
    if "kind" in data:
        checked["kind"] = _choice(data["kind"], f"{name}.kind", STREAM_KINDS)
    if "layout" in data:
        checked["layout"] = _choice(data["layout"], f"{name}.layout", LAYOUTS)
    if "nonfinite" in data:
        checked["nonfinite"] = _choice(data["nonfinite"], f"{name}.nonfinite", NONFINITE)
    if "special" in data:
        checked["special"] = _choice(data["special"], f"{name}.special", SPECIALS)
    for key in ("none_every", "first_step"):
        if key in data:
            checked[key] = _int(data[key], f"{name}.{key}", 0, MAX_STEPS)
    for key in ("scale", "param_scale"):
        if key in data:
            checked[key] = _number(data[key], f"{name}.{key}")
    return ParamSpec(**checked)


def _change(value: Any, name: str, groups: int, steps: int) -> HyperChange:
    data = _object(value, name, {f.name for f in fields(HyperChange)}, {"step", "name", "value"})
    scale = data.get("scale", False)
    if not isinstance(scale, bool):
        raise ScenarioIdError(f"{name}.scale must be true or false, got {_show(scale)}")
    group = data.get("group")
    return HyperChange(
        step=_int(data["step"], f"{name}.step", 0, steps - 1),
        name=_choice(data["name"], f"{name}.name", SCHEDULABLE),
        value=_number(data["value"], f"{name}.value", positive=scale, nonnegative=True),
        group=None if group is None else _int(group, f"{name}.group", 0, groups - 1),
        scale=scale,
    )


def _check_schedule(case: Case, groups: tuple[Hyper, ...], changes: tuple[HyperChange, ...]) -> None:
    """Refuse a schedule torch cannot follow, or that leaves the valid ranges (walked change by change)."""
    flags = case.flags
    current = [g.continuous() for g in groups]
    for change in changes:
        if change.name == "momentum" and not flags.momentum > 0:
            raise ScenarioIdError(f"schedule: momentum cannot change in case {case.id} (its momentum is off)")
        if change.name == "weight_decay" and not flags.weight_decay > 0:
            raise ScenarioIdError(f"schedule: weight_decay cannot change in case {case.id} (its weight decay is off)")
        for k in range(len(groups)) if change.group is None else (change.group,):
            old = current[k][change.name]
            new = old * change.value if change.scale else change.value
            if not math.isfinite(new) or (change.name == "alpha" and new > 1):
                raise ScenarioIdError(f"schedule: {change.name} of group {k} becomes {new!r} at step {change.step}")
            if change.name == "momentum" and old == 0 and new > 0:
                # torch made no momentum buffer while momentum was 0, and raises KeyError when it needs one.
                raise ScenarioIdError(
                    f"schedule: momentum of group {k} goes from 0 to {new!r} at step {change.step} (torch cannot)"
                )
            current[k][change.name] = new


def _scenario(data: Any) -> Scenario:
    top = {f.name for f in fields(Scenario)} - {"label"}
    data = _object(data, "the data", top, top - {"schedule"})
    if not isinstance(data["case"], str):
        raise ScenarioIdError(f"case must be a case id, got {_show(data['case'])}")
    try:
        case = case_by_id(data["case"]).id
    except KeyError as err:
        raise ScenarioIdError(f"case: {err.args[0]}") from None
    steps = _int(data["steps"], "steps", 1, MAX_STEPS)
    seed = _int(data["seed"], "seed", 0, 2**64 - 1)
    groups = tuple(_group(g, f"groups[{i}]") for i, g in enumerate(_list(data["groups"], "groups", 1, _MAX_GROUPS)))
    params = tuple(
        _param(p, f"params[{i}]", len(groups)) for i, p in enumerate(_list(data["params"], "params", 1, MAX_PARAMS))
    )
    elements = sum(math.prod(p.shape) for p in params)
    if elements * steps > MAX_ELEMENT_STEPS:
        raise ScenarioIdError(
            f"steps x elements = {steps} x {elements} gradient values, more than {MAX_ELEMENT_STEPS} (a replay's bound)"
        )
    lr_change = data["lr_change"]
    if lr_change is not None:
        pair = _list(lr_change, "lr_change", 2, 2)
        lr_change = (_int(pair[0], "lr_change step", 0, steps - 1), _number(pair[1], "lr_change factor", positive=True))
    schedule = tuple(
        _change(c, f"schedule[{i}]", len(groups), steps)
        for i, c in enumerate(_list(data.get("schedule", []), "schedule", 0, MAX_CHANGES))
    )
    listed = _list(data["checks"], "checks", 1, len(FAMILIES))
    checks = tuple(_choice(c, f"checks[{i}]", tuple(FAMILIES)) for i, c in enumerate(listed))
    if len(set(checks)) != len(checks):
        raise ScenarioIdError(f"checks repeat a family: {list(checks)}")
    scenario = Scenario(
        case=case,
        groups=groups,
        params=params,
        steps=steps,
        seed=seed,
        lr_change=lr_change,
        schedule=schedule,
        checks=checks,
    )
    _check_schedule(scenario.matrix_case, groups, scenario.changes)
    return scenario
