"""The candidate protocol: adapters chosen from ``--optimizer``, one setting for CLI and pytest, exit codes.

torch's own RMSprop runs through the harness with no shim and agrees bit for
bit (its for-loop path against torch's foreach path, and against itself); a
candidate that raises is "could not run" (exit 3) with the step and every
parameter named, never a numerical verdict; one that lacks a method is exit 3
too, a malformed path exit 2; an optional feature a candidate lacks lists its
cases as not supported (exit 0, ``--strict`` exit 1).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance.candidate import (
    CANDIDATE_SETTING,
    CandidateError,
    CandidateSpecError,
    chosen_candidate,
    distribution_version,
    resolve,
)
from conformance.checks import run_checks
from conformance.lockstep import run_lockstep
from conformance.matrix import case_by_id
from conformance.probes import probe_scenarios
from conformance.rmsprop import Hyper
from conformance.streams import gradient_stream

ROOT = Path(__file__).resolve().parents[2]


def _check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conformance", "check", "--budget", "0", "--jobs", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_torch_against_itself_is_bit_identical(foreach: bool, dtype: type) -> None:
    hyper = Hyper(lr=1e-2, alpha=0.9, momentum=0.9, centered=True, weight_decay=1e-2)
    params0 = [np.random.default_rng(3).standard_normal((5, 7)).astype(dtype)]
    grads = gradient_stream("normal", 1.0, (5, 7), dtype, steps=20, seed=4)
    result = run_lockstep(params0, hyper, ([g] for g in grads), foreach=foreach, candidate="torch.optim:RMSprop")
    assert result.elements == 20 * 35 and result.bitwise_fraction == 1.0, result.worst


def test_torch_passes_every_family_on_the_probes() -> None:
    case = case_by_id("c1-m1-wd1-max1-float64-cpu-foreach1-cap0-tlr0")
    outcomes = [o for s in probe_scenarios(case) for o in run_checks(s, "torch.optim:RMSprop")]
    assert {o.check for o in outcomes} >= {"lockstep", "freerun", "sign", "candidate_roundtrip", "contract_closure"}
    assert all(o.passed and not o.unsupported for o in outcomes), [str(o) for o in outcomes if not o.passed]


def test_adapters_are_chosen_from_what_the_path_names() -> None:
    torch_adapter, lucid_adapter = resolve("torch.optim:RMSprop"), resolve("lucid.optim:RMSprop")
    assert torch_adapter.name == "torch.optim.RMSprop" and torch_adapter.version.startswith("2.13.0")
    assert lucid_adapter.name == "lucid.optim.RMSprop" and lucid_adapter.version == "0.1.0"
    assert resolve(torch_adapter) is torch_adapter
    assert resolve("mutants:EpsInsideRoot").optimizer_class.__name__ == "EpsInsideRoot"


def test_a_version_comes_from_package_metadata_or_is_unknown() -> None:
    assert distribution_version("numpy") == np.__version__
    assert distribution_version("crashing") == "unknown"  # a test module: no distribution, no crash


@pytest.mark.parametrize(
    ("spec", "error", "text"),
    [
        ("lucid.optim", CandidateSpecError, "'package.module:attr'"),
        ("no_such_module:X", CandidateSpecError, "cannot import candidate module 'no_such_module'"),
        ("lucid.optim:NoSuchClass", CandidateSpecError, "has no attribute 'NoSuchClass'"),
        ("math:pi", CandidateSpecError, "is a float"),
        ("crashing:NoZeroGrad", CandidateError, "no zero_grad"),
    ],
)
def test_a_bad_path_or_a_class_without_the_interface_is_refused_by_name(spec: str, error: type, text: str) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(")) as caught:
        resolve(spec)
    assert caught.type is error  # a usage error is not "could not run", and the other way round


def test_a_candidate_that_raises_names_the_step_and_every_parameter() -> None:
    case = case_by_id("c0-m0-wd0-max0-float32-cpu-foreach0-cap0-tlr0")
    zero_d = [s for s in probe_scenarios(case) if any(len(p.shape) == 0 for p in s.params)]
    assert zero_d, "no probe has a 0-d parameter"
    outcomes = run_checks(zero_d[0], "crashing:RaisesOnZeroD")
    raised = [o for o in outcomes if o.raised]
    assert raised and all(not o.passed for o in raised)
    assert "IndexError at step 0" in raised[0].detail and "float32[]" in raised[0].detail, raised[0].detail
    assert str(raised[0]).startswith("ERROR")


def test_a_raising_candidate_exits_3_and_a_bad_path_exits_2() -> None:
    crashed = _check(
        "--optimizer", "tests.conformance.crashing:RaisesOnZeroD", "--cases", "c0-m0-wd0-max0-float32-cpu-foreach0"
    )
    assert crashed.returncode == 3, crashed.stdout + crashed.stderr
    assert "could not run" in crashed.stdout and "DISAGREE" not in crashed.stdout
    missing = _check(
        "--optimizer", "tests.conformance.crashing:NoZeroGrad", "--cases", "c0-m0-wd0-max0-float32-cpu-foreach0"
    )
    assert missing.returncode == 3 and "no zero_grad" in missing.stderr, missing.stderr
    bad = _check("--optimizer", "no_such_module:X")
    assert bad.returncode == 2 and "cannot import candidate module" in bad.stderr, bad.stderr


def test_a_lacking_feature_is_listed_not_judged_and_strict_fails_it() -> None:
    adapter = resolve("crashing:WithoutMaximize")
    assert not adapter.supports.maximize and adapter.supports.complex
    args = (
        "--optimizer",
        "tests.conformance.crashing:WithoutMaximize",
        "--cases",
        "c0-m0-wd0-max1-float32-cpu-foreach0",
    )
    lenient, strict = _check(*args), _check(*args, "--strict")
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "not supported by tests.conformance.crashing.WithoutMaximize" in lenient.stdout
    assert "maximize=True: 1 case(s)" in lenient.stdout and "0 judged checks" in lenient.stdout
    assert strict.returncode == 1, strict.stdout + strict.stderr
    plain = _check(
        "--optimizer", "tests.conformance.crashing:WithoutMaximize", "--cases", "c0-m0-wd0-max0-float32-cpu-foreach0"
    )
    assert plain.returncode == 0 and "maximize=True (the contract items step with it): 1 case(s)" in plain.stdout, (
        plain.stdout
    )


def test_one_setting_chooses_the_candidate_for_the_cli_and_the_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANDIDATE_SETTING, "torch.optim:RMSprop")
    assert chosen_candidate() == "torch.optim:RMSprop"
    monkeypatch.delenv(CANDIDATE_SETTING)
    assert chosen_candidate() == "lucid.optim:RMSprop"
    done = _check("--cases", "c0-m1-wd0-max0-float64-cpu-foreach1", env={CANDIDATE_SETTING: "torch.optim:RMSprop"})
    assert done.returncode == 0 and done.stdout.startswith("candidate torch.optim.RMSprop 2.13.0"), done.stdout
    for strict, expected in (("0", "2 skipped"), ("1", "2 failed")):
        suite = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
             "tests/conformance/test_matrix.py", "-k", "test_probes and c0-m1-wd0-max1-float32-cpu"],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, CANDIDATE_SETTING: "tests.conformance.crashing:WithoutMaximize",
                 "CONFORMANCE_STRICT": strict},
        )  # fmt: skip
        assert expected in suite.stdout and "WithoutMaximize does not support maximize=True" in suite.stdout, (
            suite.stdout[-2000:]
        )


def test_a_class_given_as_an_object_is_replayed_by_its_import_path() -> None:
    import mutants

    from conformance.harness import check_candidate

    report = check_candidate(mutants.EpsInsideRoot, case_filter="c0-m0-wd0-max0-float32-cpu-foreach0")
    replays = [line for line in report.failure_lines() if line.startswith("  replay: ")]
    assert replays and all(line.endswith(" --optimizer mutants:EpsInsideRoot") for line in replays), replays


def test_a_long_parameter_list_is_named_in_part_keeping_the_odd_shapes() -> None:
    from conformance.runners import LockstepPair

    params0 = [np.ones(3)] * 10 + [np.ones(()), np.ones((3, 0))] + [np.ones(2)] * 20
    text = LockstepPair(params0, Hyper(), foreach=False, candidate="torch.optim:RMSprop").describe_params()
    assert text.startswith("32 parameters: #0 float64[3] group 0")
    assert "#10 float64[] group 0" in text and "#11 float64[3, 0] group 0" in text and "#31 float64[2]" in text
    assert "#20 " not in text and text.count("...") == 2
