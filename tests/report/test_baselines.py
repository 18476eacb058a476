"""Choosing a baseline, refusing bad ones, the environment record and the drift diff report."""

from __future__ import annotations

import html
import json
import os
import re
from typing import Any

import pytest

from conformance.cli import main
from conformance.report.baselines import baseline_name, baseline_problems, choose_baseline
from conformance.report.cases import QUICK
from conformance.report.environment import NEW_IN_VERSION_3, differences
from conformance.report.schema import SCHEMA_VERSION, dumps, load


def _copy(result: dict[str, Any], **environment: Any) -> dict[str, Any]:
    copy = json.loads(dumps(result))
    copy["environment"].update(environment)
    return copy


def _write(path, result) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(result))
    return str(path)


def _as_version_2(result: dict[str, Any]) -> dict[str, Any]:
    old = json.loads(dumps(result))
    for key in NEW_IN_VERSION_3:
        del old["environment"][key]
    old["schema_version"] = 2
    return old


def test_environment_records_builds_threads_and_the_candidates_version(tiny_result):
    env = tiny_result["environment"]
    assert env["candidate_version"] == "0.1.0"
    build = env["torch_build"]
    # torch 2.13.0+cpu is an MKL build with oneDNN: both versions are read from torch.__config__.show().
    assert build["blas"] == "mkl" and re.match(r"\d{4}\.\d", build["mkl"]), build
    assert re.match(r"v\d+\.\d+", build["onednn"]) and build["mkl_available"] is True
    assert build["parallel_backend"] != "unknown" and build["cuda"] == "none"
    assert env["numpy_build"]["blas"] != "unknown" and env["numpy_build"]["simd_found"]
    threads = env["threads"]
    assert threads["torch"] >= 1 and threads["openmp"].isdigit()
    # NumPy's own BLAS is among the libraries, described without its path.
    assert any("blas" in line for line in threads["libraries"]), threads["libraries"]
    flat = json.dumps(env)
    assert os.sep + "lib" not in flat and "site-packages" not in flat


def test_a_version_2_result_loads_and_says_what_it_does_not_record(tmp_path, tiny_result, capsys):
    old = _write(tmp_path / "old.json", _as_version_2(tiny_result))
    loaded = load(old)
    assert loaded["schema_version"] == SCHEMA_VERSION and loaded["upgraded_from"] == 2
    current = _write(tmp_path / "current.json", tiny_result)
    assert main(["compare", old, current]) == 0
    out = capsys.readouterr().out
    assert "schema version 2, which does not record candidate_version, torch_build, numpy_build, threads" in out
    # Not recorded is not "changed": no environment difference is printed for those fields.
    assert "environment differs" not in out


def test_a_version_3_result_must_record_the_new_fields(tiny_result):
    from conformance.report.schema import validate

    broken = json.loads(dumps(tiny_result))
    del broken["environment"]["torch_build"]
    with pytest.raises(ValueError, match="torch_build"):
        validate(broken)


def test_differences_are_dotted_keys_and_skip_unrecorded_fields(tiny_result):
    env = tiny_result["environment"]
    moved = _copy(tiny_result, torch="2.14.1+cu130")["environment"]
    moved["torch_build"] = {**env["torch_build"], "mkl": "2025.0-Product Build 20241009"}
    assert [key for key, _, _ in differences(env, moved)] == ["torch", "torch_build.mkl"]
    old = _as_version_2(tiny_result)["environment"]
    assert differences(old, env) == []


