"""Scenarios on which the seeded search once failed an honest variant; each passes now.

Each was a flaw of the harness, not of the variant (the oracle put the variant
nearer the exact step than torch), mended in the error scales of
:mod:`conformance.compare`; the comments say which.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mutants
import numpy as np
import pytest

from conformance.checks import run_checks
from conformance.rmsprop import Hyper
from conformance.scenario import ParamSpec, Scenario

ROOT = Path(__file__).resolve().parents[2]

_OFF = Hyper(lr=0.0, alpha=0.0, eps=0.0, momentum=0.0, weight_decay=0.0)

FOUND = {
    # Centered, alpha = 1e-6: lerp makes a small grad_avg out of a large old one, so the error of
    # grad_avg^2 is at the scale of the old one (S_ga), not of grad_avg; the conditioning counted
    # |v| / var and the bound was 18.7 units short (Unfused, search seed 5).
    "lerp_cancels": Scenario(
        case="c1-m0-wd1-max1-complex128-cpu-foreach0-cap0-tlr0",
        groups=(_OFF, Hyper(lr=1.0, alpha=1e-6, eps=0.0, momentum=0.0, weight_decay=0.0)),
        params=(ParamSpec(shape=()), ParamSpec(shape=(3,), group=1)),
        steps=2,
        checks=("lockstep",),
    ),
    # A subnormal gradient squared: a subnormal mean square with few significant bits, whose root
    # torch takes in float32 (5e4 ULP from exact, a float64 variant 0.25); the mean square's error
    # scale had no underflow term (WiderIntermediates, search seed 1).
    "subnormal_square": Scenario(
        case="c0-m0-wd0-max0-float32-cpu-foreach0-cap0-tlr0",
        groups=(_OFF, Hyper(lr=1.0, alpha=0.0, eps=0.0, momentum=0.0, weight_decay=0.0)),
        params=(
            ParamSpec(shape=()),
            ParamSpec(shape=(), group=1),
            ParamSpec(shape=()),
            ParamSpec(shape=(1, 8), group=1, special="subnormal"),
        ),
        steps=2,
        checks=("lockstep", "state_dict"),
    ),
    # A tiny parameter under weight decay, eps = 0: the decayed gradient wd * theta (1.4e-42) is
    # subnormal in float32, so torch rounds it to within eta, not u * G, and the update divides
    # that error by a tiny avg (torch 3.5e4 ULP from exact, a float64 variant 0.17); the update's
    # error scale counted u * G only (WiderIntermediates, search seed 15).
    "subnormal_decayed_gradient": Scenario(
        case="c1-m0-wd1-max1-complex64-cpu-foreach0-cap0-tlr0",
        groups=(Hyper(lr=1.0, alpha=0.999999, eps=0.0, momentum=0.0, weight_decay=8.740592603976381e-06),),
        params=(ParamSpec(shape=(), param_scale=0.001, special="all"),),
        steps=11,
        seed=1760015,
        checks=("lockstep",),
    ),
    # Centered, alpha = 0, weight decay on a parameter of 1.7e22: the decayed gradient squared
    # overflows float32, so v = inf, and v - grad_avg^2 is inf with torch's fused multiply-add but
    # inf - inf = NaN where grad_avg^2 is rounded (and overflows) first; the exact variance is 0,
    # so neither is the formula's (Unfused, a state handed to torch, search seed 14).
    "overflowed_mean_square": Scenario(
        case="c1-m0-wd1-max0-float32-cpu-foreach0-cap0-tlr0",
        groups=(Hyper(lr=1.0, alpha=0.0, eps=1e-08, momentum=0.0, weight_decay=0.1), _OFF, _OFF),
        params=(ParamSpec(shape=(), none_every=3), ParamSpec(shape=(), group=1), ParamSpec(shape=(), group=2)),
        steps=8,
        checks=("lockstep", "state_dict"),
    ),
    # alpha = 1 keeps v at 0, so avg = eps = 1e-12 and the update of a parameter of -1.8e34 under
    # weight decay is 1.8e40: beyond float32, inf in torch's buffer and parameter, while a float64
    # evaluation keeps it and ends at a parameter of 2.1e38, finite in float32 and nearer the exact
    # step (WiderIntermediates, search seed 11).
    "update_beyond_range": Scenario(
        case="c0-m1-wd1-max1-float32-cpu-foreach1-cap0-tlr0",
        groups=(
            _OFF,
            Hyper(lr=0.011648448858523917, alpha=1.0, eps=1e-12, momentum=0.8130290508270264, weight_decay=1e-06),
            Hyper(lr=0.0, alpha=0.0, eps=0.0, momentum=0.0, weight_decay=1e-06),
        ),
        params=(ParamSpec(shape=()), ParamSpec(shape=(1,), group=1), ParamSpec(shape=(), group=2)),
        steps=9,
        checks=("lockstep", "state_dict"),
    ),
}


@pytest.mark.parametrize("variant", mutants.LEGITIMATE, ids=lambda m: m.__name__)
@pytest.mark.parametrize("name", list(FOUND))
def test_found_scenario_passes_the_honest_variants(name: str, variant: type) -> None:
    failed = [str(o) for o in run_checks(FOUND[name], variant) if not o.passed]
    assert not failed, "\n".join(failed)


def _benchmark(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m benchmarks.false_alarms`` from the repository root (benchmarks/ is not installed)."""
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.false_alarms", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_false_alarm_benchmark_runs_and_counts() -> None:
    done = _benchmark("--seeds", "1", "--budget", "1", "--no-probes", "--variants", "mutants:Unfused")
    out = done.stdout
    assert done.returncode == 0 and "false alarms (or nothing drawn): 0 of 1 runs" in out, out + done.stderr
    drawn = int(out.split(" drawn")[0].split()[-1])
    assert drawn > 0, out


