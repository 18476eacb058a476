"""A candidate that runs in a worker process under another interpreter (``--candidate-python PATH``).

For an implementation that cannot share this process: its import name
collides with this project's (lucid-dl is ``lucid``), it needs another Python
or another torch, or it may crash the interpreter.  :class:`WorkerAdapter`
starts ``PATH conformance/adapters/wire.py`` (the worker imports only the
standard library, NumPy and the candidate), asks it to import the candidate,
and then drives each :class:`WorkerCandidate` through requests over the
worker's standard input and output: parameters, gradients, buffers and
state_dicts travel as ``.npy`` arrays, never as pickles (:mod:`conformance.adapters.wire`).

What the worker drives is a class with an optimizer object, either Lucid's
interface (NumPy arrays; parameters from the candidate package's
``nn.Parameter``) or a ``torch.optim.Optimizer`` subclass (on the CPU).
Gradients arrive in the worker contiguous, whatever their layout in the stream.

A worker that exits (a segfault, ``os._exit``) or does not answer within the
timeout is killed and reported as the candidate failing to run
(:class:`~conformance.candidate.CandidateError`, exit status 3), naming the
request it was answering; the next candidate built starts a new worker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from conformance.adapters import wire
from conformance.candidate import (
    REQUIRED_ATTRIBUTES,
    WORKER_TIMEOUT,
    CandidateError,
    CandidateSpecError,
    Group,
    Support,
    worker_adapter,
)
from conformance.rmsprop import BUFFERS

__all__ = ["DEFAULT_TIMEOUT", "WorkerAdapter", "WorkerCandidate", "WorkerCrashError", "WorkerRaisedError", "WorkerSpec"]

#: Seconds the worker may take to answer one request (its start and the candidate's import included).
DEFAULT_TIMEOUT = WORKER_TIMEOUT

#: The worker's program: run by path, so the harness's own packages are not on its ``sys.path``.
WORKER_PROGRAM = Path(wire.__file__).resolve()


class WorkerRaisedError(CandidateError):
    """The candidate raised inside the worker; ``remote_type`` is its exception's type name."""

    def __init__(
        self, remote_type: str, message: str, where: str, remote_traceback: str, parameter: int | None = None
    ) -> None:
        super().__init__(f"{message} [at {where}]")
        self.remote_type = remote_type
        self.where = where
        #: The index of the parameter the candidate was working on when it raised (None: it did not say).
        self.parameter = parameter
        self.remote_traceback = remote_traceback


class WorkerCrashError(CandidateError):
    """The worker exited, or did not answer in time, while it served a request."""


@dataclass(frozen=True)
class WorkerSpec:
    """What to run in a worker: the candidate's ``module:attr`` there, the name to give it, and what it supports.

    A module of this project that names such a spec (``conformance.adapters.lucid_dl:rmsprop``)
    becomes a :class:`WorkerAdapter` once an interpreter is given.
    """

    candidate: str
    name: str | None = None
    supports: Support | None = None
    #: Shown when no interpreter is given: how to make one that has the candidate.
    install: str = ""