def test_synthetic_move_of_one_metric_in_one_configuration_is_named_in_text_and_html(tmp_path, tiny_result, capsys):
    moved = json.loads(dumps(tiny_result))
    target = next(c for c in moved["cases"] if c["config"] == "c1-m0-wd1-max0" and c["dtype"] == "float64")
    target["lockstep"]["ulp"]["max"] += 5  # beyond the 2-ULP slack; nothing else moves
    baseline = _write(tmp_path / "baseline.json", tiny_result)
    current = _write(tmp_path / "current.json", _copy(moved, torch="2.14.1+cpu"))
    out_dir = tmp_path / "diff"
    assert main(["compare", baseline, current, "--out", str(out_dir)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION in c1-m0-wd1-max0 (1 change(s)):" in out
    assert f"{target['id']}: lockstep ULP max" in out
    assert out.count("REGRESSION in") == 1 and "environment differs: torch: '2.13.0+cpu' -> '2.14.1+cpu'" in out
    assert sorted(os.listdir(out_dir)) == ["comparison.html", "comparison.md"]
    markdown = (out_dir / "comparison.md").read_text()
    # The environment difference comes first, before what moved.
    assert markdown.index("| torch | 2.13.0+cpu | 2.14.1+cpu |") < markdown.index("## What moved")
    moved_rows = [line for line in markdown.splitlines() if "REGRESSION" in line]
    # What moved (per configuration and metric), the configuration x dtype row, and the change itself.
    assert len(moved_rows) == 3, moved_rows
    assert all("c1-m0-wd1-max0" in row and "lockstep ULP max" in row for row in moved_rows)
    assert "| c1-m0-wd1-max0 | float64 |" in moved_rows[1] and target["id"] in moved_rows[2]
    page = (out_dir / "comparison.html").read_text()
    marked = [html.unescape(row) for row in re.findall(r'<tr class="out">(.*?)</tr>', page)]
    assert len(marked) == 3 and all("c1-m0-wd1-max0" in row and "lockstep ULP max" in row for row in marked)
    assert 'class="better"' not in page
    assert page.count("data:image/png;base64,") == 2
    assert page.index("2.14.1+cpu") < page.index("What moved")


def test_compare_out_refuses_a_directory_of_other_files_and_leaves_it(tmp_path, tiny_result, capsys):
    baseline = _write(tmp_path / "b.json", tiny_result)
    out_dir = tmp_path / "taken"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("mine")
    assert main(["compare", baseline, baseline, "--out", str(out_dir), "--no-html"]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert os.listdir(out_dir) == ["notes.txt"]


def _directory(tmp_path, tiny_result, *versions, capability=None):
    directory = tmp_path / "baselines"
    for version in versions:
        result = _copy(tiny_result, torch=version, **({"cpu_capability": capability} if capability else {}))
        _write(directory / baseline_name(result), result)
    return directory


def test_the_nearest_release_is_by_version_not_by_name_and_the_older_wins_a_tie(tmp_path, tiny_result):
    # 2.9.0 and 2.11.0 are as near to 2.10.1; by name 2.11.0 sorts first, by version 2.9.0 is older.
    directory = _directory(tmp_path, tiny_result, "2.9.0+cpu", "2.11.0+cpu", "2.12.0+cpu")
    choice = choose_baseline(directory, _copy(tiny_result, torch="2.10.1+cpu"))
    assert choice.path.name.endswith("torch2.9.0.json"), choice
    # 2.10.0 is nearer to 2.10.1 than 2.9.0 is, though "2.10" sorts before "2.9" as text.
    directory = _directory(tmp_path / "more", tiny_result, "2.9.0+cpu", "2.10.0+cpu")
    assert choose_baseline(directory, _copy(tiny_result, torch="2.10.1")).path.name.endswith("torch2.10.0.json")


def test_without_a_baseline_for_the_stack_the_nearest_torch_is_taken_and_named(tmp_path, tiny_result, capsys):
    directory = _directory(tmp_path, tiny_result, "2.12.0+cpu", "2.13.0+cpu", "2.15.0+cpu")
    upgraded = _copy(tiny_result, torch="2.14.1+cu130")
    choice = choose_baseline(directory, upgraded)
    assert choice.path.name.endswith("torch2.13.0.json") and not choice.exact
    assert "torch 2.13.0 instead of 2.14.1" in choice.reason
    current = _write(tmp_path / "current.json", upgraded)
    assert main(["compare", str(directory), current]) == 0
    out = capsys.readouterr().out
    assert "the nearest is cpu-" in out and "environment differs: torch: '2.13.0+cpu' -> '2.14.1+cu130'" in out
    assert out.strip().endswith("OK: no drift beyond the thresholds (0 improvement(s))")
    # The upgrade question for another release: --baseline-torch.
    assert main(["compare", str(directory), current, "--baseline-torch", "2.12.0"]) == 0
    assert "torch2.12.0.json" in capsys.readouterr().out
    assert main(["compare", str(directory), current, "--baseline-torch", "2.11.0"]) == 2
    assert "torch2.12.0.json" in capsys.readouterr().err  # says what the directory holds


def test_a_baseline_of_another_cpu_capability_is_never_the_nearest(tmp_path, tiny_result, capsys):
    other = "AVX512" if tiny_result["environment"]["cpu_capability"] != "AVX512" else "AVX2"
    directory = _directory(tmp_path, tiny_result, "2.13.0+cpu", capability=other)
    current = _write(tmp_path / "current.json", tiny_result)
    assert main(["compare", str(directory), current]) == 2
    err = capsys.readouterr().err
    assert f"CPU capability {other}" in err and "describes other roundings" in err


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"settings": QUICK.as_json()}, "--quick"),
        ({"shard": {"index": 1, "count": 2}}, "shard 1/2"),
        ({"selection": {"cases": "c0-m0"}}, "--cases 'c0-m0'"),
        ({"failures": [{"id": "x", "error": "boom"}]}, "could not run on 1 case"),
    ],
)
def test_update_baseline_refuses_a_partial_or_smoke_run_and_writes_nothing(
    tmp_path, tiny_result, capsys, change, reason
):
    bad = {**json.loads(dumps(tiny_result)), **change}
    current = tmp_path / "current.json"
    current.write_text(json.dumps(bad))  # not through dumps: a failure id need not be a case of the run
    directory = tmp_path / "baselines"
    assert main(["compare", str(directory), str(current), "--update-baseline", "--any-settings"]) == 2
    err = capsys.readouterr().err
    assert reason in err and "Nothing was written" in err
    assert not directory.exists()


