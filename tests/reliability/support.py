"""Helpers shared by the reliability tests (imported as ``support``: pytest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any

import numpy as np

from lucid.nn import Parameter
from lucid.optim import RMSprop

SHAPES = ((2, 3), (4,), ())


def trained(dtype: Any = np.float64) -> tuple[list[Parameter], RMSprop]:
    """Two groups, state after two steps; group 1 has momentum and centering (all four state keys)."""
    rng = np.random.default_rng(0)
    params = [Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
    opt = RMSprop([{"params": params[:2]}, {"params": params[2:], "momentum": 0.9, "centered": True}], lr=0.01)
    for _ in range(2):
        for p in params:
            p.grad = rng.standard_normal(p.shape).astype(dtype)
        opt.step()
    return params, opt


def same(a: Any, b: Any, *, ordered: bool = True) -> bool:
    """Equal types, dtypes, shapes and bytes, recursively; NaN equals NaN.

    ``ordered`` also requires equal dict key order (a file round trip keeps it;
    a loaded state_dict's group keys may come in another order).
    """
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes())
    if isinstance(a, dict):
        keys_match = list(a) == list(b) if ordered else set(a) == set(b)
        return type(b) is dict and keys_match and all(same(a[k], b[k], ordered=ordered) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y, ordered=ordered) for x, y in zip(a, b))
    return type(a) is type(b) and (a == b or (a != a and b != b))
