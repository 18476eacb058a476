r"""Free-running comparison: both optimizers run a whole stream without re-syncing.

Bound.  The gradient streams do not depend on the parameters, so
the parameter after ``N`` steps is ``p_N = p_0 - lr * sum_t q_t`` (``q_t`` the
update, or the momentum buffer) and two honest implementations differ by the
accumulated local errors, propagated through the state:

* a local error of step ``t`` is at most ``k u S_{p,t}`` (``k = 8``, the
  lockstep derivation in :mod:`conformance.compare`);
* an error in the mean square ``v`` decays by ``alpha`` per step, so its
  steady state is ``1 / (1 - alpha)`` local errors, and it reaches ``q``
  halved by the root and amplified by the conditioning ``kappa``; hence a factor
  ``1 + kappa / (1 - alpha)`` on the update's share of ``S_p``;
* an error in the momentum buffer decays by ``mu`` and enters every later
  parameter update, a factor ``1 / (1 - mu)``;
* with weight decay the gradient *does* depend on the parameter, ``g + wd p``,
  so an error ``e`` in ``p`` changes the next update by up to
  ``rho_t e``, ``rho_t = lr wd (1 + kappa_t) / (avg_t (1 - mu))`` (the same
  ``(1 + kappa) / avg`` sensitivity of ``q = g / avg`` to ``g`` as in ``S_q``):
  the accumulated bound is carried forward as ``E_{t+1} = (1 + rho_t) E_t +
  local_t``.  Where ``rho_t`` is large (a tiny ``avg``: gradients and eps far
  below ``wd |p|``) the dynamics amplify any difference, the free-running bound
  grows accordingly and only the lockstep check judges those steps.

Summing over the steps, ``|p_N - p'_N| <= 2 k u sum_t [|p_t| + lr S_{q,t} (1 +
kappa_t / (1 - alpha)) / (1 - mu)]`` for two sides (:data:`FREE_RUN_BOUND` =
``2 k`` = 16 in those units).  It grows linearly with ``N``: the worst case of
errors that all have one sign.  Honest rounding errors have random signs and
grow like ``sqrt(N)``; a systematic bias grows like ``N``, and
:attr:`FreeRunResult.growth_exponent` estimates which, from the largest
element's error; measured, it sees a one-ULP bias (0.9 against 0.2-0.3 for
honest sides) but not a bias in the step's size (a learning rate times 1 + 2u:
0.10), so it is reported, not judged.  The ``growth`` check
(:mod:`conformance.checks.freerun`) judges the bias instead: with ``exact=True``
an exact trajectory runs beside the two sides, and the signs of their final
errors against it are counted over all elements.

NaN/Inf positions.  Free-running sides are not fed identical inputs, so where
the dynamics blow up (an unstable lr / weight decay / centered combination) one
honest side can overflow, or take the root of a variance that rounded below
zero, a step before the other.  A NaN/Inf mismatch therefore counts only where
the bound still pins the value: ``16 u E`` finite, no larger than the finite
side's magnitude, and not reaching the overflow threshold.  Elsewhere it is
counted in :attr:`FreeRunResult.nonfinite_excused` (the lockstep check, with
identical inputs, judges those steps strictly).  An element also leaves the
bound for the rest of the run at a step that leaves its NaN/Inf pattern to the
formula rather than to the values: a centered variance within rounding of zero,
and a complex parameter with a NaN or infinite part under weight decay, which
torch's two CPU paths spread to the other part differently
(:func:`~conformance.compare.pinned_nonfinite`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from conformance.candidate import Adapter
from conformance.compare import nonfinite_mismatch_mask, pinned_nonfinite, step_scales, unit_roundoff
from conformance.oracle import oracle_step
from conformance.rmsprop import BUFFERS, Hyper
from conformance.runners import LockstepPair, StepRecord
from conformance.streams import as_real

__all__ = ["FREE_RUN_BOUND", "FreeRunResult", "accumulate_scale", "in_drift_units", "pinned", "run_free"]

#: Maximum honest free-running difference in units of the accumulated scale (derivation above).
FREE_RUN_BOUND = 16.0


@dataclass
class FreeRunResult:
    """Trajectory agreement of a free-running pair.

    Attributes
    ----------
    normalised : list of float
        Per step, ``max |p_candidate - p_torch| / (u * accumulated scale)``
        over all parameters and finite elements.
    relative : list of float
        Per step, ``max |p_candidate - p_torch| / max |p_torch|`` (what a user sees).
    nonfinite_mismatches : int
        Elements whose NaN/Inf pattern differed where the bound still pinned
        the value, summed over steps.
    nonfinite_excused : int
        Pattern differences where it no longer did (see the module docstring).
    """

    normalised: list[float] = field(default_factory=list)
    relative: list[float] = field(default_factory=list)
    nonfinite_mismatches: int = 0
    nonfinite_excused: int = 0
    #: With ``exact=True``: per parameter, its initial value, both sides' final values and the
    #: exact trajectory's final value (wide type); complex parameters as their real pairs.
    initial: list[NDArray[Any]] = field(default_factory=list)
    final_candidate: list[NDArray[Any]] = field(default_factory=list)
    final_torch: list[NDArray[Any]] = field(default_factory=list)
    final_exact: list[NDArray[Any]] = field(default_factory=list)

    @property
    def max_normalised(self) -> float:
        """Largest normalised difference over the run."""
        return max(self.normalised, default=0.0)

    @property
    def growth_exponent(self) -> float:
        """Slope of log(relative error) against log(step) over the steps with an error.

        About 0.5 for honest rounding noise, about 1 for a systematic bias;
        NaN when fewer than 8 steps show any difference.
        """
        rel = np.asarray(self.relative)
        steps = np.arange(1, rel.size + 1)
        keep = (rel > 0) & np.isfinite(rel)
        if np.count_nonzero(keep) < 8:
            return float("nan")
        return float(np.polyfit(np.log(steps[keep]), np.log(rel[keep]), 1)[0])

    def passed(self, bound: float = FREE_RUN_BOUND) -> bool:
        """Whether the trajectories stayed within ``bound`` with identical NaN/Inf patterns."""
        return self.max_normalised <= bound and not self.nonfinite_mismatches


def run_free(
    params0: Sequence[NDArray[Any]],
    hyper: Hyper,
    grads: Iterable[Sequence[NDArray[Any] | None]],
    *,
    foreach: bool,
    lr_schedule: dict[int, float] | None = None,
    candidate: Adapter | type | str | None = None,
    exact: bool = False,
    **pair_options: Any,
) -> FreeRunResult:
    """Run torch and the candidate side by side without syncing, and measure how they drift apart.

    Parameters are as for :func:`conformance.lockstep.run_lockstep`.  With
    ``exact``, a third trajectory runs beside them: the oracle's step
    (:func:`conformance.oracle.oracle_step`) applied to its own wide-type
    parameter and state, from the same inputs; the final values of all three
    land in the result for the growth check (:mod:`conformance.checks.freerun`).
    """
    pair = LockstepPair(list(params0), hyper, foreach, candidate, lr_schedule=lr_schedule, **pair_options)
    result = FreeRunResult()
    wide = [as_real(np.array(p, copy=True)) for p in params0] if exact else []
    wide_state: list[dict[str, NDArray[Any]]] = [{} for _ in wide]
    records: list[Any] = []
    accumulated = [np.zeros(np.shape(as_real(p))) for p in params0]  # complex: as their records' real pairs
    for step, step_grads in enumerate(grads):
        pair.apply_schedule(step)
        worst_norm = worst_rel = 0.0
        records = pair.step(list(step_grads))
        for i, record in enumerate(records):
            ours, theirs = record.candidate_param, record.torch_param
            current = record.hyper or pair.hyper
            if exact and record.grad is not None:
                _exact_step(wide, wide_state, i, current, record.grad)
            if ours.shape != theirs.shape:
                result.nonfinite_mismatches += theirs.size or 1
                continue
            if record.grad is not None:
                accumulated[i] = accumulate_scale(accumulated[i], record, current)
            _count_nonfinite(result, ours, theirs, accumulated[i])
            finite = np.isfinite(ours) & np.isfinite(theirs)
            if not finite.any():
                continue
            diff = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))[finite]
            norm = in_drift_units(diff, np.broadcast_to(accumulated[i], ours.shape)[finite], step, theirs.dtype)
            worst_norm = max(worst_norm, float(norm.max(initial=0.0)))
            top = float(np.max(np.abs(theirs[finite]).astype(np.float64)))
            worst_rel = max(worst_rel, float(diff.max()) / top if top > 0 else float(diff.max() > 0))
        result.normalised.append(worst_norm)
        result.relative.append(worst_rel)
    if exact:
        result.initial = [as_real(np.asarray(p)) for p in params0]
        result.final_candidate = [r.candidate_param for r in records]
        result.final_torch = [r.torch_param for r in records]
        result.final_exact = wide
    return result


def accumulate_scale(accumulated: NDArray[Any], record: StepRecord, hyper: Hyper) -> NDArray[Any]:
    """Return the accumulated scale after ``record``'s step (a step with a gradient; derivation above).

    ``accumulated`` is the scale before it (zeros before the first step), of the
    parameter's shape; elements whose NaN/Inf pattern the step leaves to the
    formula become ``inf``: the bound pins them no longer.
    """
    scales = step_scales(hyper, record.param0, record.grad, record.torch_state0, record.torch_state)
    with np.errstate(all="ignore"):
        share = scales.param - np.abs(record.param0.astype(np.float64))
        kappa_factor = 1 + 1 / (1 - hyper.alpha) if hyper.alpha < 1 else np.inf
        momentum_factor = 1 / (1 - hyper.momentum) if hyper.momentum < 1 else np.inf
        growth = 1.0
        if hyper.weight_decay > 0:
            growth = 1 + hyper.lr * hyper.weight_decay * scales.sensitivity * momentum_factor
        accumulated = accumulated * growth + (
            np.abs(record.param0.astype(np.float64)) + share * kappa_factor * momentum_factor
        )
    # Where the step leaves the NaN/Inf pattern to the formula (a variance within rounding
    # of zero; a complex NaN part that torch's two paths spread differently), the sides
    # may part there for good: the bound pins those elements no longer.
    free = ~np.asarray(pinned_nonfinite(record.param0, record.pairs, hyper))
    if scales.cancelled is not None:
        free = free | scales.cancelled
    if free.any():  # (not a copy of the scale on every step where nothing is freed)
        accumulated = np.where(free, np.inf, accumulated)
    return accumulated


def in_drift_units(diff: NDArray[Any], scale: NDArray[Any], step: int, dtype: Any) -> NDArray[Any]:
    """Return ``diff / (u * scale + eta * (step + 1))``, the free run's units, where finite (else 0).

    ``u`` and ``eta`` (the smallest subnormal) are those of ``dtype``, the dtype
    under test; ``scale`` is the accumulated scale of the same elements as
    ``diff`` (an infinite one, no longer pinned, gives 0).
    """
    dtype = np.dtype(dtype)
    eta = float(np.finfo(dtype).smallest_subnormal)
    with np.errstate(all="ignore"):
        norm = diff / (unit_roundoff(dtype) * scale + eta * (step + 1))
    return np.where(np.isfinite(norm), norm, 0.0)


def _exact_step(
    wide: list[NDArray[Any]], state: list[dict[str, NDArray[Any]]], i: int, hyper: Hyper, grad: NDArray[Any]
) -> None:
    """Advance parameter ``i`` of the exact trajectory by one oracle step, in place."""
    step = oracle_step(hyper, wide[i], grad, state[i])
    wide[i] = step.param
    state[i] = {name: getattr(step, name) for name in BUFFERS if getattr(step, name) is not None}


def pinned(ours: NDArray[Any], theirs: NDArray[Any], scale: NDArray[Any]) -> NDArray[np.bool_]:
    """Where the bound still pins the value: ``16 u E`` finite, no larger than it, and short of overflow.

    The value is ``theirs`` where finite, else ``ours``; ``u`` and the overflow
    threshold are those of ``theirs``'s dtype (module docstring, *NaN/Inf positions*).
    """
    top = float(np.finfo(theirs.dtype).max)
    with np.errstate(all="ignore"):
        allowed = FREE_RUN_BOUND * unit_roundoff(theirs.dtype) * np.broadcast_to(scale, ours.shape)
        value = np.abs(np.where(np.isfinite(theirs), theirs, ours).astype(np.float64))
        return np.isfinite(allowed) & (allowed <= value) & (value + allowed < top)


def _count_nonfinite(result: FreeRunResult, ours: NDArray[Any], theirs: NDArray[Any], scale: NDArray[Any]) -> None:
    """Add this step's NaN/Inf pattern differences to ``result``, pinned or excused (module docstring)."""
    mismatch = nonfinite_mismatch_mask(ours, theirs)
    if not mismatch.any():
        return
    held = pinned(ours, theirs, scale)
    result.nonfinite_mismatches += int(np.count_nonzero(mismatch & held))
    result.nonfinite_excused += int(np.count_nonzero(mismatch & ~held))
