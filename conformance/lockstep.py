"""Run a gradient stream through a :class:`LockstepPair` and summarise the agreement."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from conformance.candidate import Adapter
from conformance.compare import StepScales, nonfinite_mismatch_mask, normalised_error, pinned_nonfinite, step_scales
from conformance.oracle import Verdict, verdict
from conformance.rmsprop import BUFFERS, Hyper
from conformance.runners import LockstepPair, StepRecord

__all__ = ["LockstepResult", "compared_quantities", "nonfinite_pinned", "run_lockstep"]


@dataclass
class LockstepResult:
    """Agreement over a whole stream, per quantity.

    Attributes
    ----------
    worst : dict
        Largest normalised error seen per quantity (``param``, ``square_avg``, ...).
    worst_step : dict
        The step at which that largest error happened.
    bitwise_equal : int
        Elements of the parameter that were bit-identical after a step.
    elements : int
        Parameter elements compared (over all steps).
    nonfinite_mismatches : int
        Elements whose NaN/Inf pattern differed.
    dtype_errors : list of str
        Quantities whose dtype differed from torch's.
    worst_record : StepRecord or None
        The parameter step with the largest normalised parameter error (for an
        oracle verdict on the worst case: :meth:`verdict`).
    """

    worst: dict[str, float] = field(default_factory=dict)
    worst_step: dict[str, int] = field(default_factory=dict)
    bitwise_equal: int = 0
    elements: int = 0
    nonfinite_mismatches: int = 0
    dtype_errors: list[str] = field(default_factory=list)
    worst_record: StepRecord | None = field(default=None, repr=False)

    @property
    def bitwise_fraction(self) -> float:
        """Fraction of compared parameter elements that were bit-identical."""
        return self.bitwise_equal / self.elements if self.elements else 1.0

    @property
    def max_error(self) -> float:
        """Largest normalised error over every quantity."""
        return max(self.worst.values(), default=0.0)

    def absorb(self, step: int, hyper: Hyper, record: StepRecord) -> None:
        """Fold one parameter's step into the summary."""
        if record.grad is None:
            return
        hyper = record.hyper or hyper
        scales = step_scales(hyper, record.param0, record.grad, record.torch_state0, record.torch_state)
        for name, ours, theirs, scale in compared_quantities(record, scales):
            if ours is None or ours.shape != theirs.shape:
                self.worst[name] = np.inf
                self.worst_step.setdefault(name, step)
                continue
            if ours.dtype != theirs.dtype:
                self.dtype_errors.append(f"{name}: {ours.dtype} != {theirs.dtype}")
            mismatch = nonfinite_mismatch_mask(ours, theirs) & nonfinite_pinned(name, record, hyper, scales)
            self.nonfinite_mismatches += int(np.count_nonzero(mismatch))
            err = float(np.max(normalised_error(ours, theirs, scale), initial=0.0))
            if err > self.worst.get(name, -1.0):
                self.worst[name] = err
                self.worst_step[name] = step
                if name == "param":
                    self.worst_record = record
        ours_bits, ref_bits = (
            np.atleast_1d(x).view(f"u{x.dtype.itemsize}") for x in (record.candidate_param, record.torch_param)
        )
        if ours_bits.shape == ref_bits.shape:
            self.bitwise_equal += int(np.count_nonzero(ours_bits == ref_bits))
        self.elements += record.torch_param.size

    def passed(self, bound: float) -> bool:
        """Whether every quantity stayed within ``bound`` and patterns and dtypes agreed."""
        return self.max_error <= bound and not self.nonfinite_mismatches and not self.dtype_errors

    def verdict(self, hyper: Hyper) -> Verdict | None:
        """Return the float64 oracle's verdict on the worst parameter step (None if nothing was compared)."""
        rec = self.worst_record
        if rec is None or rec.grad is None or rec.candidate_param.shape != rec.torch_param.shape:
            return None
        return verdict(
            rec.hyper or hyper,
            rec.param0,
            rec.grad,
            rec.torch_state0,
            rec.candidate_param.astype(rec.param0.dtype),
            rec.torch_param,
        )


def compared_quantities(
    record: StepRecord, scales: StepScales
) -> list[tuple[str, NDArray[Any] | None, NDArray[Any], NDArray[Any]]]:
    """Return what a lockstep step compares: ``(name, candidate's, torch's, scale)`` for the parameter and each buffer.

    A buffer is compared where ``scales`` (torch's step, :func:`conformance.compare.step_scales`)
    has a scale for it; the candidate's is None where it holds no such buffer.
    """
    out: list[tuple[str, NDArray[Any] | None, NDArray[Any], NDArray[Any]]] = [
        ("param", record.candidate_param, record.torch_param, scales.param)
    ]
    for key in BUFFERS:
        scale = getattr(scales, key)
        if scale is not None:
            out.append((key, record.candidate_state.get(key), record.torch_state[key], scale))
    return out


def nonfinite_pinned(name: str, record: StepRecord, hyper: Hyper, scales: StepScales) -> NDArray[np.bool_] | bool:
    """Return where torch's step pins quantity ``name``'s NaN/Inf pattern (a difference there is a mismatch).

    Everywhere (:func:`conformance.compare.pinned_nonfinite`) but where the step
    leaves the pattern to the formula: a variance within rounding of zero, or a
    mean square that overflowed, in what is computed from the root (the
    parameter, the momentum buffer), and lerp's NaN or Inf in ``grad_avg``.
    """
    pinned = pinned_nonfinite(record.param0, record.pairs, hyper)
    if scales.cancelled is not None and name in ("param", "momentum_buffer"):
        pinned = pinned & ~scales.cancelled
    if name == "grad_avg" and scales.lerp_nonfinite is not None:
        pinned = pinned & ~scales.lerp_nonfinite
    return pinned


def run_lockstep(
    params0: Sequence[NDArray[Any]],
    hyper: Hyper,
    grads: Iterable[Sequence[NDArray[Any] | None]],
    *,
    foreach: bool,
    lr_schedule: dict[int, float] | None = None,
    candidate: Adapter | type | str | None = None,
    **pair_options: Any,
) -> LockstepResult:
    """Step torch and the candidate from identical state for each gradient set in ``grads``.

    Before every step the candidate's parameters and buffers are overwritten with
    torch's, so each comparison measures one step's error alone.

    Parameters
    ----------
    params0 : sequence of ndarray
        Initial parameters.
    hyper : Hyper
        Hyperparameters of the single group.
    grads : iterable of sequences
        Per step, one gradient (or None) per parameter.
    foreach : bool
        torch's implementation.
    lr_schedule : dict, optional
        ``{step: lr}``: learning rates set before those steps.
    candidate : Adapter, class or str, optional
        The implementation under test (default ``lucid.optim:RMSprop``).
    **pair_options
        Passed to :class:`~conformance.runners.LockstepPair`: ``device``,
        ``group_hypers``, ``group_of``, ``capturable``, ``tensor_lr``; and
        ``lr_factors`` (``{step: factor}``, every group's lr multiplied before
        that step).
    """
    pair = LockstepPair(list(params0), hyper, foreach, candidate, lr_schedule=lr_schedule, **pair_options)
    result = LockstepResult()
    for step, step_grads in enumerate(grads):
        pair.apply_schedule(step)
        current = pair.hyper
        pair.sync_candidate_to_torch()
        for record in pair.step(list(step_grads)):
            result.absorb(step, current, record)
    return result
