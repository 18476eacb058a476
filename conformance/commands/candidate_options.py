"""The options that name the candidate, shared by ``check`` and ``run``: ``--optimizer`` and ``--candidate-python``."""

from __future__ import annotations

import argparse
import math

from conformance.candidate import (
    CANDIDATE_SETTING,
    PYTHON_SETTING,
    WORKER_TIMEOUT,
    Adapter,
    CandidateSpecError,
    chosen_candidate,
    chosen_python,
)

__all__ = ["add_candidate_options", "resolve_candidate"]


def add_candidate_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--optimizer`` and ``--candidate-python`` (defaults from the environment settings)."""
    parser.add_argument(
        "--optimizer",
        default=chosen_candidate(),
        metavar="MODULE:ATTR",
        help="the RMSprop under test: a torch.optim.Optimizer subclass, a class with Lucid's Optimizer interface, "
        "an optax function (optax:rmsprop) or an adapter, e.g. conformance.examples.textbook:TextbookRMSprop "
        f"(default ${CANDIDATE_SETTING}, else {chosen_candidate()})",
    )
    parser.add_argument(
        "--candidate-python",
        default=chosen_python(),
        metavar="PATH",
        help="run the candidate in a worker process under this interpreter (an environment where it is "
        "installed: another Python, another torch, an import name that collides with this project's); "
        f"default ${PYTHON_SETTING}, else in this process",
    )
    parser.add_argument(
        "--candidate-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="with --candidate-python: seconds the worker may take to answer one request before it is "
        f"killed and the candidate reported as not running (default {WORKER_TIMEOUT:g})",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"the timeout must be a positive finite number of seconds, got {text!r}")
    return value


def resolve_candidate(args: argparse.Namespace) -> Adapter:
    """Return the adapter ``args`` name (:func:`conformance.candidate.resolve`); raises as it does."""
    from conformance.candidate import resolve

    if args.candidate_timeout is not None and not args.candidate_python:
        raise CandidateSpecError("--candidate-timeout applies to a worker process: give --candidate-python too")
    return resolve(args.optimizer, python=args.candidate_python, timeout=args.candidate_timeout)