def test_update_baseline_refuses_non_default_settings_unless_asked(tiny_result):
    problems = baseline_problems(tiny_result)
    assert len(problems) == 1 and "steps 6 (default 64)" in problems[0] and "--any-settings" in problems[0]
    assert baseline_problems(tiny_result, any_settings=True) == []


def test_update_baseline_prints_the_comparison_first_and_writes_it_beside(tmp_path, tiny_result, capsys):
    directory = _directory(tmp_path, tiny_result, "2.13.0+cpu")
    upgraded = _copy(tiny_result, torch="2.14.1+cpu")
    current = _write(tmp_path / "current.json", upgraded)
    assert main(["compare", str(directory), current, "--update-baseline", "--any-settings"]) == 0
    out = capsys.readouterr().out
    name = baseline_name(upgraded)
    assert out.index("compared 128 cases") < out.index(f"created baseline {directory / name}")
    assert (directory / name).read_text() == dumps(upgraded)
    beside = (directory / name.replace(".json", ".comparison.md")).read_text()
    assert "| torch | 2.13.0+cpu | 2.14.1+cpu |" in beside and "**Verdict: OK.**" in beside
    # Updating it again compares with the file it replaces.
    assert main(["compare", str(directory), current, "--update-baseline", "--any-settings"]) == 0
    out = capsys.readouterr().out
    assert f"baseline {directory / name} vs" in out and f"updated baseline {directory / name}" in out


