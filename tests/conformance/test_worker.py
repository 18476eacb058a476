"""A candidate in a worker process (``--candidate-python``): the same numbers as in-process, and crashes named.

torch's RMSprop and Lucid's, run in a worker under this very interpreter,
must agree with torch bit for bit, as they do in-process: the pipe
(``.npy`` arrays) adds no rounding and loses no state.  A worker that dies of
SIGSEGV, hangs past the timeout, or whose candidate raises is "could not
run" (exit status 3), naming the signal, the request and the step; an
interpreter that cannot be run, or a module the worker cannot import, is a
usage error (exit status 2).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conformance.adapters import wire
from conformance.adapters.worker import WorkerAdapter, WorkerCrashError, WorkerRaisedError
from conformance.candidate import CandidateError, CandidateSpecError, Group, resolve
from conformance.checks import run_checks
from conformance.lockstep import run_lockstep
from conformance.matrix import case_by_id
from conformance.probes import probe_scenarios
from conformance.rmsprop import Hyper
from conformance.runners import CandidateStepError, LockstepPair
from conformance.streams import gradient_stream

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PYTHON = sys.executable


@pytest.fixture
def test_candidates_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the worker import the candidates of ``crashing.py`` (it inherits PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", str(HERE))


@pytest.mark.parametrize("spec", ["torch.optim:RMSprop", "lucid.optim:RMSprop"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_worker_computes_what_the_process_computes(spec: str, dtype: type) -> None:
    """20 free steps, two groups, an lr change: parameters, buffers and state_dict identical bit for bit."""
    hypers = [Hyper(lr=1e-2, alpha=0.9, momentum=0.9, centered=True, weight_decay=1e-2), Hyper(lr=3e-3)]
    groups = [Group((0, 2), hypers[0]), Group((1,), hypers[1])]
    rng = np.random.default_rng(3)
    shapes = [(5, 7), (), (9,)]
    params0 = [np.asarray(rng.standard_normal(shape), dtype=dtype) for shape in shapes]
    here = resolve(spec).create(params0, groups, "cpu")
    there = resolve(spec, python=PYTHON).create(params0, groups, "cpu")
    for step in range(20):
        # Parameter 0 has no gradient on steps 3, 10 and 17.
        grads = [
            None if i == 0 and step % 7 == 3 else np.asarray(rng.standard_normal(s), dtype)
            for i, s in enumerate(shapes)
        ]
        if step == 10:
            here.set_hyper(0, "lr", 0.02)
            there.set_hyper(0, "lr", 0.02)
        here.step(grads)
        there.step(grads)
    for i in range(len(params0)):
        got, want = there.param(i), here.param(i)
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        theirs, ours = there.buffers(i), here.buffers(i)
        assert sorted(theirs) == sorted(ours) and all(theirs[k].tobytes() == ours[k].tobytes() for k in ours)
    sd_there, sd_here = there.state_dict(), here.state_dict()
    assert sd_there["param_groups"] == sd_here["param_groups"]
    assert sorted(sd_there["state"]) == sorted(sd_here["state"]) == [0, 1, 2]
    for index, ours in sd_here["state"].items():
        theirs = sd_there["state"][index]
        assert sorted(theirs) == sorted(ours) and float(theirs["step"]) == float(ours["step"])
        for key in set(ours) - {"step"}:
            assert theirs[key].dtype == ours[key].dtype and theirs[key].tobytes() == ours[key].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_torch_in_a_worker_agrees_with_torch_bit_for_bit(dtype: type) -> None:
    hyper = Hyper(lr=1e-2, alpha=0.9, momentum=0.9, centered=True, weight_decay=1e-2)
    params0 = [np.random.default_rng(3).standard_normal((5, 7)).astype(dtype), np.asarray(0.5, dtype=dtype)]
    streams = [gradient_stream("normal", 1.0, np.shape(p), dtype, steps=20, seed=4 + i) for i, p in enumerate(params0)]
    adapter = resolve("torch.optim:RMSprop", python=PYTHON)
    result = run_lockstep(params0, hyper, zip(*streams), foreach=False, candidate=adapter)
    assert result.elements == 20 * 36 and result.bitwise_fraction == 1.0, result.worst


def test_worker_passes_every_check_on_the_probes() -> None:
    """Groups, schedules, state_dict hand-overs both ways, free runs: torch in a worker passes them all."""
    adapter = resolve("torch.optim:RMSprop", python=PYTHON)
    case = case_by_id("c1-m1-wd1-max1-float64-cpu-foreach0-cap0-tlr0")
    outcomes = [o for s in probe_scenarios(case, seed=0) for o in run_checks(s, adapter)]
    judged = [o for o in outcomes if not o.unsupported]
    assert len(judged) >= 10 and all(o.passed for o in judged), [str(o) for o in judged if not o.passed]
    assert {o.check for o in judged} >= {"lockstep", "freerun", "torch_to_candidate", "candidate_to_torch"}


def test_the_pipe_carries_arrays_exactly() -> None:
    """``.npy`` over the pipe: dtype, shape, every bit (NaN payloads, -0.0, subnormals), int keys; no pickles."""
    values = np.array([np.nan, -0.0, 5e-324, np.inf, 1 / 3])
    tree = {
        "state": {0: {"step": 3.0, "square_avg": values, "z": np.zeros((3, 0), np.float32)}},
        "c": np.array([1 + 2j], np.complex64),
        "s": np.asarray(np.float32(2.5)),
        "t": np.arange(12.0).reshape(3, 4)[:, ::2],
    }
    arrays: list[np.ndarray] = []
    back = wire.decode(wire.encode(tree, arrays), arrays)
    assert list(back["state"]) == [0]
    for got, want in [(back["state"][0]["square_avg"], values), (back["c"], tree["c"]), (back["s"], tree["s"])]:
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()
    np.testing.assert_array_equal(back["t"], tree["t"])
    import io

    with pytest.raises(ValueError, match="pickle"):
        wire.write_message(io.BytesIO(), {"x": np.array([object()], dtype=object)})


def test_a_segfault_is_could_not_run_naming_the_signal(test_candidates_importable: None) -> None:
    adapter = WorkerAdapter(PYTHON, "crashing:SegfaultsInStep")
    params0 = [np.ones(4, np.float32)]
    pair = LockstepPair(params0, Hyper(), foreach=False, candidate=adapter)
    pair.step([np.ones(4, np.float32)])
    pair.step([np.ones(4, np.float32)])
    with pytest.raises(CandidateStepError, match=r"WorkerCrashError at step 2: .*died of SIGSEGV while answering step"):
        pair.step([np.ones(4, np.float32)])
    # The next candidate gets a new worker, and runs.
    again = adapter.create(params0, [Group((0,), Hyper())], "cpu")
    again.step([np.ones(4, np.float32)])
    assert again.param(0).shape == (4,)


def test_a_hang_is_killed_after_the_timeout(test_candidates_importable: None) -> None:
    adapter = WorkerAdapter(PYTHON, "crashing:HangsInStep", timeout=3.0)
    candidate = adapter.create([np.ones(2)], [Group((0,), Hyper())], "cpu")
    with pytest.raises(WorkerCrashError, match=r"did not answer step within 3 s"):
        candidate.step([np.ones(2)])
    assert adapter._process is not None and not adapter._process.alive


def test_a_raise_in_the_worker_names_its_type_and_line(test_candidates_importable: None) -> None:
    adapter = WorkerAdapter(PYTHON, "crashing:RaisesOnZeroD")
    pair = LockstepPair([np.ones(3), np.asarray(1.0)], Hyper(), foreach=False, candidate=adapter)
    with pytest.raises(CandidateStepError) as caught:
        pair.step([np.ones(3), np.asarray(1.0)])
    message = str(caught.value)
    assert "raised IndexError at step 0: tuple index out of range [at " in message
    assert "crashing.py" in message and "#1 float64[] group 0" in message
    assert isinstance(caught.value.__cause__, WorkerRaisedError)


def test_bad_interpreters_and_modules_are_usage_errors() -> None:
    with pytest.raises(CandidateSpecError, match="cannot be run"):
        resolve("lucid.optim:RMSprop", python="/nonexistent/bin/python")
    with pytest.raises(CandidateSpecError, match="cannot import no_such_module:X"):
        resolve("no_such_module:X", python=PYTHON)
    with pytest.raises(CandidateSpecError, match=r"--candidate-python PATH .*pip install lucid-dl"):
        resolve("conformance.adapters.lucid_dl:rmsprop")
    with pytest.raises(CandidateError, match="CPU only"):
        resolve("torch.optim:RMSprop", python=PYTHON).create([np.ones(2)], [Group((0,), Hyper())], "cuda")


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(HERE), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [PYTHON, "-m", "conformance", "check", "--budget", "0", "--jobs", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_cli_crash_exit_3_with_a_replay_through_the_worker() -> None:
    case = "c0-m0-wd0-max0-float32-cpu-foreach0-cap0-tlr0"
    done = _check("--optimizer", "crashing:SegfaultsInStep", "--candidate-python", PYTHON, "--cases", case)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "died of SIGSEGV" in done.stdout
    assert f"--optimizer crashing:SegfaultsInStep --candidate-python {PYTHON}" in done.stdout


def test_cli_usage_errors_exit_2() -> None:
    done = _check("--optimizer", "lucid.optim:RMSprop", "--candidate-python", "/nonexistent/python")
    assert done.returncode == 2 and "cannot be run" in done.stderr, done.stderr
    done = _check("--candidate-python", PYTHON, "--candidate-timeout", "0")
    assert done.returncode == 2 and "positive finite" in done.stderr, done.stderr


@pytest.mark.parametrize("where", ["in-process", "worker"])
def test_the_parameter_that_raised_is_named(where: str, test_candidates_importable: None) -> None:
    """The exception's traceback holds the parameter the candidate's loop was on: the message names it."""
    sys.path.insert(0, str(HERE))
    try:
        adapter = resolve("crashing:IndexesZeroD", python=PYTHON if where == "worker" else None)
    finally:
        sys.path.remove(str(HERE))
    params0 = [np.ones(3), np.asarray(1.0), np.ones((2, 2))]
    pair = LockstepPair(params0, Hyper(), foreach=False, candidate=adapter)
    with pytest.raises(
        CandidateStepError,
        match=r"raised IndexError at step 0 \(its traceback holds parameter #1 float64\[\] group 0\): ",
    ):
        pair.step([np.ones(3), np.asarray(1.0), np.ones((2, 2))])


def test_what_the_candidate_writes_to_standard_output_stays_out_of_the_pipe(test_candidates_importable: None) -> None:
    """A reply-shaped line written to fd 1 by the candidate goes to stderr; the numbers still come back right."""
    params0 = [np.linspace(-1, 1, 5)]
    here = resolve("lucid.optim:RMSprop").create(params0, [Group((0,), Hyper())], "cpu")
    there = WorkerAdapter(PYTHON, "crashing:WritesToStandardOutput").create(params0, [Group((0,), Hyper())], "cpu")
    for _ in range(3):
        here.step([np.ones(5)])
        there.step([np.ones(5)])
    assert there.param(0).tobytes() == here.param(0).tobytes()


def test_a_garbled_reply_kills_the_worker_rather_than_answer_late(test_candidates_importable: None) -> None:
    adapter = WorkerAdapter(PYTHON, "lucid.optim:RMSprop")
    candidate = adapter.create([np.ones(3), np.full(2, 5.0)], [Group((0, 1), Hyper())], "cpu")
    adapter._process.pending += b"not a message\n"  # as if something had written into the pipe
    with pytest.raises(WorkerCrashError, match="not a reply"):
        candidate.param(0)
    with pytest.raises(WorkerCrashError, match="has ended"):
        candidate.param(1)  # not the reply meant for param(0)
    fresh = adapter.create([np.ones(3), np.full(2, 5.0)], [Group((0, 1), Hyper())], "cpu")
    np.testing.assert_array_equal(fresh.param(1), np.full(2, 5.0))


def test_after_a_timeout_the_candidate_says_its_worker_ended(test_candidates_importable: None) -> None:
    adapter = WorkerAdapter(PYTHON, "crashing:HangsInStep", timeout=2.0)
    candidate = adapter.create([np.ones(2)], [Group((0,), Hyper())], "cpu")
    with pytest.raises(WorkerCrashError, match="within 2 s"):
        candidate.step([np.ones(2)])
    with pytest.raises(WorkerCrashError, match="has ended"):
        candidate.param(0)


def test_large_arrays_cross_the_pipe() -> None:
    """32 MiB each way (a parameter of 2**22 float64), exactly."""
    values = np.random.default_rng(0).standard_normal(2**22)
    candidate = resolve("torch.optim:RMSprop", python=PYTHON).create([values], [Group((0,), Hyper())], "cpu")
    assert candidate.param(0).tobytes() == values.tobytes()


def test_a_copy_in_another_process_reuses_the_cached_adapter() -> None:
    """Unpickling (a pool process's copy) goes through the cache: one worker per process, not per case."""
    adapter = resolve("torch.optim:RMSprop", python=PYTHON)
    assert pickle.loads(pickle.dumps(adapter)) is adapter


def test_a_relative_interpreter_path_is_taken_from_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(PYTHON).parent)
    adapter = WorkerAdapter(os.path.join(".", Path(PYTHON).name), "torch.optim:RMSprop")
    assert adapter.version.startswith("2.")


def test_the_worker_does_not_see_this_projects_adapters_folder() -> None:
    """Run by path, the worker drops its own folder from sys.path: ``worker`` here is nothing."""
    with pytest.raises(CandidateSpecError, match="no module 'worker'"):
        WorkerAdapter(PYTHON, "worker:WorkerAdapter")


def test_a_missing_dependency_of_the_candidate_is_its_failure_not_a_usage_error(
    test_candidates_importable: None,
) -> None:
    with pytest.raises(CandidateError, match="no_such_dependency_of_the_candidate") as caught:
        WorkerAdapter(PYTHON, "needs_a_missing_module:RMSprop")
    assert not isinstance(caught.value, CandidateSpecError)


def test_timeout_without_a_worker_is_a_usage_error() -> None:
    done = _check("--candidate-timeout", "5")
    assert done.returncode == 2 and "--candidate-timeout applies to a worker process" in done.stderr, done.stderr
