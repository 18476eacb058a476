"""Hypothesis strategies that draw conformance scenarios.

A drawn :class:`~conformance.scenario.Scenario` is plain data; its arrays
follow from its seed (:func:`conformance.streams.materialize`), so Hypothesis
shrinks the description (fewer steps and parameters, simpler streams, smaller
shapes) and every example replays from :meth:`Scenario.to_id`.

What is drawn: 1 to :data:`~conformance.matrix.MAX_GROUPS` param groups, each
with its own ``lr``, ``alpha``, ``eps``, ``momentum`` and ``weight_decay`` over
the whole of :data:`~conformance.rmsprop.HYPER_RANGES`, the boundary values of
:data:`~conformance.rmsprop.HYPER_BOUNDARIES` a quarter of the time; one parameter per group and up to
:data:`MAX_EXTRA_PARAMS` more, of shapes from 0-d and empty to 2-d, some of them
sharing a shape, and in one scenario in :data:`LARGE_ONE_IN` a large one
(:func:`large_shapes`); per parameter a stream kind (zeros, constants, sign
flips, heavy tails, twelve decades in one tensor, ...), a gradient scale from
1e-12 to 1e12, a memory layout (contiguous, transposed, strided), NaN and Inf
injected, exact zeros, subnormals and zero steps inside the stream
(:data:`~conformance.streams.SPECIALS`), ``grad = None`` on some steps and a
late first gradient; and up to :data:`MAX_DRAWN_CHANGES` changes of any
hyperparameter mid-run, per group or all groups (:func:`schedules`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from hypothesis import strategies as st

from conformance.matrix import MAX_GROUPS, Case
from conformance.rmsprop import HYPER_BOUNDARIES, HYPER_LOG_FLOORS, HYPER_RANGES, Hyper
from conformance.scenario import SCHEDULABLE, HyperChange, ParamSpec, Scenario
from conformance.streams import LAYOUTS, NONFINITE, SPECIALS, STREAM_KINDS

__all__ = [
    "MAX_DRAWN_CHANGES",
    "group_specs",
    "hyper_value",
    "large_shapes",
    "param_specs",
    "scenarios",
    "schedules",
    "shapes",
]

#: Most hyperparameter changes a drawn schedule has.
MAX_DRAWN_CHANGES = 3


def hyper_value(name: str) -> st.SearchStrategy[float]:
    """Draw hyperparameter ``name`` over its whole range in :data:`~conformance.rmsprop.HYPER_RANGES`.

    One draw in four is one of its :data:`~conformance.rmsprop.HYPER_BOUNDARIES` (zero, alpha at both
    ends and at 1/2), so the edges are hit with real probability, not only
    when a continuous draw happens to land there; the rest is log-uniform from
    :data:`~conformance.rmsprop.HYPER_LOG_FLOORS` (``"log"`` spacing) or uniform over the range,
    rounded to the nearest float32 value inside it.  A uniform draw would
    otherwise take Hypothesis's favourite edges, such as ``alpha = 3e-274``:
    0 in a float32 step that converts the Python float, not 0 in a variant that
    keeps it in float64, a difference of the hyperparameter, not of the step.
    (Values exact in float32 are exact in every dtype, which the sign statistics
    also need; the boundary values are drawn as they are.)
    """
    low, high, spacing = HYPER_RANGES[name]
    if spacing == "log":
        inner = st.floats(math.log10(HYPER_LOG_FLOORS[name]), math.log10(high)).map(lambda e: min(float(10.0**e), high))
    else:
        inner = st.floats(low, high).map(lambda x: min(max(float(np.float32(x)), low), high))
    return st.one_of(st.sampled_from(HYPER_BOUNDARIES[name]), inner, inner, inner)


def group_specs() -> st.SearchStrategy[Hyper]:
    """Draw one param group's continuous hyperparameters."""
    return st.builds(Hyper, **{name: hyper_value(name) for name in HYPER_RANGES})


@st.composite
def schedules(draw: st.DrawFn, case: Case, groups: tuple[Hyper, ...], steps: int) -> tuple[HyperChange, ...]:
    """Draw up to :data:`MAX_DRAWN_CHANGES` hyperparameter changes, each before one of steps 1..steps-1.

    Any :data:`~conformance.scenario.SCHEDULABLE` hyperparameter the case uses
    (momentum and weight decay only where its flag is on), of one group or all,
    set to a value drawn as the groups' are, or (lr only) multiplied by a
    factor from 0.1 to 10.  Momentum that is (or becomes) 0 stays 0: torch
    creates no momentum buffer then and cannot start one later.
    """
    flags = case.flags
    names = [n for n in SCHEDULABLE if not (n == "momentum" and flags.momentum == 0)]
    names = [n for n in names if not (n == "weight_decay" and flags.weight_decay == 0)]
    drawn = []
    for _ in range(draw(st.integers(0, MAX_DRAWN_CHANGES)) if steps > 1 else 0):
        step = draw(st.integers(1, steps - 1))
        name = draw(st.sampled_from(names))
        group = draw(st.none() | st.integers(0, len(groups) - 1))
        if name == "lr" and draw(st.booleans()):
            drawn.append(HyperChange(step, name, draw(st.floats(-1, 1).map(lambda e: float(10.0**e))), group, True))
        else:
            drawn.append(HyperChange(step, name, draw(hyper_value(name)), group))
    momentum = [g.momentum for g in groups]
    changes = []
    for c in sorted(drawn, key=lambda c: c.step):
        targets = range(len(groups)) if c.group is None else (c.group,)
        if c.name == "momentum":
            if any(momentum[k] == 0 for k in targets):
                c = HyperChange(c.step, c.name, 0.0, c.group)
            for k in targets:
                momentum[k] = c.value
        changes.append(c)
    return tuple(changes)


