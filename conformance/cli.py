"""Command line of the conformance harness: ``python -m conformance COMMAND``.

Exit status, every command: 0 agreement (no regression for ``compare``), 1 a
numerical disagreement (a drift regression for ``compare``), 2 bad usage or
unreadable input, 3 the candidate could not run, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from conformance.commands import check, compare, merge, run

__all__ = ["main"]

#: One module per subcommand, each with ``register(subparsers)``.  Importing them
#: imports neither torch nor the harness (each command imports those when it runs),
#: so ``--help`` works, fast, where only the base package is installed.
COMMANDS = (run, compare, merge, check)

#: Third-party modules the commands import when they run: a missing one is
#: named with the extra that installs it, not shown as a traceback.
OPTIONAL_MODULES = ("torch", "matplotlib", "tqdm", "jsonschema", "hypothesis")


class _PipeGuard:
    """A stand-in for ``sys.stdout`` / ``sys.stderr`` that survives a reader going away (``| head``).

    The first write or flush that meets a closed pipe points the stream's file
    descriptor at ``os.devnull`` and drops that output and all that follows,
    so the command runs on and exits with the status it would have had
    (not 1, nor 120 from a failed flush at exit, nor a BrokenPipeError traceback).
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._broken = False

    def _silence(self) -> None:
        self._broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())  # also quiets the interpreter's own flush at exit
            finally:
                os.close(devnull)
        except (OSError, ValueError, AttributeError):  # a stream without a file descriptor (tests)
            pass

    def write(self, text: str) -> int:
        """Write ``text``, or drop it once the reader has gone."""
        if not self._broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._silence()
        return len(text)

    def flush(self) -> None:
        """Flush, or do nothing once the reader has gone."""
        if not self._broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._silence()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _missing_extra(err: ModuleNotFoundError, extra: str) -> str | None:
    """Return the message for a command whose optional dependency is missing (None if ``err`` is another)."""
    name = (err.name or "").partition(".")[0]
    if name not in OPTIONAL_MODULES:
        return None
    return f"{name} is not installed: pip install 'lucid-rmsprop[{extra}]'"


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2), already printed by argparse
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 2)
    try:
        return int(args.func(args))
    except ModuleNotFoundError as err:
        message = _missing_extra(err, args.extra)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return the exit status (never raises ``SystemExit``).

    Ctrl-C prints one line and returns 130 (each command has removed what it
    had staged); a closed standard output does not change the status.
    """
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _PipeGuard(sys.stdout), _PipeGuard(sys.stderr)  # type: ignore[assignment]
    try:
        try:
            status = _dispatch(argv)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            status = 130
        sys.stdout.flush()
        sys.stderr.flush()
        return status
    finally:
        sys.stdout, sys.stderr = saved
