"""Hypothesis strategies that draw conformance scenarios.

A drawn :class:`~conformance.scenario.Scenario` is plain data; its arrays
follow from its seed (:func:`conformance.streams.materialize`), so Hypothesis
shrinks the description (fewer steps and parameters, simpler streams, smaller
shapes) and every example replays from :meth:`Scenario.to_id`.

What is drawn: 1 to :data:`~conformance.matrix.MAX_GROUPS` param groups, each
with its own ``lr``, ``alpha``, ``eps``, ``momentum`` and ``weight_decay`` from
:data:`~conformance.matrix.HYPER_RANGES`; 1 to 4 parameters of shapes from
0-d and empty to 2-d; per parameter a stream kind (zeros, constants, sign
flips, heavy tails, twelve decades in one tensor, ...), a gradient scale from
1e-12 to 1e12, a memory layout (contiguous, transposed, strided), NaN and Inf
injected, ``grad = None`` on some steps; and a learning rate change mid-stream.
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from conformance.matrix import HYPER_RANGES, MAX_GROUPS, Case
from conformance.scenario import GroupSpec, ParamSpec, Scenario
from conformance.streams import LAYOUTS, NONFINITE, STREAM_KINDS

__all__ = ["group_specs", "hyper_value", "param_specs", "scenarios", "shapes"]


def hyper_value(name: str) -> st.SearchStrategy[float]:
    """Draw hyperparameter ``name`` from its range in :data:`HYPER_RANGES`."""
    low, high, spacing = HYPER_RANGES[name]
    if spacing == "log":
        return st.floats(math.log10(low), math.log10(high)).map(lambda e: float(10.0**e))
    return st.floats(low, high)


def group_specs() -> st.SearchStrategy[GroupSpec]:
    """Draw one param group's continuous hyperparameters."""
    return st.builds(GroupSpec, **{name: hyper_value(name) for name in HYPER_RANGES})


def shapes(max_side: int = 48) -> st.SearchStrategy[tuple[int, ...]]:
    """Shapes from 0-d and empty to 2-d (odd sizes included, so no vector width divides them)."""
    side = st.integers(1, max_side)
    return st.one_of(
        st.just(()),
        st.sampled_from([(0,), (3, 0)]),
        st.tuples(side),
        st.tuples(st.integers(1, 8), side),
    )


def param_specs(n_groups: int, max_side: int = 48) -> st.SearchStrategy[ParamSpec]:
    """Draw one parameter's shape, group, stream, layout and gaps."""
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
    )


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
    """Draw a scenario of ``case``: groups, parameters, streams, steps and an lr change.

    ``checks`` names the check families the scenario runs
    (:data:`conformance.checks.FAMILIES`).
    """
    n_groups = draw(st.integers(1, MAX_GROUPS))
    groups = tuple(draw(group_specs()) for _ in range(n_groups))
    n_params = draw(st.integers(n_groups, n_groups + 2))
    params = [draw(param_specs(n_groups, max_side)) for _ in range(n_params)]
    # Every group gets at least one parameter.
    params = [ParamSpec(**{**vars(p), "group": i}) if i < n_groups else p for i, p in enumerate(params)]
    steps = draw(st.integers(min_steps, max_steps))
    lr_change = draw(st.none() | st.tuples(st.integers(1, steps - 1), st.floats(-1, 1).map(lambda e: float(10.0**e))))
    seed = draw(st.integers(0, 2**32 - 1))
    return Scenario(
        case=case.id,
        groups=groups,
        params=tuple(params),
        steps=steps,
        seed=seed,
        lr_change=lr_change,
        checks=checks,
    )