class _Process:
    """One worker process and the pipe to it.

    The worker runs in a session of its own (so that killing it kills what it
    started, too), with its standard error in a file (so that it can never
    block on a full pipe).
    """

    def __init__(self, python: str, timeout: float) -> None:
        self.python = python
        self.timeout = timeout
        self.closed = False
        self.stderr = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                [_absolute(python), str(WORKER_PROGRAM)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                cwd=tempfile.gettempdir(),  # not this project's root: its lucid must not shadow the candidate's
                env=_worker_environment(),
                start_new_session=True,
            )
        except OSError as err:
            self.stderr.close()
            raise CandidateSpecError(f"--candidate-python {python!r} cannot be run: {err}") from err
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.fd = self.proc.stdin, self.proc.stdout.fileno()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.pending = bytearray()  # appended to and consumed from the front: both amortised O(1)
        _LIVE.add(self)

    def _fill(self, what: str, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self.selector.select(remaining):
            self.kill()
            raise WorkerCrashError(f"the worker ({self.python}) did not answer {what} within {self.timeout:g} s")
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            ended, words = self._ended(), self._last_words()
            self.kill()
            raise WorkerCrashError(f"the worker ({self.python}) {ended} while answering {what}{words}")
        self.pending += chunk

    def request(self, what: str, message: dict[str, Any]) -> Any:
        """Send ``message``, wait for the answer; return its result or raise what the candidate raised.

        Raises
        ------
        WorkerCrashError
            If the worker has ended, ends or hangs while answering, or answers
            with something that is not a reply (it is then killed: what follows
            in the pipe can no longer be trusted to answer the next request).
        WorkerRaisedError
            If the candidate raised.
        """
        if self.closed:
            raise WorkerCrashError(f"the worker ({self.python}) has ended; it cannot answer {what}")
        try:
            wire.write_message(self.stdin, message)
        except OSError as err:
            ended, words = self._ended(), self._last_words()
            self.kill()
            raise WorkerCrashError(f"the worker ({self.python}) {ended} before {what} ({err}){words}") from None
        deadline = time.monotonic() + self.timeout
        scanned = 0

        def read_line() -> bytes:
            nonlocal scanned
            while (end := self.pending.find(b"\n", scanned)) < 0:
                scanned = len(self.pending)
                self._fill(what, deadline)
            line = bytes(self.pending[: end + 1])
            del self.pending[: end + 1]
            return line

        def read_exactly(n: int) -> bytes:
            while len(self.pending) < n:
                self._fill(what, deadline)
            data = bytes(self.pending[:n])
            del self.pending[:n]
            return data

        try:
            reply = wire.read_message(read_line, read_exactly)
            if not isinstance(reply, dict) or "ok" not in reply:
                raise ValueError(f"not a reply: {str(reply)[:80]}")
        except (ValueError, KeyError, TypeError, IndexError) as err:  # bytes that are not a message
            self.kill()
            raise WorkerCrashError(
                f"the worker ({self.python}) answered {what} with something that is not a reply ({err}); "
                "was something written to its standard output?"
            ) from None
        if not reply["ok"]:
            if reply.get("usage"):
                raise CandidateSpecError(f"{reply['type']}: {reply['message']}")
            raise WorkerRaisedError(
                reply["type"], reply["message"], reply["where"], reply["traceback"], reply.get("parameter")
            )
        return reply["result"]

    def _ended(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "closed its output"
        if code < 0:
            try:
                return f"died of {signal.Signals(-code).name}"
            except ValueError:
                return f"died of signal {-code}"
        return f"exited with status {code}"

    def _last_words(self) -> str:
        try:
            size = self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, size - 4096))
            text = self.stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        lines = text.strip().splitlines()[-3:]
        return f"; its last words: {' | '.join(lines)}" if lines else ""

    @property
    def alive(self) -> bool:
        """Whether the worker can still answer."""
        return not self.closed and self.proc.poll() is None

    def kill(self) -> None:
        """End the worker and all it started at once, and close its pipes."""
        if self.closed:
            return
        self.closed = True
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:  # it ended meanwhile
                pass
            self.proc.wait()
        self.selector.close()
        for stream in (self.stdin, self.proc.stdout, self.stderr):
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Close the pipe, so that the worker ends by itself; then make sure it has."""
        if self.closed:
            return
        with contextlib.suppress(OSError, ValueError):
            self.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.kill()


#: The workers not yet ended: ended at exit, while the modules they use are still there.
_LIVE: weakref.WeakSet[_Process] = weakref.WeakSet()


@atexit.register
def _end_workers() -> None:
    for process in list(_LIVE):
        process.kill()


def _absolute(python: str) -> str:
    """``python`` as a path that does not depend on the working directory (the worker runs in another)."""
    if os.sep in python or (os.altsep and os.altsep in python):
        return os.path.abspath(python)
    return shutil.which(python) or python


def _worker_environment() -> dict[str, str]:
    """Return this process's environment, ``PYTHONPATH``'s entries made absolute (the worker runs elsewhere)."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
    return env


