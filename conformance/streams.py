"""Reproducible gradient streams: the inputs both optimizers are fed.

Each stream is fully determined by its arguments (a NumPy ``Generator`` seeded
with ``seed``), so a failing case can be replayed exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["STREAM_KINDS", "gradient_stream"]

STREAM_KINDS = ("normal", "zero", "constant", "signflip", "heavy")


def gradient_stream(
    kind: str, scale: float, shape: tuple[int, ...], dtype: Any, steps: int, seed: int
) -> list[NDArray[Any]]:
    """Return ``steps`` gradients of ``shape`` and ``dtype``.

    Parameters
    ----------
    kind : {"normal", "zero", "constant", "signflip", "heavy"}
        ``normal``: independent N(0, scale^2); ``zero``: all zeros;
        ``constant``: one fixed draw repeated (the centered variance then
        cancels towards zero); ``signflip``: a fixed draw whose sign alternates
        every step; ``heavy``: Student-t with 1.5 degrees of freedom (infinite
        variance).
    scale : float
        Typical magnitude.
    shape, dtype, steps, seed
        What to draw and from which seed.
    """
    rng = np.random.default_rng(seed)
    if kind == "normal":
        draws = [rng.standard_normal(shape) * scale for _ in range(steps)]
    elif kind == "zero":
        draws = [np.zeros(shape) for _ in range(steps)]
    elif kind == "constant":
        fixed = rng.standard_normal(shape) * scale
        draws = [fixed for _ in range(steps)]
    elif kind == "signflip":
        fixed = rng.standard_normal(shape) * scale
        draws = [fixed * (-1) ** i for i in range(steps)]
    elif kind == "heavy":
        draws = [rng.standard_t(1.5, shape) * scale for _ in range(steps)]
    else:
        raise ValueError(f"unknown stream kind {kind!r}; expected one of {STREAM_KINDS}")
    return [np.asarray(d, dtype=dtype) for d in draws]
