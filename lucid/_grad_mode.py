"""Thread-local switch that turns graph recording on and off (``lucid.no_grad``)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["enable_grad", "is_grad_enabled", "no_grad"]

_state = threading.local()


def is_grad_enabled() -> bool:
    """Return whether operations on tensors currently record an autograd graph."""
    return getattr(_state, "enabled", True)


@contextlib.contextmanager
def _grad_mode(enabled: bool) -> Iterator[None]:
    previous = is_grad_enabled()
    _state.enabled = enabled
    try:
        yield
    finally:
        _state.enabled = previous


def enable_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager inside which graphs are recorded, even within ``no_grad``."""
    return _grad_mode(True)


def no_grad() -> contextlib.AbstractContextManager[None]:
    """Context manager inside which no autograd graph is recorded.

    Examples
    --------
    >>> import lucid
    >>> w = lucid.tensor([1.0, 2.0], requires_grad=True)
    >>> with lucid.no_grad():
    ...     y = w * 2
    >>> y.requires_grad
    False
    """
    return _grad_mode(False)
