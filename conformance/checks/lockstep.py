"""The ``lockstep`` family: re-sync to torch before every step, compare one step at a time.

Gives three checks: ``lockstep`` (every quantity within
:data:`~conformance.compare.LOCKSTEP_BOUND`, derived in :mod:`conformance.compare`),
``nonfinite`` (NaN/+Inf/-Inf at the same positions) and ``dtype`` (parameter
and buffers keep torch's dtype).
"""

from __future__ import annotations

from conformance.candidate import Adapter
from conformance.checks.outcome import CheckOutcome, pair_options
from conformance.compare import LOCKSTEP_BOUND
from conformance.lockstep import run_lockstep
from conformance.scenario import Scenario
from conformance.streams import materialize

__all__ = ["run"]


def run(scenario: Scenario, candidate: Adapter) -> list[CheckOutcome]:
    """Run ``scenario`` in lockstep against ``candidate``: the lockstep, nonfinite and dtype checks."""
    params0, grads = materialize(scenario)
    case = scenario.matrix_case
    result = run_lockstep(
        params0,
        scenario.hypers[0],
        grads,
        foreach=case.impl.foreach,
        candidate=candidate,
        **pair_options(scenario),
    )
    worst = ", ".join(f"{k} {v:.3g} (step {result.worst_step[k]})" for k, v in sorted(result.worst.items()))
    ok = result.max_error <= LOCKSTEP_BOUND
    found = result.verdict(scenario.hypers[0]) if not ok else None
    return [
        CheckOutcome(
            "lockstep",
            ok,
            f"worst u*scale errors {worst or 'none compared'}; bound {LOCKSTEP_BOUND:g}; "
            f"bit-identical {result.bitwise_fraction:.2%} of {result.elements} parameter element-steps",
            "" if found is None else str(found),
        ),
        CheckOutcome(
            "nonfinite", not result.nonfinite_mismatches, f"{result.nonfinite_mismatches} NaN/Inf positions differ"
        ),
        CheckOutcome("dtype", not result.dtype_errors, "; ".join(result.dtype_errors) or "dtypes preserved"),
    ]
