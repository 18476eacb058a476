import json
import math
from statistics import NormalDist

import pytest

from conformance.cli import main
from conformance.matrix import flag_configs
from conformance.report.baselines import baseline_name
from conformance.report.drift import FREE_RUN_FACTOR, compare_results
from conformance.report.schema import dumps

from .conftest import LUCID, PERTURBED, TINY_FLAGS


def _run(out, candidate=LUCID):
    status = main(["run", *TINY_FLAGS, "--out", str(out), "--no-html", "--optimizer", candidate])
    return status, out / "drift.json"


def test_one_ulp_per_step_perturbation_fails_compare_and_names_every_configuration(tmp_path, capsys):
    _, baseline = _run(tmp_path / "base")
    status, perturbed = _run(tmp_path / "perturbed", PERTURBED)
    # One ULP per step stays inside the derived per-step bounds: only the drift comparison can see it.
    assert status == 0
    capsys.readouterr()
    assert main(["compare", str(baseline), str(perturbed)]) == 1
    out = capsys.readouterr().out
    for config in flag_configs():
        assert f"REGRESSION in {config.name}" in out
    assert "bitwise fraction" in out and "FAIL" in out
    # An unperturbed rerun compares clean.
    _, rerun = _run(tmp_path / "rerun")
    assert main(["compare", str(baseline), str(rerun)]) == 0
    out = capsys.readouterr().out
    assert "OK: no drift" in out and "REGRESSION" not in out
    # The other way round the move is an improvement: reported, not a failure.
    assert main(["compare", str(perturbed), str(rerun)]) == 0
    assert "improvement in c0-m0-wd0-max0" in capsys.readouterr().out


def test_settings_mismatch_is_not_comparable(tmp_path, tiny_result, capsys):
    base = tmp_path / "b.json"
    base.write_text(dumps(tiny_result))
    other = tmp_path / "o.json"
    other.write_text(dumps({**tiny_result, "settings": {**tiny_result["settings"], "steps": 7}}))
    assert main(["compare", str(base), str(other)]) == 2
    assert "settings differ in steps" in capsys.readouterr().err


def test_missing_case_fails_and_new_case_does_not(tiny_result):
    fewer = {**tiny_result, "cases": tiny_result["cases"][1:]}
    assert compare_results(tiny_result, fewer).failed
    assert compare_results(tiny_result, fewer).missing == [tiny_result["cases"][0]["id"]]
    assert not compare_results(fewer, tiny_result).failed


def _with_bitwise(result, index, equal, elements):
    moved = json.loads(dumps(result))
    moved["cases"][index]["lockstep"].update(bitwise_equal=equal, elements=elements)
    return moved


def test_bitwise_threshold_is_z_standard_errors_of_a_binomial_proportion(tiny_result):
    # The default run's element count and a typical float32 fraction (99%).
    n, x = 16384, 16220
    z = NormalDist().inv_cdf(1 - 0.01 / len(tiny_result["cases"]))  # 1% family-wise over 128 cases: 3.78
    p = x / n
    allowed = z * math.sqrt(2 * p * (1 - p) / n)  # two samples of the same size and fraction
    assert 0.003 < allowed < 0.005  # about 0.4 percentage points
    base = _with_bitwise(tiny_result, 5, x, n)
    # Within 0.8x the allowed drop: noise.  Beyond 1.3x: drift (the margins cover the
    # +2 adjustment and the current fraction's own, larger, variance).
    assert not compare_results(base, _with_bitwise(tiny_result, 5, round(x - 0.8 * allowed * n), n)).changes
    moved = compare_results(base, _with_bitwise(tiny_result, 5, round(x - 1.3 * allowed * n), n))
    assert [c.metric for c in moved.regressions] == ["bitwise fraction"]
    assert moved.moved_configs() == [tiny_result["cases"][5]["config"]]
    # A rise of the same size is an improvement, which does not fail.
    up = compare_results(base, _with_bitwise(tiny_result, 5, round(x + 1.3 * allowed * n), n))
    assert not up.failed and [c.metric for c in up.improvements] == ["bitwise fraction"]


def test_free_run_threshold(tiny_result):
    moved = json.loads(dumps(tiny_result))
    case = next(c for c in moved["cases"] if c["dtype"] == "float32")
    floor = 2 * 2.0**-24 * math.sqrt(moved["settings"]["steps"])
    base_error = max(case["free_run"]["final_relative_error"], floor)
    case["free_run"]["final_relative_error"] = 1.01 * FREE_RUN_FACTOR * base_error
    assert [c.metric for c in compare_results(tiny_result, moved).regressions] == ["free-run rel. error"]
    case["free_run"]["final_relative_error"] = 0.99 * FREE_RUN_FACTOR * base_error
    assert not compare_results(tiny_result, moved).changes


def test_update_baseline_and_baseline_directory(tmp_path, tiny_result, capsys):
    current = tmp_path / "current.json"
    current.write_text(dumps(tiny_result))
    directory = tmp_path / "baselines"
    directory.mkdir()
    assert main(["compare", str(directory), str(current)]) == 2
    assert "--update-baseline --any-settings`" in capsys.readouterr().err  # the settings are not the default run's
    assert main(["compare", str(directory), str(current), "--update-baseline", "--any-settings"]) == 0
    name = baseline_name(tiny_result)
    assert name == f"cpu-{tiny_result['environment']['cpu_capability'].lower()}-torch2.13.0.json"
    assert (directory / name).read_text() == current.read_text()
    assert main(["compare", str(directory), str(current)]) == 0


def test_update_baseline_into_a_directory_not_yet_made(tmp_path, tiny_result):
    current = tmp_path / "current.json"
    current.write_text(dumps(tiny_result))
    directory = tmp_path / "new" / "baselines"
    assert main(["compare", str(directory), str(current), "--update-baseline", "--any-settings"]) == 0
    assert directory.is_dir()  # not a file named like the directory
    assert (directory / baseline_name(tiny_result)).read_text() == current.read_text()


@pytest.mark.parametrize("bad", ["missing.json", "notjson"])
def test_unreadable_inputs_exit_2(tmp_path, bad, capsys):
    path = tmp_path / bad
    if bad == "notjson":
        path.write_text("[")
    assert main(["compare", str(path), str(path)]) == 2
    assert str(path) in capsys.readouterr().err