class WorkerAdapter:
    """The :class:`~conformance.candidate.Adapter` of a candidate that runs in a worker process.

    Parameters
    ----------
    python : str
        The interpreter to run it under (its environment has the candidate installed).
    spec : WorkerSpec or str
        The candidate's ``module:attr`` in that environment (or a spec naming it).
    timeout : float, default :data:`DEFAULT_TIMEOUT`
        Seconds the worker may take to answer one request before it is killed.
    info : dict, optional
        What an earlier worker said of the candidate (a copy of this adapter in
        another process): then no worker starts until the first candidate is built.

    Raises
    ------
    CandidateSpecError
        If ``python`` cannot be run, or the worker cannot find the candidate
        (no such module or attribute, not a class).
    CandidateError
        If the worker dies while starting, the candidate's module raises on
        import, or the class lacks a method the harness calls.
    """

    optimizer_class = None

    def __init__(
        self,
        python: str,
        spec: WorkerSpec | str,
        timeout: float = DEFAULT_TIMEOUT,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.python = python
        self.spec = spec if isinstance(spec, WorkerSpec) else WorkerSpec(spec)
        self.timeout = timeout
        self.name = self.spec.name or self.spec.candidate.replace(":", ".")
        self._process: _Process | None = None
        self._dropped: list[int] = []
        self.info = info = info if info is not None else self._start()
        self.version = str(info["version"])
        self.interpreter = f"Python {info['python']}, NumPy {info['numpy']} ({info['executable']})"
        self.supports = self.spec.supports or Support(maximize=bool(info["maximize"]), object_api=False)

    def __repr__(self) -> str:
        return f"WorkerAdapter({self.name} under {self.python})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt through the per-process cache, with what this worker said: a copy in a pool
        # process starts one worker there, on its first candidate, not one per unpickling.
        return worker_adapter, (self.python, self.spec, self.timeout, self.info)

    def _start(self) -> dict[str, Any]:
        if self._process is not None:  # a worker that died (or hung and was killed): free its pipes
            self._process.kill()
        self._process = _Process(self.python, self.timeout)
        self._dropped.clear()
        hello = {
            "op": "hello",
            "candidate": self.spec.candidate,
            "buffers": list(BUFFERS),
            "required": list(REQUIRED_ATTRIBUTES),
        }
        try:
            return self._process.request(f"the import of {self.spec.candidate}", hello)
        except CandidateSpecError as err:  # the worker found no such module, attribute or class
            self._process.close()
            raise CandidateSpecError(f"{self.python} cannot import {self.spec.candidate}: {err}") from None
        except WorkerRaisedError as err:
            self._process.close()
            raise CandidateError(
                f"importing {self.spec.candidate} under {self.python} raised {err.remote_type}: {err}"
            ) from None

    def request(self, what: str, message: dict[str, Any]) -> Any:
        """Send one request to the worker (with the handles dropped since the last one)."""
        assert self._process is not None
        message["drop"], self._dropped = self._dropped, []
        return self._process.request(what, message)

    def drop(self, handle: int, process: _Process) -> None:
        """Forget candidate ``handle`` (told to the worker with the next request, if it is still the same one)."""
        if process is self._process:
            self._dropped.append(handle)

    def create(self, params0: Sequence[NDArray[Any]], groups: Sequence[Group], device: str) -> WorkerCandidate:
        """Build the candidate in the worker (a new worker if the last one died)."""
        if device != "cpu":
            raise CandidateError(f"{self.name} runs in a worker process, on the CPU only (asked for {device})")
        if self._process is None or not self._process.alive:
            self._start()
        assert self._process is not None
        wire_groups = [{"params": list(g.params), "hyper": g.hyper.kwargs()} for g in groups]
        handle = self.request("create", {"op": "create", "params0": list(params0), "groups": wire_groups})
        return WorkerCandidate(self, self._process, handle)

    def close(self) -> None:
        """End the worker."""
        if self._process is not None:
            self._process.close()
            self._process = None

    def __del__(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None:
            process.kill()


class WorkerCandidate:
    """One optimizer object inside the worker, behind the :class:`~conformance.candidate.Candidate` protocol."""

    def __init__(self, adapter: WorkerAdapter, process: _Process, handle: int) -> None:
        self.adapter, self.process, self.handle = adapter, process, handle

    def __del__(self) -> None:
        self.adapter.drop(self.handle, self.process)

    def _call(self, op: str, *args: Any) -> Any:
        if self.process is not self.adapter._process:
            raise WorkerCrashError(f"the worker that held this {self.adapter.name} has ended")
        return self.adapter.request(op, {"op": op, "handle": self.handle, "args": list(args)})

    def step(self, grads: Sequence[NDArray[Any] | None]) -> None:
        """Take one step in the worker."""
        self._call("step", list(grads))

    def param(self, index: int) -> NDArray[Any]:
        """Return parameter ``index``'s values."""
        return self._call("param", index)

    def buffers(self, index: int) -> dict[str, NDArray[Any]]:
        """Return parameter ``index``'s buffers by torch's names."""
        return self._call("buffers", index)

    def write(self, index: int, param: NDArray[Any], buffers: dict[str, NDArray[Any]], step: float | None) -> None:
        """Overwrite parameter ``index``'s values, buffers and step count in the worker."""
        self._call("write", index, param, buffers, step)

    def set_hyper(self, group: int, name: str, value: float) -> None:
        """Set a hyperparameter of param group ``group`` in the worker."""
        self._call("set_hyper", group, name, value)

    def state_dict(self) -> dict[str, Any]:
        """Return the worker's state_dict (NumPy arrays, torch's layout)."""
        return self._call("state_dict")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict into the worker's optimizer."""
        self._call("load_state_dict", state_dict)
