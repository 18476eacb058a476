"""The command line under bad inputs, full disks, interrupts, races and closed pipes.

Exit codes, project-wide: 0 agreement, 1 numerical disagreement (or a drift
regression for ``compare``), 2 usage error or unreadable input, 3 the
candidate could not run.  A bad input is never reported as the candidate's
fault, and a command that fails leaves no half-written report set.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from conformance.cli import main
from conformance.report.schema import dumps

from .conftest import TINY_FLAGS, tiny_run

LONG_FLAGS = ["--steps", "200", "--size", "4096", "--no-progress"]

ROOT = Path(__file__).resolve().parents[2]
#: 64 cases of 2 steps x 4 elements: the smallest run that writes all three reports.
FAST = ["--quick", "--steps", "2", "--size", "4", "--scales", "1", "--no-progress"]
REPORTS = ["drift.html", "drift.json", "drift.md"]


def _python(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, **kwargs
    )


def _seeds(out: Path) -> dict[str, int]:
    """The root seed each report file of ``out`` was written from."""
    seeds = {"drift.json": json.loads((out / "drift.json").read_text())["settings"]["seed"]}
    md = re.search(r"\| setting seed \| (\d+) \|", (out / "drift.md").read_text())
    assert md, "drift.md names no seed"
    seeds["drift.md"] = int(md[1])
    if (out / "drift.html").exists():
        page = re.search(r"<td>setting seed</td><td>(\d+)</td>", (out / "drift.html").read_text())
        assert page, "drift.html names no seed"
        seeds["drift.html"] = int(page[1])
    return seeds


def _leftovers(parent: Path, out: Path) -> list[str]:
    """Entries of ``parent`` other than ``out`` itself that a run made (staging or moved-aside directories)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{out.name}"))


@pytest.fixture
def no_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make measuring fail loudly: a test using this proves the command stopped before it."""
    from conformance.report import document

    def measured(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured although the output could not be written")

    monkeypatch.setattr(document, "run_drift", measured)


# --- run --out is checked before measuring ------------------------------------------------------------


def test_run_refuses_an_existing_file_as_out_before_measuring(tmp_path, capsys, no_measuring):
    out = tmp_path / "report"
    out.write_text("precious\n")
    assert main(["run", *FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not a directory" in err
    assert out.read_text() == "precious\n"


@pytest.mark.parametrize("where", ["below a file", "read-only file system"])
def test_run_refuses_an_unwritable_out_before_measuring(tmp_path, capsys, no_measuring, where):
    if where == "below a file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "report"
    else:
        out = Path("/sys/lucid-drift-report")  # sysfs: no directory can be made there, not even by root
    assert main(["run", *FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "Traceback" not in err


def test_run_refuses_a_directory_that_holds_other_files(tmp_path, capsys, no_measuring):
    (tmp_path / "notes.txt").write_text("mine\n")
    assert main(["run", *FAST, "--out", str(tmp_path)]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_run_on_a_full_disk_fails_before_measuring(tmp_path, capsys, monkeypatch, no_measuring):
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    out = tmp_path / "report"
    assert main(["run", *FAST, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "space" in err
    assert not out.exists() and not _leftovers(tmp_path, out)


def test_a_write_failure_after_measuring_keeps_the_old_set(tmp_path, capsys, monkeypatch):
    out = tmp_path / "report"
    assert main(["run", *FAST, "--seed", "1", "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in REPORTS}
    calls = []

    def fsync_then_full(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second file written: the disk fills up
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync_then_full)
    capsys.readouterr()
    assert main(["run", *FAST, "--seed", "2", "--out", str(out)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in REPORTS} == before
    assert not _leftovers(tmp_path, out)


def test_merge_refuses_an_existing_file_as_out_before_merging(tmp_path, capsys):
    shard = tmp_path / "shard.json"
    shard.write_text("{}")  # never read: --out is checked first
    out = tmp_path / "merged"
    out.write_text("precious\n")
    assert main(["merge", str(shard), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not a directory" in err
    assert out.read_text() == "precious\n"


# --- the report set is atomic ---------------------------------------------------------------------------


def test_a_run_finishing_while_another_writes_never_mixes_the_sets(tmp_path, monkeypatch, capsys):
    """A second complete run lands while the first is drawing its HTML: the first run's set wins whole."""
    from conformance.report import html

    out = tmp_path / "report"
    draw = html.html_report
    nested: list[int] = []

    def race(result: dict[str, Any]) -> str:
        if result["settings"]["seed"] == 1:  # the outer run: let the second one run whole, now
            nested.append(main(["run", *FAST, "--seed", "2", "--out", str(out)]))
        return draw(result)

    monkeypatch.setattr(html, "html_report", race)
    assert main(["run", *FAST, "--seed", "1", "--out", str(out)]) == 0
    assert nested == [0]
    assert _seeds(out) == dict.fromkeys(REPORTS, 1)
    assert sorted(p.name for p in out.iterdir()) == REPORTS
    assert not _leftovers(tmp_path, out)


