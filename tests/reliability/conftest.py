"""Fixtures for the reliability tests: byte-exact snapshots and the bad-input tally.

Every test here that feeds bad input counts what it tried and what was handled
as required (refused with the right error type, a message naming the bad key or
value, nothing changed; or accepted and then identical to the equivalent valid
input).  The counts go to the ``bad_inputs`` user property, which
``tests/conftest.py`` sums into a terminal summary section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from lucid.optim import Optimizer
from lucid.tensor import Tensor


def _encode(value: Any) -> Any:
    """A comparable, byte-exact stand-in for a value (arrays by dtype, shape and bytes)."""
    if isinstance(value, np.ndarray):
        return ("ndarray", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return ("dict", tuple((repr(k), _encode(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_encode(v) for v in value))
    return (type(value).__name__, repr(value))


def snapshot(opt: Optimizer, params: Iterable[Tensor] = ()) -> Any:
    """Everything a refused call must leave unchanged, byte for byte.

    The optimizer's state_dict (hyperparameters with their types, every state
    array's dtype, shape and bytes), which parameter objects it holds, and the
    parameters' data and gradients.
    """
    return (
        _encode(opt.state_dict()),
        _encode(opt.defaults),
        tuple(tuple(id(p) for p in g["params"]) for g in opt.param_groups),
        tuple(sorted(id(p) for p in opt.state)),
        tuple((_encode(p.data), _encode(p.grad)) for p in params),
    )


class Tally:
    """Bad inputs tried and handled as required, for one test."""

    def __init__(self) -> None:
        self.tried = 0
        self.handled = 0

    @contextmanager
    def case(self) -> Iterator[None]:
        """Count one case as tried, and as handled if the block finishes without an error."""
        self.tried += 1
        yield
        self.handled += 1


@pytest.fixture
def tally(record_property) -> Iterator[Tally]:
    counts = Tally()
    yield counts
    record_property("bad_inputs", (counts.tried, counts.handled))


@pytest.fixture
def snap() -> Callable[..., Any]:
    """:func:`snapshot`, as a fixture (test modules cannot import a conftest)."""
    return snapshot


@pytest.fixture
def encode() -> Callable[[Any], Any]:
    """A byte-exact, comparable stand-in for any value (see :func:`_encode`)."""
    return _encode
