"""``run --cases`` measures only what it selects; a case the candidate fails on is recorded, not a crash.

The run goes on past a failing case, writes the reports with the failure
listed at the top of each (the JSON's ``failures``, validated by the schema),
prints the command that measures that case alone, and exits 3; a filter that
selects nothing is a usage error that touches nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.cli import main
from conformance.report.schema import load

TESTS = Path(__file__).resolve().parents[1] / "conformance"


@pytest.fixture
def importable_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(TESTS))


def test_a_failing_case_is_recorded_and_the_rest_measured(tmp_path, capsys, importable_candidates) -> None:
    out = tmp_path / "report"
    argv = ["run", "--quick", "--no-progress", "--out", str(out), "--cases", "m0-wd0-max0-float32-cpu-foreach0"]
    status = main([*argv, "--optimizer", "crashing:RaisesWhenCentered"])
    printed = capsys.readouterr().out
    assert status == 3, printed
    result = load(out / "drift.json")  # schema-valid
    assert result["selection"] == {"cases": "m0-wd0-max0-float32-cpu-foreach0"}
    measured = {c["id"] for c in result["cases"]}
    failed = {f["id"] for f in result["failures"]}
    assert measured and failed and not measured & failed
    assert all(i.startswith("c0-") for i in measured) and all(i.startswith("c1-") for i in failed)
    assert all("raised NotImplementedError building it: centered=True" in f["error"] for f in result["failures"])
    assert f"could not measure {result['failures'][0]['id']}" in printed
    assert (
        "replay: python -m conformance run --cases c1-" in printed
        and "--optimizer crashing:RaisesWhenCentered" in printed
    )
    assert "Incomplete: the candidate failed on" in (out / "drift.md").read_text()
    assert "Incomplete: the candidate failed on" in (out / "drift.html").read_text()


def test_an_honest_selection_passes_and_says_it_is_partial(tmp_path, capsys) -> None:
    out = tmp_path / "report"
    status = main(
        ["run", "--quick", "--no-progress", "--no-html", "--out", str(out), "--cases", "c1-m1-wd1-max1-float64"]
    )
    assert status == 0, capsys.readouterr()
    result = load(out / "drift.json")
    assert result["cases"] and all(c["id"].startswith("c1-m1-wd1-max1-float64-") for c in result["cases"])
    assert "failures" not in result
    assert "Only the cases whose id contains `c1-m1-wd1-max1-float64`" in (out / "drift.md").read_text()


def test_a_selection_of_nothing_is_a_usage_error(tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["run", "--quick", "--out", str(out), "--cases", "no-such-case"]) == 2
    assert "--cases 'no-such-case' selects none" in capsys.readouterr().err
    assert not out.exists()
