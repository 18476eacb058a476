"""The command line (``python -m conformance check``), replay, and the CUDA skip / require switch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conformance.candidate import resolve
from conformance.matrix import cases

ROOT = Path(__file__).resolve().parents[2]
CASE = "c0-m0-wd0-max0-float32-cpu-foreach0"
CUDA_CASE = cases("cuda")[0].id


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_honest_lucid_exits_zero() -> None:
    done = _run("-m", "conformance", "check", "--cases", CASE, "--budget", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    drawn = re.search(r"all \d+ judged checks passed on \d+ probe scenario\(s\) and (\d+) drawn scenario", done.stdout)
    assert drawn and int(drawn.group(1)) > 0, done.stdout


def test_mutant_exits_nonzero_naming_the_check_and_the_replay_replays_it() -> None:
    mutant = "tests.conformance.mutants:EpsInsideRoot"
    done = _run("-m", "conformance", "check", "--optimizer", mutant, "--cases", CASE, "--budget", "10", "-v")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL lockstep" in done.stdout  # -v: every failing scenario, check by check
    assert re.search(r"candidate [\d.e+-]+ ULP from exact, torch [\d.e+-]+", done.stdout)  # the oracle's verdict
    assert "causes (configurations): eps inside the square root (1)" in done.stdout  # the verdict names the cause
    assert "diagnosis: the candidate computes torch's RMSprop with eps inside the square root (" in done.stdout
    replay = re.search(r"first replay: python -m conformance (check --replay \S+ --optimizer \S+)", done.stdout)
    assert replay, done.stdout
    again = _run("-m", "conformance", *replay.group(1).split())
    assert again.returncode == 1, again.stdout + again.stderr
    assert "FAIL lockstep" in again.stdout
    # The same scenario against honest Lucid passes: the replay is the scenario, not the verdict.
    honest = _run("-m", "conformance", *replay.group(1).split()[:3])
    assert honest.returncode == 0, honest.stdout + honest.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizer", "no_such_module:X"], "cannot import candidate module 'no_such_module'"),
        (["--optimizer", "lucid.optim"], "package.module:attr"),
        (["--replay", "v1-garbage"], "corrupt scenario id 'v1-garbage'"),
    ],
)
def test_bad_usage_exits_two_with_the_reason(args: list[str], message: str) -> None:
    done = _run("-m", "conformance", "check", *args)
    assert done.returncode == 2 and message in done.stderr, done.stdout + done.stderr


def test_load_candidate_finds_mutants_by_path() -> None:
    import mutants

    assert resolve("mutants:OneUlpBias").optimizer_class is mutants.OneUlpBias


def _pytest_cuda_case(*extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    node = f"tests/conformance/test_matrix.py::test_probes[{CUDA_CASE}]"
    return _run("-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q", "-rs", node, *extra, env=env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the cuda cases run (checked below)")
def test_cuda_cases_skip_with_the_reason_without_a_gpu() -> None:
    done = _pytest_cuda_case(env={"LUCID_REQUIRE_CUDA": ""})
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout and "no CUDA device" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: nothing to require")
@pytest.mark.parametrize("switch", ["option", "env"])
def test_requiring_cuda_turns_the_skip_into_a_failure(switch: str) -> None:
    if switch == "option":
        done = _pytest_cuda_case("--require-cuda", env={"LUCID_REQUIRE_CUDA": ""})
    else:
        done = _pytest_cuda_case(env={"LUCID_REQUIRE_CUDA": "1"})
    assert done.returncode == 1, done.stdout
    assert "1 failed" in done.stdout and "CUDA is required" in done.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU: the skip path is checked above")
def test_cuda_cases_run_on_a_gpu() -> None:
    done = _pytest_cuda_case("--require-cuda")
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout
