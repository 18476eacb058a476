"""``check``'s inputs: case filters, one id form shared with ``run``, and replay tokens from outside.

A bad input is a usage error (exit 2, naming the bad field or filter), never
a disagreement of the candidate (exit 1).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.harness import probe_scenarios
from conformance.matrix import cases
from conformance.report.cases import QUICK, build_cases
from conformance.scenario import ParamSpec, Scenario

ROOT = Path(__file__).resolve().parents[2]
CASE = cases("cpu")[0]


def _token(data: Any) -> str:
    """Encode ``data`` the way a replay id is encoded (whatever it holds)."""
    raw = json.dumps(data, separators=(",", ":")).encode()
    return "v1-" + base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def _probe() -> dict[str, Any]:
    """The replay data of the first probe of the first case: a well-formed token to break one field of."""
    return json.loads(zlib.decompress(base64.urlsafe_b64decode(_pad(probe_scenarios(CASE)[0].to_id()[3:]))))


def _pad(body: str) -> str:
    return body + "=" * (-len(body) % 4)


# --- --cases -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["c0-m0-wd0-max0-float16", "nope", "c0-m0-wd0-max0-float32-cuda"])
def test_a_case_filter_that_selects_nothing_is_a_usage_error(capsys, text):
    assert main(["check", "--cases", text]) == 2
    err = capsys.readouterr().err
    assert f"--cases {text!r}" in err and "matches none of the 128 cpu cases" in err
    assert CASE.id in err  # what an id looks like


def test_check_accepts_the_ids_run_writes():
    """The case ids of a drift report select their matrix case in ``check``, whichever spelling they use."""
    drift = [c for c in build_cases(QUICK) if c.device == "cpu"]
    # the drift report measures the real dtypes only (the check matrix has the complex ones too)
    assert {c.matrix_id for c in drift} == {c.id for c in cases("cpu") if c.np_dtype.kind == "f"}
    assert all(c.id == f"{c.matrix_id}-scale={c.scale:g}" for c in drift)
    first = drift[0]
    assert first.id == "c0-m0-wd0-max0-float32-cpu-foreach0-cap0-tlr0-scale=1e-08"
    legacy = "c0-m0-wd0-max0/float32/foreach0/cpu"  # schema 1's spelling, with and without the scale
    for spelling in (first.id, f"{legacy}/scale=1e-08", legacy):
        done = subprocess.run(
            [sys.executable, "-m", "conformance", "check", "-v", "--budget", "0", "--cases", spelling],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        probes = len(probe_scenarios(CASE))
        assert f"{CASE.id}: ok" in done.stdout and f"on {probes} probe scenario(s)" in done.stdout, done.stdout


@pytest.mark.parametrize("flag", ["--examples", "--seed"])
def test_negative_counts_are_usage_errors(capsys, flag):
    assert main(["check", flag, "-1"]) == 2
    assert "-1" in capsys.readouterr().err


# --- --replay ------------------------------------------------------------------------------------------


def _broken(field: str, value: Any) -> str:
    data = _probe()
    where = data
    path = field.split(".")
    for key in path[:-1]:
        where = where[int(key)] if isinstance(where, list) else where[key]
    last = path[-1]
    if isinstance(where, list):
        where[int(last)] = value
    else:
        where[last] = value
    return _token(data)


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("case", "c9-m0-wd0-max0-float32-cpu-foreach0-cap0-tlr0", "case"),
        ("steps", -1, "steps"),
        ("steps", 0, "steps"),
        ("steps", 1.5, "steps"),
        ("steps", True, "steps"),
        ("params.0.shape", [100000, 100000], "params[0].shape"),
        ("params.0.shape", [-3], "params[0].shape"),
        ("params.1.group", 7, "params[1].group"),
        ("params.2.kind", "laplace", "params[2].kind"),
        ("params.0.layout", "diagonal", "params[0].layout"),
        ("params.0.none_every", -2, "params[0].none_every"),
        ("params.0.scale", "big", "params[0].scale"),
        ("groups.0.lr", "0.01", "groups[0].lr"),
        ("groups.0.lr", None, "groups[0].lr"),
        ("groups.0.colour", 1, "groups[0]"),
        ("lr_change", [99, 0.5], "lr_change"),
        ("checks", ["lockstep", "vibes"], "checks"),
        ("seed", -5, "seed"),
        ("groups", [], "groups"),
    ],
)
def test_a_bad_replay_token_is_a_usage_error_naming_the_field(capsys, field, value, named):
    assert main(["check", "--replay", _broken(field, value)]) == 2
    captured = capsys.readouterr()
    assert named in captured.err and "DISAGREE" not in captured.out


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "x",
        {"case": CASE.id},  # fields missing
        {"case": [[[[[[[[[[1]]]]]]]]]]},
    ],
    ids=["null", "list", "string", "missing-fields", "nested-case"],
)
def test_a_replay_token_of_the_wrong_shape_is_a_usage_error(capsys, data):
    assert main(["check", "--replay", _token(data)]) == 2
    assert "scenario id" in capsys.readouterr().err


def test_a_deeply_nested_replay_token_is_a_usage_error(capsys):
    deep = "[" * 10_000 + "]" * 10_000  # deeper than json's recursion limit
    token = "v1-" + base64.urlsafe_b64encode(zlib.compress(deep.encode(), 9)).decode().rstrip("=")
    assert main(["check", "--replay", token]) == 2
    err = capsys.readouterr().err
    assert "nested" in err and "Traceback" not in err


def test_a_replay_token_that_inflates_enormously_is_a_usage_error(capsys):
    bomb = "v1-" + base64.urlsafe_b64encode(zlib.compress(b" " * 50_000_000, 9)).decode().rstrip("=")
    assert main(["check", "--replay", bomb]) == 2
    assert "scenario id" in capsys.readouterr().err


def test_a_replay_token_with_a_billion_steps_is_refused_at_once():
    """``steps: 1e9`` used to hang: it must be refused before anything is materialised."""
    token = _broken("steps", 1_000_000_000)
    done = subprocess.run(
        [sys.executable, "-m", "conformance", "check", "--replay", token],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "steps" in done.stderr and "1000000000" in done.stderr


def test_the_printed_replay_tokens_stay_valid():
    for case in cases("cpu")[:4]:
        for scenario in probe_scenarios(case):
            assert Scenario.from_id(scenario.to_id()) == scenario
    # A gap period longer than the stream (drawn: none_every 3 with 2 steps) never triggers, but is valid.
    short = Scenario(case=CASE.id, params=(ParamSpec(none_every=3),), steps=2)
    assert Scenario.from_id(short.to_id()) == short