@pytest.mark.parametrize("bad", [["--seeds", "0"], ["--budget", "0"], ["--first-seed", "-1"]])
def test_the_false_alarm_benchmark_refuses_bad_arguments(bad: list[str]) -> None:
    done = _benchmark(*bad)
    assert done.returncode == 2 and f"{bad[0]} must be" in done.stderr, done.stderr


class _ClampsSquareAvg(mutants.Unfused):
    """An overflow guard: the mean square clamped to the dtype's largest number (torch's becomes inf)."""

    def _update_real(self, data, g, state, group):
        super()._update_real(data, g, state, group)
        v = state["square_avg"]
        np.minimum(v, np.finfo(v.dtype).max, out=v)


#: Wrong implementations each scenario must still catch: the excuse each mend added stays narrow.
STILL_CAUGHT = {
    "lerp_cancels": (mutants.GradAvgWrongWeight,),
    "subnormal_square": (mutants.AlphaSwapped,),
    "subnormal_decayed_gradient": (mutants.WeightDecayIgnored, mutants.DecoupledWeightDecay, mutants.MaximizeIgnored),
    "overflowed_mean_square": (mutants.WeightDecayIgnored, mutants.GradAvgWrongWeight, _ClampsSquareAvg),
    "update_beyond_range": (mutants.WeightDecayIgnored, mutants.MaximizeIgnored),
}


@pytest.mark.parametrize(("name", "wrong"), [(n, w) for n, ws in STILL_CAUGHT.items() for w in ws])
def test_found_scenario_still_catches_wrong_implementations(name: str, wrong: type) -> None:
    assert any(not o.passed for o in run_checks(FOUND[name], wrong)), f"{wrong.__name__} passed {name}"


def test_the_false_alarm_benchmark_reports_a_wrong_implementation() -> None:
    done = _benchmark("--seeds", "1", "--budget", "2", "--no-probes", "--variants", "mutants:AlphaSwapped")
    out = done.stdout
    assert done.returncode == 1 and "FALSE ALARM" in out, out + done.stderr
    assert "replay: python -m conformance check --replay" in out, out