def test_a_baseline_that_cannot_be_written_leaves_the_comparison_beside_it_as_it_was(
    tmp_path, tiny_result, capsys, monkeypatch
):
    from conformance.report import schema

    directory = _directory(tmp_path, tiny_result, "2.13.0+cpu")
    name = baseline_name(tiny_result)
    before = (directory / name).read_text()
    beside = directory / name.replace(".json", ".comparison.md")
    beside.write_text("the comparison of the last update")
    real = schema.atomic_write

    def failing(path, text):
        if str(path).endswith(".json"):
            raise OSError(28, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(schema, "atomic_write", failing)
    current = _write(tmp_path / "current.json", _copy(tiny_result, python="3.12.0"))
    assert main(["compare", str(directory), current, "--update-baseline", "--any-settings"]) == 2
    assert "No space left on device; nothing was changed" in capsys.readouterr().err
    assert (directory / name).read_text() == before
    assert beside.read_text() == "the comparison of the last update"


def test_an_unreadable_file_is_named_and_blocks_an_update_that_might_have_compared_with_it(
    tmp_path, tiny_result, capsys
):
    directory = _directory(tmp_path, tiny_result, "2.13.0+cpu")
    broken = directory / baseline_name(tiny_result)
    broken.write_text(broken.read_text()[:100])  # truncated
    current = _write(tmp_path / "current.json", _copy(tiny_result, torch="2.14.1+cpu"))
    assert main(["compare", str(directory), current]) == 2
    assert f"unreadable {broken.name}" in capsys.readouterr().err
    assert main(["compare", str(directory), current, "--update-baseline", "--any-settings"]) == 2
    assert "fix or remove the unreadable file" in capsys.readouterr().err
    assert sorted(os.listdir(directory)) == [broken.name]


def test_update_baseline_never_writes_a_file_named_for_another_stack(tmp_path, tiny_result, capsys):
    directory = _directory(tmp_path, tiny_result, "2.13.0+cpu", capability="AVX512")
    other = directory / baseline_name(_copy(tiny_result, cpu_capability="AVX512"))
    before = other.read_text()
    current = _write(tmp_path / "current.json", tiny_result)
    assert main(["compare", str(other), current, "--update-baseline", "--any-settings"]) == 2
    assert "is named for another stack" in capsys.readouterr().err and other.read_text() == before
    # A file of the user's own naming, not there yet, is created.
    mine = tmp_path / "mine" / "reference.json"
    assert main(["compare", str(mine), current, "--update-baseline", "--any-settings"]) == 0
    assert mine.read_text() == dumps(tiny_result)
    assert "without a comparison" in (mine.parent / "reference.comparison.md").read_text()


def test_baseline_torch_and_update_baseline_do_not_go_together(tmp_path, tiny_result, capsys):
    directory = _directory(tmp_path, tiny_result, "2.13.0+cpu")
    current = _write(tmp_path / "current.json", _copy(tiny_result, torch="2.14.1+cpu"))
    args = ["compare", str(directory), current, "--update-baseline", "--any-settings", "--baseline-torch", "2.13.0"]
    assert main(args) == 2
    assert "do not go together" in capsys.readouterr().err
    assert len(os.listdir(directory)) == 1


def test_a_baseline_replaced_without_a_comparison_does_not_keep_the_old_one_beside_it(tmp_path, tiny_result):
    directory = _directory(tmp_path, tiny_result, "2.13.0+cpu")
    name = baseline_name(tiny_result)
    beside = directory / name.replace(".json", ".comparison.md")
    beside.write_text("STALE")
    other_settings = json.loads(dumps(tiny_result))
    other_settings["settings"]["steps"] = 7  # not comparable with the baseline it replaces
    current = tmp_path / "current.json"
    current.write_text(json.dumps(other_settings))
    assert main(["compare", str(directory), str(current), "--update-baseline", "--any-settings"]) == 0
    text = beside.read_text()
    assert "STALE" not in text and "not comparable with the baseline it replaced" in text


def test_a_difference_in_a_number_no_row_reads_is_still_counted(tmp_path, tiny_result, capsys):
    moved = json.loads(dumps(tiny_result))
    moved["cases"][3]["free_run"]["growth_exponent"] = 0.9  # no threshold, no row of its own
    baseline = _write(tmp_path / "b.json", tiny_result)
    current = _write(tmp_path / "c.json", moved)
    assert main(["compare", baseline, current, "--out", str(tmp_path / "diff"), "--no-html"]) == 0
    assert "127 identical to the baseline in every number" in capsys.readouterr().out
    markdown = (tmp_path / "diff" / "comparison.md").read_text()
    assert "| other recorded numbers only (histograms, per-step errors, medians) | 1 |" in markdown
    assert "None: all" not in markdown
