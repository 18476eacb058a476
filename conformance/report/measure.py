"""Measure one drift case: lockstep agreement, ULP distances, oracle verdicts, free-running error.

ULP distances are taken at the magnitude of the terms that form the new
parameter (:attr:`conformance.oracle.OracleStep.param_terms`, or the result
where it is larger), as :func:`conformance.oracle.verdict` takes them: where an
update cancels the parameter the result is small, but its rounding errors are
committed at the size of the terms, so an ULP of the result would overstate them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from conformance.candidate import Adapter
from conformance.compare import LOCKSTEP_BOUND
from conformance.freerun import FREE_RUN_BOUND, run_free
from conformance.lockstep import LockstepResult
from conformance.oracle import oracle_precision_bits, oracle_step, ulp_error
from conformance.report.cases import LOGNORMAL_SIGMA, DriftCase, Settings
from conformance.runners import LockstepPair
from conformance.streams import gradient_stream

__all__ = ["ULP_BIN_EDGES", "drift_stream", "measure_case", "ulp_histogram"]

#: Upper edges of the ULP histogram bins, 2^-6 .. 2^20; bin 0 counts exact zeros,
#: bin k (k >= 1) counts distances in (edge[k-2], edge[k-1]], the last bin the rest.
ULP_BIN_EDGES: tuple[float, ...] = tuple(2.0**k for k in range(-6, 21))

#: Significant digits kept in the JSON: far more than any threshold needs, and
#: short enough for a reviewable diff.
DIGITS = 6


def rounded(x: float) -> float | None:
    """``x`` to :data:`DIGITS` significant digits; None if it is not finite (JSON has no inf/NaN)."""
    x = float(x)
    return float(f"{x:.{DIGITS}g}") if np.isfinite(x) else None


def ulp_histogram(distances: NDArray[np.float64]) -> list[int]:
    """Count finite ``distances`` into the bins of :data:`ULP_BIN_EDGES` (plus zero and overflow)."""
    x = distances[np.isfinite(distances)]
    zero = int(np.count_nonzero(x == 0))
    positive = x[x > 0]
    counts = np.bincount(np.searchsorted(ULP_BIN_EDGES, positive, side="left"), minlength=len(ULP_BIN_EDGES) + 1)
    return [zero, *(int(c) for c in counts)]


def _stats(distances: NDArray[np.float64]) -> dict[str, float | None]:
    x = distances[np.isfinite(distances)]
    if not x.size:
        return {"max": None, "median": None}
    return {"max": rounded(np.max(x)), "median": rounded(np.median(x))}


def drift_stream(kind: str, scale: float, size: int, dtype: str, steps: int, seed: int) -> list[NDArray[Any]]:
    """Return the gradients of one case.

    ``lognormal``: random signs times ``scale * exp(0.5 z)``, ``z`` standard
    normal, drawn in float64 and rounded to ``dtype``.  Unlike a normal
    stream, whose elements reach down to zero whatever its scale, every
    element stays near ``scale``, so a per-scale result describes gradients of
    that size.  Any other ``kind`` is :func:`conformance.streams.gradient_stream`'s.
    """
    if kind != "lognormal":
        return gradient_stream(kind, scale, (size,), dtype, steps, seed)
    rng = np.random.default_rng(seed)
    grads = []
    for _ in range(steps):
        sign = np.where(rng.random(size) < 0.5, -1.0, 1.0)
        grads.append((scale * sign * np.exp(LOGNORMAL_SIGMA * rng.standard_normal(size))).astype(dtype))
    return grads


def _inputs(case: DriftCase, settings: Settings) -> tuple[NDArray[Any], list[NDArray[Any]]]:
    rng = np.random.default_rng([case.seed, 1])
    param0 = rng.standard_normal(settings.size).astype(case.dtype)
    grads = drift_stream(settings.stream, case.scale, settings.size, case.dtype, settings.steps, case.seed)
    return param0, grads


def _lockstep(case: DriftCase, settings: Settings, candidate: Adapter) -> dict[str, Any]:
    """Step from torch's state every step; per element: candidate-torch and each side-oracle distances."""
    hyper = case.config.hyper(lr=settings.lr, alpha=settings.alpha, eps=settings.eps)
    param0, grads = _inputs(case, settings)
    pair = LockstepPair([param0], hyper, case.foreach, candidate=candidate, device=case.device)
    summary = LockstepResult()
    between, candidate_exact, torch_exact = [], [], []
    for step, grad in enumerate(grads):
        pair.sync_candidate_to_torch()
        (record,) = pair.step([grad])
        summary.absorb(step, hyper, record)
        exact = oracle_step(hyper, record.param0, grad, record.torch_state0)
        with np.errstate(all="ignore"):
            magnitude = np.maximum(exact.param_terms, np.abs(exact.param))
        between.append(ulp_error(record.candidate_param, record.torch_param, magnitude))
        candidate_exact.append(ulp_error(record.candidate_param, exact.param, magnitude))
        torch_exact.append(ulp_error(record.torch_param, exact.param, magnitude))
    lt, lo, to = (np.concatenate(x) for x in (between, candidate_exact, torch_exact))
    return {
        "elements": summary.elements,
        "bitwise_equal": summary.bitwise_equal,
        "max_normalised_error": rounded(summary.max_error),
        "within_bound": summary.passed(LOCKSTEP_BOUND),
        "nonfinite_mismatches": summary.nonfinite_mismatches,
        "ulp": _stats(lt),
        "lucid_oracle_ulp": _stats(lo),
        "torch_oracle_ulp": _stats(to),
        "oracle_extra_bits": oracle_precision_bits(np.dtype(case.dtype)),
        "histograms": {
            "ulp": ulp_histogram(lt),
            "lucid_oracle_ulp": ulp_histogram(lo),
            "torch_oracle_ulp": ulp_histogram(to),
        },
    }


def _free_run(case: DriftCase, settings: Settings, candidate: Adapter) -> dict[str, Any]:
    """Run both sides through the whole stream without re-syncing."""
    hyper = case.config.hyper(lr=settings.lr, alpha=settings.alpha, eps=settings.eps)
    param0, grads = _inputs(case, settings)
    options = {} if case.device == "cpu" else {"device": case.device}
    result = run_free([param0], hyper, ([g] for g in grads), foreach=case.foreach, candidate=candidate, **options)
    return {
        "final_relative_error": rounded(result.relative[-1]) if result.relative else 0.0,
        "max_normalised_error": rounded(result.max_normalised),
        "within_bound": result.passed(FREE_RUN_BOUND),
        "nonfinite_mismatches": result.nonfinite_mismatches,
        "growth_exponent": rounded(result.growth_exponent),
        "relative_error": [rounded(x) for x in result.relative],
    }


def measure_case(case: DriftCase, settings: Settings, candidate: Adapter) -> dict[str, Any]:
    """Measure ``case`` and return its JSON record (see ``drift.schema.json``)."""
    return {
        "id": case.id,
        "config": case.config.name,
        "flags": {
            "centered": case.config.centered,
            "momentum": case.config.momentum,
            "weight_decay": case.config.weight_decay,
            "maximize": case.config.maximize,
        },
        "scale": case.scale,
        "dtype": case.dtype,
        "foreach": case.foreach,
        "device": case.device,
        "seed": case.seed,
        "lockstep": _lockstep(case, settings, candidate),
        "free_run": _free_run(case, settings, candidate),
    }
