"""Systematic-error mutants (``mutants_bias.py``): each caught by the statistic meant for it, on the probes alone.

Each mutant runs through the probes ``python -m conformance check`` runs, on
one case where its bias exists (a momentum-buffer bias needs momentum, a
float64-only bias a float64 case); the test fails if it survives or if the
check named for it does not fail.  Every one of them stays within the
free-running max-error bound there (asserted), so only the sign family's
``sign`` / ``magnitude`` and the free run's ``growth`` see them.  The honest
variants must pass those statistics on every flag combination.
"""

from __future__ import annotations

import mutants
import mutants_bias
import pytest
from gating import foreach0_cases

from conformance.checks import run_checks
from conformance.matrix import case_by_id
from conformance.probes import probe_scenarios

_F32 = "float32-cpu-foreach0-cap0-tlr0"
_F64 = "float64-cpu-foreach0-cap0-tlr0"

#: mutant -> (the case where its bias shows, the checks that must catch it on the probes)
CATALOGUE: dict[type, tuple[str, tuple[str, ...]]] = {
    # Truncation: up for p < 0, down for p > 0; the signed count cancels, the magnitude one is -1.
    mutants_bias.TruncatedParam: (f"c0-m1-wd1-max0-{_F32}", ("magnitude", "growth")),
    mutants_bias.AwayFromZeroParam: (f"c1-m0-wd0-max1-{_F32}", ("magnitude", "growth")),
    # Only square_avg's own count sees it (the free run too, with momentum: measured -0.29 there).
    mutants_bias.SquareAvgRoundedUp: (f"c0-m0-wd0-max0-{_F32}", ("sign",)),
    # The parameter's counts cannot see it (lr * one ULP of the buffer is far below one ULP of p).
    mutants_bias.MomentumTruncated: (f"c1-m1-wd0-max0-{_F32}", ("magnitude", "growth")),
    mutants_bias.Float64Truncated: (f"c0-m0-wd1-max0-{_F64}", ("magnitude", "growth")),
    # lr * (1 + 2u): a step too long by 2u of the step, far below one ULP of a parameter of ~1;
    # the sign probe's small parameter (|p| ~ lr) and the free run's accumulation see it.
    mutants_bias.LrDrift: (f"c0-m1-wd1-max0-{_F32}", ("magnitude", "growth")),
    mutants.OneUlpBias: (f"c1-m1-wd1-max1-{_F32}", ("sign", "growth")),
}

#: The probes the statistics run on.
_LABELS = ("sign probe", "free run")


def _failed_checks(candidate: type | None, case_id: str, seed: int = 0) -> set[str]:
    failed: set[str] = set()
    for scenario in probe_scenarios(case_by_id(case_id), seed):
        if scenario.label in _LABELS:
            failed |= {o.check for o in run_checks(scenario, candidate) if not o.passed}
    return failed


def test_catalogue_lists_every_mutant() -> None:
    assert set(CATALOGUE) == {*mutants_bias.MUTANTS, mutants.OneUlpBias}


@pytest.mark.parametrize("mutant", list(CATALOGUE), ids=lambda m: m.__name__)
def test_bias_mutant_is_caught(mutant: type) -> None:
    where, expected = CATALOGUE[mutant]
    failed = _failed_checks(mutant, where)
    missing = set(expected) - failed
    assert not missing, f"{mutant.__name__} on {where}: {sorted(missing)} did not fail (failed: {sorted(failed)})"
    # Below every max-error bound: the free run's bound passes, so only the statistics see it.
    assert "freerun" not in failed


@pytest.mark.parametrize("variant", mutants.LEGITIMATE, ids=lambda m: m.__name__)
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
def test_honest_variants_pass_the_statistics(variant: type, dtype: str) -> None:
    """Every flag combination of one dtype (foreach=False), the sign probe and the free run.

    (Lucid runs both, and every other probe, on every case in ``test_matrix.py``.)
    """
    selected = foreach0_cases(f"-{dtype}-")
    failures = {c.id: _failed_checks(variant, c.id) for c in selected}
    assert not any(failures.values()), {k: sorted(v) for k, v in failures.items() if v}
