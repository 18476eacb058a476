r"""The ``freerun`` family: both sides through the whole stream without re-syncing.

``freerun``: the trajectories must stay within
:data:`~conformance.freerun.FREE_RUN_BOUND` of the accumulated scale (derived
in :mod:`conformance.freerun`).

``growth``: the systematic part of the free-running error.  Beside the two
sides runs the exact trajectory (the oracle's step on its own wide-type state,
:func:`~conformance.freerun.run_free` with ``exact=True``).  After ``N``
steps each side's error against it, ``e_i = p_N,i - exact_N,i``, is a sum of
``N`` steps' errors, propagated.  Honest rounding errors have no preferred
sign: their sum is a random walk, of spread about ``sqrt(N)`` steps' errors and
median 0.  A bias of ``b`` per step adds ``b N``: the error grows linearly, and
the fraction of elements on the bias's side, ``Phi(b sqrt(N) / sigma)``, tends
to 1 as ``N`` grows.  The check counts, over the elements the exact run moved,
``sign(e_i)`` in the three directions of :mod:`conformance.checks.sign`
(``signed``; ``magnitude``, against the sign of ``exact_N``; ``step``, against
``exact_N - p_0``), per side, and judges them as the sign test does:
``|S_candidate| <= |S_torch| + z / sqrt(n)``.

False-alarm rate: under H0 (the candidate's final errors have no preferred
sign in that direction, independently across elements: every element has its
own parameter and gradient draws) Hoeffding bounds each statistic's by ``2
exp(-z^2/2)`` = 3.0e-8 at z = 6, and the check's three by 9.1e-8 (union bound).
Only with hyperparameters exact in the dtype (:func:`~conformance.checks.sign.constants_exact`);
otherwise the constants' rounding is a shared bias of its own.

Power, measured: see docs/conformance.md (*The growth check*).
"""

from __future__ import annotations

import numpy as np

from conformance.candidate import Adapter
from conformance.checks.outcome import CheckOutcome, pair_options
from conformance.checks.sign import DirectionalSign, constants_exact, outcome, sign_counts
from conformance.freerun import FREE_RUN_BOUND, FreeRunResult, run_free
from conformance.oracle import oracle_precision_bits
from conformance.scenario import Scenario
from conformance.streams import materialize

__all__ = ["FREE_RUN_MIN_STEPS", "growth_statistics", "run"]

#: The shortest free run judged: the growth of an error with the step count
#: (linear for a bias, square-root for rounding noise) needs about 100 steps to show.
FREE_RUN_MIN_STEPS = 100


def growth_statistics(result: FreeRunResult) -> list[DirectionalSign]:
    """Return the sign statistics of both sides' final free-running errors against the exact trajectory.

    ``result`` must come from :func:`~conformance.freerun.run_free` with ``exact=True``.
    """
    sums: dict[str, list[int]] = {}
    for p0, ours, theirs, exact in zip(result.initial, result.final_candidate, result.final_torch, result.final_exact):
        if ours.shape != exact.shape or theirs.shape != exact.shape:
            continue
        with np.errstate(invalid="ignore"):
            both = np.isfinite(ours) & np.isfinite(theirs)  # the same elements on both sides
        mine, torch = sign_counts(ours[both], exact[both], p0[both]), sign_counts(theirs[both], exact[both], p0[both])
        for direction, (total, n) in mine.items():
            entry = sums.setdefault(direction, [0, 0, 0])
            entry[0] += total
            entry[1] += torch[direction][0]
            entry[2] += n
    return [DirectionalSign("param", d, c / n if n else 0.0, t / n if n else 0.0, n) for d, (c, t, n) in sums.items()]


def run(scenario: Scenario, candidate: Adapter) -> list[CheckOutcome]:
    """Free-run ``scenario`` on both sides and beside the exact trajectory: the freerun and growth checks."""
    if scenario.steps < FREE_RUN_MIN_STEPS:
        raise ValueError(f"a free-running scenario needs >= {FREE_RUN_MIN_STEPS} steps, got {scenario.steps}")
    params0, grads = materialize(scenario)
    wider = bool(params0) and oracle_precision_bits(params0[0].dtype) > 0
    # Boundary hyperparameters (lr = alpha = eps = 0) make inf - inf in the comparison's own
    # arithmetic (the exact trajectory, the error scales): NumPy's warnings there say nothing of
    # the candidate, and under warnings-as-errors they would fail it.
    with np.errstate(all="ignore"):
        result = run_free(
            params0,
            scenario.hypers[0],
            grads,
            foreach=scenario.matrix_case.impl.foreach,
            candidate=candidate,
            exact=wider,
            **pair_options(scenario),
        )
    worst_step = int(np.argmax(result.normalised)) if result.normalised else 0
    outcomes = [
        CheckOutcome(
            "freerun",
            result.passed(FREE_RUN_BOUND),
            f"{scenario.steps} steps: worst {result.max_normalised:.3g} u*accumulated scale (step {worst_step}), "
            f"bound {FREE_RUN_BOUND:g}; final relative difference {result.relative[-1] if result.relative else 0:.3g}; "
            f"growth exponent {result.growth_exponent:.2f}; {result.nonfinite_mismatches} NaN/Inf positions differ "
            f"({result.nonfinite_excused} more where the bound no longer pinned them)",
        )
    ]
    if not wider:
        return [*outcomes, CheckOutcome("growth", True, "not judged: no oracle wider than the dtype")]
    stats = [s for s in growth_statistics(result) if s.judged] if constants_exact(scenario) else []
    what = f"each side's error against the exact trajectory after {scenario.steps} steps"
    return [*outcomes, outcome("growth", stats, what)]