def test_concurrent_runs_into_one_out_leave_one_whole_set(tmp_path):
    out = tmp_path / "report"
    for trial in range(3):
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "conformance", "run", *FAST, "--seed", str(seed), "--out", str(out)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed in (10 * trial + 1, 10 * trial + 2)
        ]
        errors = [run.communicate(timeout=300)[1] for run in runs]
        assert [run.returncode for run in runs] == [0, 0], errors
        seeds = _seeds(out)
        assert len(set(seeds.values())) == 1, f"trial {trial}: mixed set {seeds}"
        assert set(seeds.values()) <= {10 * trial + 1, 10 * trial + 2}
        assert sorted(p.name for p in out.iterdir()) == REPORTS
        assert not _leftovers(tmp_path, out)


def test_an_interrupt_between_files_keeps_the_old_set(tmp_path, monkeypatch, capsys):
    from conformance.report import html

    out = tmp_path / "report"
    assert main(["run", *FAST, "--seed", "1", "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in REPORTS}

    def interrupted(result: dict[str, Any]) -> str:
        raise KeyboardInterrupt  # Ctrl-C after drift.json and drift.md were written

    monkeypatch.setattr(html, "html_report", interrupted)
    capsys.readouterr()
    assert main(["run", *FAST, "--seed", "2", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert {name: (out / name).read_bytes() for name in REPORTS} == before
    assert not _leftovers(tmp_path, out)


def test_sigint_while_measuring_exits_130_without_a_traceback_or_a_report(tmp_path):
    out = tmp_path / "report"
    with subprocess.Popen(
        # A run of minutes (every case, 200 steps x 4096 elements): the signal must find it
        # measuring; a tiny run could finish first on a loaded machine (CI saw exit 0 once).
        [sys.executable, "-m", "conformance", "run", *LONG_FLAGS, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as run:
        assert run.stderr is not None
        first = run.stderr.readline()  # printed just before measuring starts
        assert first.startswith("drift run of"), first
        run.send_signal(signal.SIGINT)
        rest = run.stderr.read()
        assert run.wait(timeout=120) == 130, rest
    assert "Traceback" not in rest and rest.strip().splitlines() == ["interrupted"]
    assert not out.exists() and not _leftovers(tmp_path, out)


# --- compare: unreadable input is exit 2, NaN is a regression -----------------------------------------


@pytest.mark.parametrize("text", ["null", "[]", '"x"', "5", '{"schema": "lucid-conformance-drift"}'])
def test_compare_refuses_a_file_that_is_not_a_result_with_exit_2(tmp_path, tiny_result, capsys, text):
    good = tmp_path / "good.json"
    good.write_text(dumps(tiny_result))
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    for baseline, current in ((good, bad), (bad, good)):
        assert main(["compare", str(baseline), str(current)]) == 2
        assert str(bad) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("path", "metric"),
    [
        (("free_run", "final_relative_error"), "free-run rel. error"),
        (("lockstep", "ulp", "max"), "lockstep ULP max"),
        (("lockstep", "lucid_oracle_ulp", "median"), "lucid oracle ULP median"),
        (("lockstep", "max_normalised_error"), "lockstep max_normalised_error"),
    ],
)
def test_compare_counts_a_nan_where_the_baseline_has_a_number_as_a_regression(
    tmp_path, tiny_result, capsys, path, metric
):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(dumps(tiny_result))
    moved = json.loads(dumps(tiny_result))
    case = next(c for c in moved["cases"] if c["dtype"] == "float32" and c["scale"] == 1.0)
    where = case
    for key in path[:-1]:
        where = where[key]
    assert isinstance(where[path[-1]], float)  # the baseline holds a number there
    where[path[-1]] = math.nan
    current = tmp_path / "current.json"
    current.write_text(json.dumps(moved))  # json.dumps writes the NaN as a bare NaN token
    assert main(["compare", str(baseline), str(current)]) == 1
    out = capsys.readouterr().out
    assert f"{case['id']}: {metric}" in out and "REGRESSION" in out


# --- merge, run: bad settings and shards are usage errors ----------------------------------------------


def test_merge_refuses_a_shard_that_names_an_unknown_case(tmp_path, capsys):
    paths = []
    for i in (1, 2):
        out = tmp_path / f"shard{i}"
        assert main(["run", *TINY_FLAGS, "--shard", f"{i}/2", "--out", str(out), "--no-html"]) == 0
        paths.append(out / "drift.json")
    doc = json.loads(paths[1].read_text())
    case = doc["cases"][0]
    case["scale"] = 7.0  # a consistent case, but not one of the run's scales
    case["id"] = case["id"].replace("scale=0.0001", "scale=7").replace("scale=1", "scale=7")
    paths[1].write_text(dumps(doc))
    capsys.readouterr()
    assert main(["merge", *map(str, paths), "--out", str(tmp_path / "merged"), "--no-html"]) == 2
    assert case["id"] in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--size", "1000000000000"], "1000000000000"),
        (["--steps", "1000000000"], "1000000000"),
        (["--steps", "5000", "--size", "100000"], "5000 x 100000"),
        (["--scales", "1e308"], "1e+308"),
        (["--scales", "1e-4,1e-300"], "1e-300"),
    ],
)
def test_run_refuses_settings_it_cannot_measure_with_exit_2(tmp_path, capsys, no_measuring, flags, named):
    assert main(["run", "--quick", "--no-progress", *flags, "--out", str(tmp_path / "r")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


class _Exploding:
    """A candidate with the Optimizer interface whose step raises."""

    def __init__(self, params: object, **hyper: object) -> None:
        self.param_groups: list[dict[str, object]] = [{"params": list(params), **hyper}]  # type: ignore[call-overload]
        self.state: dict[object, object] = {}

    def step(self) -> None:
        raise RuntimeError("kaboom")

    def zero_grad(self) -> None:
        pass

    def state_dict(self) -> dict[str, object]:
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        pass


def test_run_with_a_candidate_that_raises_exits_3_and_writes_nothing(tmp_path, capsys, monkeypatch):
    module = types.ModuleType("exploding_candidate")
    module.Exploding = _Exploding  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "exploding_candidate", module)
    out = tmp_path / "report"
    assert main(["run", *FAST, "--optimizer", "exploding_candidate:Exploding", "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "kaboom" in err and "RuntimeError" in err and "c0-m0-wd0-max0" in err
    assert not out.exists() and not _leftovers(tmp_path, out)


# --- closed pipes ---------------------------------------------------------------------------------------


def _into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conformance ARGS`` with stdout a pipe whose reader has already gone (``| head``)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "conformance", *args],
            cwd=ROOT,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        os.close(write)


def test_help_into_a_closed_pipe_exits_0_quietly():
    done = _into_a_closed_pipe("--help")
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_check_verbose_into_a_closed_pipe_keeps_the_checks_status():
    done = _into_a_closed_pipe("check", "-v", "--cases", "c0-m0-wd0-max0-float32-cpu-foreach0", "--budget", "0")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


def test_compare_into_a_closed_pipe_keeps_the_regression_status(tmp_path):
    base, cur = tiny_run(), tiny_run()
    cur["cases"][0]["lockstep"]["bitwise_equal"] = 0
    (tmp_path / "b.json").write_text(dumps(base))
    (tmp_path / "c.json").write_text(dumps(cur))
    done = _into_a_closed_pipe("compare", str(tmp_path / "b.json"), str(tmp_path / "c.json"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr


# --- without torch ---------------------------------------------------------------------------------------

#: Run the command line with ``import torch`` failing as it does where torch is not installed.
_NO_TORCH = (
    "import sys; sys.modules['torch'] = None; from conformance.cli import main; status = main(sys.argv[1:]); "
    "heavy = sorted(m for m in ('torch', 'hypothesis', 'matplotlib', 'lucid', 'jsonschema') if sys.modules.get(m)); "
    "print('heavy modules:', heavy, file=sys.stderr); raise SystemExit(status)"
)


@pytest.mark.parametrize("command", [[], ["run"], ["check"], ["compare"], ["merge"]])
def test_help_works_without_torch_and_imports_nothing_heavy(command):
    done = _python("-c", _NO_TORCH, *command, "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: python -m conformance" in done.stdout
    assert done.stderr.strip() == "heavy modules: []"


@pytest.mark.parametrize(("command", "extra"), [(["run", "--quick"], "report"), (["check"], "test")])
def test_a_command_without_torch_names_the_extra_to_install(tmp_path, command, extra):
    done = _python("-c", _NO_TORCH, *command, *(["--out", str(tmp_path / "r")] if command[0] == "run" else []))
    assert done.returncode == 2, done.stderr
    assert f"torch is not installed: pip install 'lucid-rmsprop[{extra}]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()


def test_compare_needs_no_torch(tmp_path, tiny_result):
    path = tmp_path / "r.json"
    path.write_text(dumps(tiny_result))
    done = _python("-c", _NO_TORCH, "compare", str(path), str(path))
    assert done.returncode == 0, done.stderr
    assert "OK: no drift" in done.stdout
