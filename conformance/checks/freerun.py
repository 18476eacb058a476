"""The ``freerun`` family: both sides through the whole stream without re-syncing.

The trajectories must stay within :data:`~conformance.freerun.FREE_RUN_BOUND`
of the accumulated scale (derived in :mod:`conformance.freerun`).
"""

from __future__ import annotations

import numpy as np

from conformance.checks.outcome import CheckOutcome, pair_options
from conformance.freerun import FREE_RUN_BOUND, run_free
from conformance.scenario import Scenario
from conformance.streams import materialize

__all__ = ["FREE_RUN_MIN_STEPS", "run"]

#: The shortest free run judged: the growth of an error with the step count
#: (linear for a bias, square-root for rounding noise) needs about 100 steps to show.
FREE_RUN_MIN_STEPS = 100


def run(scenario: Scenario, optimizer_class: type | None) -> list[CheckOutcome]:
    """Free-run ``scenario`` on both sides: the freerun check."""
    if scenario.steps < FREE_RUN_MIN_STEPS:
        raise ValueError(f"a free-running scenario needs >= {FREE_RUN_MIN_STEPS} steps, got {scenario.steps}")
    params0, grads = materialize(scenario)
    result = run_free(
        params0,
        scenario.hypers[0],
        grads,
        foreach=scenario.matrix_case.impl.foreach,
        optimizer_class=optimizer_class,
        **pair_options(scenario),
    )
    worst_step = int(np.argmax(result.normalised)) if result.normalised else 0
    return [
        CheckOutcome(
            "freerun",
            result.passed(FREE_RUN_BOUND),
            f"{scenario.steps} steps: worst {result.max_normalised:.3g} u*accumulated scale (step {worst_step}), "
            f"bound {FREE_RUN_BOUND:g}; final relative difference {result.relative[-1] if result.relative else 0:.3g}; "
            f"growth exponent {result.growth_exponent:.2f}; {result.nonfinite_mismatches} NaN/Inf positions differ "
            f"({result.nonfinite_excused} more where the dynamics had blown up past the bound)",
        )
    ]
