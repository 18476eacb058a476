"""``check --jobs``: worker processes give the probes' verdicts of one process; a dying worker is exit 3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mutants

from conformance.harness import check_candidate
from conformance.matrix import cases

ROOT = Path(__file__).resolve().parents[2]
SELECTED = [c for c in cases("cpu") if c.id.startswith(("c0-m0-wd0-max0-float32", "c1-m1-wd1-max1-float64"))]


def _verdicts(report) -> list[tuple[str, str, str, bool]]:
    return [(r.scenario.case, r.scenario.label, o.check, o.passed) for r in report.results for o in r.outcomes]


def test_two_jobs_give_the_verdicts_of_one() -> None:
    reports = {}
    for candidate in (mutants.EpsInsideRoot, "lucid.optim:RMSprop"):
        serial = check_candidate(candidate, selected=SELECTED, jobs=1)
        pooled = check_candidate(candidate, selected=SELECTED, jobs=2)
        assert _verdicts(pooled) == _verdicts(serial)
        assert pooled.probes == serial.probes == len(serial.results)
        reports[candidate] = pooled
    assert reports["lucid.optim:RMSprop"].ok
    assert not reports[mutants.EpsInsideRoot].ok and "lockstep" in reports[mutants.EpsInsideRoot].caught_by


def test_a_worker_that_dies_is_exit_3_naming_the_case() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "check",
            "--optimizer",
            "tests.conformance.crashing:DiesInStep",
            "--cases",
            "c0-m0-wd0-max0-float32",
            "--jobs",
            "2",
            "--budget",
            "0",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "the candidate could not run" in done.stderr and "c0-m0-wd0-max0-float32" in done.stderr
    assert "DISAGREE" not in done.stdout  # a crash is not a numerical verdict