def shapes(max_side: int = 48) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes from 0-d and empty to 2-d (odd sizes included, so no vector width divides them)."""
    side = st.integers(1, max_side)
    return st.one_of(
        st.just(()),
        st.sampled_from([(0,), (3, 0)]),
        st.tuples(side),
        st.tuples(st.integers(1, 8), side),
    )


def large_shapes() -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes of about 66000 to 140000 elements, 1-d or 2-d (3, 7 or 9 rows), every side odd.

    Past Lucid's block sizes (65536 float32, 32768 float64 elements) and its
    threading threshold (32768 elements), often past 1e5, where other
    implementations chunk; odd, so every blocked or vectorised loop ends in a
    partial block.
    """
    odd = st.integers(66001 // 2, 140001 // 2).map(lambda n: 2 * n + 1)
    rows = st.sampled_from([3, 7, 9])
    return st.one_of(st.tuples(odd), st.tuples(rows, odd).map(lambda rn: (rn[0], rn[1] // rn[0] | 1)))


#: A parameter's first step with a gradient: mostly 0, sometimes late (torch creates the state then).
_FIRST_STEPS = (0, 0, 0, 0, 1, 2, 3, 5, 8)


def param_specs(n_groups: int, max_side: int = 48) -> st.SearchStrategy[ParamSpec]:
    """Draw one parameter's shape, group, stream, layout, gaps, special values and first gradient."""
    return st.builds(
        ParamSpec,
        shape=shapes(max_side),
        group=st.integers(0, n_groups - 1),
        kind=st.sampled_from(STREAM_KINDS),
        scale=st.floats(-12, 12).map(lambda e: float(10.0**e)),
        layout=st.sampled_from(LAYOUTS),
        none_every=st.sampled_from([0, 0, 2, 3]),
        nonfinite=st.sampled_from(NONFINITE[:1] * 3 + NONFINITE[1:]),
        param_scale=st.sampled_from([1.0, 1e-3, 1e3]),
        special=st.sampled_from(SPECIALS[:1] * 3 + SPECIALS[1:]),
        first_step=st.sampled_from(_FIRST_STEPS),
    )


#: Most parameters beyond one per group that a drawn scenario has.
MAX_EXTRA_PARAMS = 12
#: One drawn scenario in this many (on average) has a large parameter (:func:`large_shapes`).
LARGE_ONE_IN = 8


@st.composite
def _param_list(draw: st.DrawFn, n_groups: int, steps: int, max_side: int) -> tuple[ParamSpec, ...]:
    """Every group's first parameter, up to :data:`MAX_EXTRA_PARAMS` more, some of one shape, maybe a large one.

    A parameter takes an earlier one's shape one time in four (state keyed by
    shape, or buffers swapped between same-shaped parameters, then show in
    lockstep).  The large parameter gets its first gradient within the last
    two steps, so it costs one or two steps.
    """
    n_params = n_groups + draw(st.integers(0, MAX_EXTRA_PARAMS))
    params = [draw(param_specs(n_groups, max_side)) for _ in range(n_params)]
    # Every group gets at least one parameter.
    params = [replace(p, group=i) if i < n_groups else p for i, p in enumerate(params)]
    for i in range(1, n_params):
        if draw(st.integers(0, 3)) == 3:  # shrinks towards distinct shapes
            params[i] = replace(params[i], shape=params[draw(st.integers(0, i - 1))].shape)
    if draw(st.integers(1, LARGE_ONE_IN)) == LARGE_ONE_IN:  # shrinks towards no large parameter
        large = draw(param_specs(n_groups, max_side))
        first = draw(st.integers(max(0, steps - 2), steps - 1))
        params.insert(draw(st.integers(0, n_params)), replace(large, shape=draw(large_shapes()), first_step=first))
    return tuple(params)


@st.composite
def scenarios(
    draw: st.DrawFn,
    case: Case,
    *,
    min_steps: int = 2,
    max_steps: int = 12,
    max_side: int = 48,
    checks: tuple[str, ...] = ("lockstep", "state_dict"),
) -> Scenario:
    """Draw a scenario of ``case``: groups, parameters, streams, steps and a schedule of changes.

    ``checks`` names the check families the scenario runs
    (:data:`conformance.checks.FAMILIES`).
    """
    n_groups = draw(st.integers(1, MAX_GROUPS))
    groups = tuple(draw(group_specs()) for _ in range(n_groups))
    steps = draw(st.integers(min_steps, max_steps))
    params = draw(_param_list(n_groups, steps, max_side))
    schedule = draw(schedules(case, groups, steps))
    seed = draw(st.integers(0, 2**32 - 1))
    return Scenario(
        case=case.id,
        groups=groups,
        params=params,
        steps=steps,
        seed=seed,
        schedule=schedule,
        checks=checks,
    )
