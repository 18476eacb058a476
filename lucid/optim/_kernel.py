"""Which accelerator runs the fast step: numba's compiled kernel where it works, else NumPy.

The compiled kernel (:mod:`lucid.optim._kernel_numba`) is optional: ``pip install
'lucid-rmsprop[fast]'`` brings numba.  It is imported lazily, by the first step
that asks for it, never by ``import lucid``.  The choice, in order:

1. ``RMSprop.accelerator`` (a class or instance attribute): ``"auto"``,
   ``"numba"`` or ``"numpy"``; None (the default) defers to
2. the environment variable ``LUCID_ACCELERATOR``, with the same values; unset
   means ``"auto"``.

``"auto"`` takes numba when it imports, compiles and passes a self-check
(the kernel against the NumPy reference on values that exercise every rounding
path, bit for bit), and NumPy otherwise; ``"numba"`` insists, and a step refuses
to run (changing nothing) with the reason when numba cannot; ``"numpy"`` never
imports numba.  The outcome, with its reason, is :class:`Accelerator`, which
``RMSprop.backend`` reports.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ACCELERATOR_ENV", "CHOICES", "Accelerator", "resolve_accelerator", "run_kernel"]

#: The environment variable that chooses the accelerator.
ACCELERATOR_ENV = "LUCID_ACCELERATOR"
#: The accepted values.
CHOICES = ("auto", "numba", "numpy")


@dataclass(frozen=True)
class Accelerator:
    """The path a step takes, and why.

    Attributes
    ----------
    name : str
        ``"numba"`` (the compiled one-pass kernel) or ``"numpy"`` (the blocked
        NumPy step).
    reason : str
        Why: what was asked for, and for NumPy under ``"auto"``, what kept
        numba from running.
    kernel : callable or None
        The compiled kernel, when ``name == "numba"``.
    """

    name: str
    reason: str
    kernel: Callable[..., None] | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


#: Stand-ins for the buffers a group's flags leave unused, one per dtype, never written.
_EMPTY = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}

_numba: Accelerator | None = None
_numba_lock = threading.Lock()


def resolve_accelerator(requested: str | None) -> Accelerator:
    """Return the accelerator for ``requested``, else ``$LUCID_ACCELERATOR``, else ``"auto"``.

    Raises
    ------
    ValueError
        If the choice is not one of :data:`CHOICES` (naming where it came from).
    RuntimeError
        If ``"numba"`` is asked for and numba cannot run (with the reason).
    """
    where, choice = "accelerator", requested
    if choice is None:
        where, choice = ACCELERATOR_ENV, os.environ.get(ACCELERATOR_ENV) or "auto"
    if choice not in CHOICES:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, CHOICES))}, got {choice!r}")
    if choice == "numpy":
        return Accelerator("numpy", f"{where}='numpy'")
    numba = _load_numba()
    if numba.kernel is None:
        if choice == "numba":
            raise RuntimeError(f"{where}='numba', but the numba kernel cannot run: {numba.reason}")
        return Accelerator("numpy", f"{where}={choice!r} and {numba.reason}")
    return numba


def _load_numba() -> Accelerator:
    """Import, compile and self-check the kernel, once per process; say why not where it fails."""
    global _numba
    with _numba_lock:
        if _numba is None:
            _numba = _try_numba()
        return _numba


def _try_numba() -> Accelerator:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numba's own warnings (caching, deprecations) are not the user's
            from numba import __version__ as numba_version

            from lucid.optim import _kernel_numba
    except ImportError as err:
        return Accelerator(
            "numpy", f"numba is not installed or does not import ({err}); pip install 'lucid-rmsprop[fast]'"
        )
    except Exception as err:  # numba refusing this NumPy, a broken llvmlite, ...
        return Accelerator("numpy", f"numba failed to import: {type(err).__name__}: {err}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mismatch = _self_check(_kernel_numba.rmsprop_kernel)
    except Exception as err:  # a compilation failure
        return Accelerator("numpy", f"numba {numba_version} failed to compile the kernel: {type(err).__name__}: {err}")
    if mismatch:
        return Accelerator("numpy", f"numba {numba_version}'s kernel differs from the reference: {mismatch}")
    note = f"; {_kernel_numba.CACHE_NOTE}" if _kernel_numba.CACHE_NOTE else ""
    return Accelerator("numba", f"numba {numba_version} kernel{note}", _kernel_numba.rmsprop_kernel)


def _self_check(kernel: Callable[..., None]) -> str:
    """Run the kernel and the reference on values that take every rounding path; describe a difference.

    Signed zeros, subnormals, float32 rounding-to-odd midpoints, float64
    products below the emulation's domain, infinities and NaN, every flag set
    and both dtypes (which also compiles both specialisations).  Empty when
    they agree bit for bit.
    """
    from lucid.optim._fast import _Hyper
    from lucid.optim.functional import rmsprop_update

    for dtype in (np.float32, np.float64):
        fi = np.finfo(dtype)
        special = [0.0, -0.0, 1.0, -3.5, 1e-3, fi.tiny, fi.smallest_subnormal, np.inf, -np.inf, np.nan]
        special += [1 + 2.0**-12, 2.0**-600, -(2.0**-500)] if dtype == np.float64 else [1 + 2.0**-12, 3e-20]
        values = np.array(special, dtype)
        grid = [x.ravel() for x in np.meshgrid(values, values, values, indexing="ij")]
        for flags in range(16):
            group = {
                "lr": 1e-2,
                "alpha": 0.3 if flags & 1 else 0.99,  # both of lerp's branches
                "eps": 1e-8,
                "weight_decay": 0.1 * bool(flags & 2),
                "momentum": 0.9 * bool(flags & 4),
                "centered": bool(flags & 8),
                "maximize": bool(flags & 1),
            }
            p, grad, sq = grid[0].copy(), grid[1].copy(), np.abs(grid[2])
            ref = [p.copy(), sq.copy(), grid[2].copy(), grid[0][::-1].copy()]
            got = [x.copy() for x in ref]
            with np.errstate(all="ignore"):
                rmsprop_update(
                    ref[0],
                    grad,
                    ref[1],
                    ref[2] if group["centered"] else None,
                    ref[3] if group["momentum"] else None,
                    **group,
                )
            run_kernel(kernel, got[0], grad, got[1], got[2], got[3], _Hyper.of(group, np.dtype(dtype)))
            for name, r, g in zip(("param", "square_avg", "grad_avg", "momentum_buffer"), ref, got):
                nan = np.isnan(r)
                bits = f"u{r.itemsize}"
                if not np.array_equal(nan, np.isnan(g)) or not np.array_equal(r[~nan].view(bits), g[~nan].view(bits)):
                    return f"{name} in {np.dtype(dtype).name} with {group}"
    return ""


def run_kernel(kernel: Callable[..., None], p: Any, grad: Any, sq: Any, ga: Any, buf: Any, h: Any) -> None:
    """Call the kernel on 1-D contiguous arrays with a group's :class:`lucid.optim._fast._Hyper`.

    ``ga`` and ``buf`` may be None when their flag is off (an empty array of its
    own stands in: a slice of ``p`` would share its address, and the compiled
    loop's run-time aliasing check would then fall back to scalar code).
    """
    empty = _EMPTY[p.dtype]
    kernel(
        p,
        grad,
        sq,
        empty if ga is None else ga,
        empty if buf is None else buf,
        h.neg_lr,
        h.alpha,
        h.one_minus_alpha,
        h.eps,
        h.weight_decay,
        h.momentum,
        h.lerp_w,
        h.lerp_1mw,
        h.lerp_small,
        h.decay,
        h.centered,
        h.has_momentum,
        h.maximize,
    )
