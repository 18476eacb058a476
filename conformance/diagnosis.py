r"""Say *why* a candidate disagrees: replay the scenario through every known departure from torch's formula.

A check says that a candidate differs from torch; this module says how.  The
candidate runs the scenario free (never re-synced to torch), and beside it run
exact trajectories (the oracle's wide type, :func:`~conformance.oracle.oracle_step`)
of torch's formula and of every variant in :mod:`conformance.departures`,
alone and in combinations of up to three.  A variant *explains* the candidate
when the candidate stays within :data:`DIAGNOSIS_BOUND` of its trajectory: the
free-running bound, in the same units (``u`` times the accumulated scale of
:mod:`conformance.freerun`, measured along torch's trajectory), that torch's own
float32 or float64 run is held to against torch's exact formula.  The smallest
combinations that explain it are the cause.

Some departures leave a scenario's trajectory unchanged (lr inside the
momentum buffer, while the learning rate is constant; an ignored lr change,
without one).  Where that leaves the cause open (the candidate follows torch's
own formula, or several combinations explain it equally) the diagnosis
constructs the scenarios that would tell them apart (the same one with an lr
change half-way; with gradients 1e-4 times smaller, where eps decides), runs
the candidate on them, and says which one decided.  When nothing explains it,
the diagnosis names the first quantity of the free run that left the lockstep
bound (step, parameter, element).

Some causes are not in the formula but in what the checks observed: a float32
parameter or buffer kept as float64, a step counter that does not advance,
state that ``load_state_dict`` did not restore.  :func:`observed_causes` reads
them from the failing outcomes.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from conformance.candidate import Adapter, CandidateError
from conformance.checks.outcome import CheckOutcome, pair_options
from conformance.compare import LOCKSTEP_BOUND, nonfinite_mismatch_mask, normalised_error, pinned_nonfinite, step_scales
from conformance.departures import FORMULA, combinations_upto, describe, relevant
from conformance.freerun import FREE_RUN_BOUND, accumulate_scale, in_drift_units, pinned
from conformance.lockstep import compared_quantities, nonfinite_pinned
from conformance.oracle import oracle_step
from conformance.rmsprop import BUFFERS, CONTINUOUS, Hyper
from conformance.runners import LockstepPair, StepRecord
from conformance.scenario import Scenario
from conformance.streams import as_real, materialize

__all__ = [
    "CLEARLY_CLOSER",
    "DIAGNOSIS_BOUND",
    "HONEST_DISTANCE",
    "MAX_COMBINATION",
    "NUMERICAL_CHECKS",
    "Diagnosis",
    "cause_text",
    "diagnose",
    "observed_causes",
]

#: A variant explains a candidate that stays within this many ``u`` times the accumulated
#: scale of it: the free-running bound torch's own run is held to (:mod:`conformance.freerun`).
DIAGNOSIS_BOUND = FREE_RUN_BOUND

#: The farthest an honest candidate's free run was found from torch's exact trajectory, rounded up
#: (u*S; measured over 75 probe scenarios, 5 seeds x 3 cases: Lucid 1.57 at most, median 0.75;
#: the unfused variant 1.05 at most).
HONEST_DISTANCE = 2.0

#: Where torch's formula is within the bound of a candidate that failed a check, but farther than
#: :data:`HONEST_DISTANCE`, a variant at least this many times closer explains it better.
CLEARLY_CLOSER = 4.0

#: The most departures combined in one explanation.
MAX_COMBINATION = 3

#: The checks whose failure a trajectory can explain (a contract item names its own cause).
NUMERICAL_CHECKS = frozenset(
    {
        "lockstep",
        "nonfinite",
        "freerun",
        "growth",
        "sign",
        "magnitude",
        "state_dict",
        "torch_to_candidate",
        "candidate_to_torch",
        "candidate_roundtrip",
        "reordered_load",
    }
)

#: How the scenario that reveals lr inside the momentum buffer is described.
_LR_CHANGE = "the same scenario with lr x 0.1"

#: The scale of the gradients in the scenario that tells eps's departures apart (where ``|g| ~ sqrt(eps)``).
_SMALL_GRADIENTS = 1e-4


def cause_text(causes: Iterable[str], observed: Iterable[str]) -> str:
    """Name departures and observed causes in words ("no known departure": none)."""
    names = list(causes)
    parts = ([describe(names)] if names else []) + list(observed)
    return "; ".join(parts) or "no known departure"


@dataclass(frozen=True)
class Diagnosis:
    """What a disagreeing candidate computes, as far as the known departures tell.

    Attributes
    ----------
    causes : tuple of str
        The departures (:data:`conformance.departures.DEPARTURES` names) of the
        explanation; empty when none explains the candidate or it follows torch's formula.
    explained : bool
        Whether a combination (or torch's own formula) explains the free run.
    distance : float
        The candidate's largest distance from the explanation's trajectory (u*S; inf: none).
    torch_distance : float
        The candidate's largest distance from torch's exact trajectory (u*S).
    ties : tuple of frozenset
        Other combinations that explain it as well, which no constructed scenario told apart.
    decided_by : str
        The constructed scenario that decided between explanations, with its replay id (empty: none needed).
    first_difference : str
        Where the candidate's step, from torch's state, first left the lockstep
        bound (when no cause is named).
    observed : tuple of str
        Causes read from the failing checks (:func:`observed_causes`).
    """

    causes: tuple[str, ...] = ()
    explained: bool = False
    distance: float = math.inf
    torch_distance: float = math.inf
    ties: tuple[frozenset[str], ...] = ()
    decided_by: str = ""
    first_difference: str = ""
    observed: tuple[str, ...] = field(default=())

    @property
    def cause(self) -> str:
        """The cause in words, for grouping and for the verdict line (:func:`cause_text`)."""
        return cause_text(self.causes, self.observed)

    def __str__(self) -> str:
        if self.causes:
            text = (
                f"the candidate computes torch's RMSprop with {describe(self.causes)} "
                f"({self.distance:.2g} u*S from that variant; {self.torch_distance:.2g} u*S from torch)"
            )
            if self.ties:
                text += "; as well explained by " + " or ".join(describe(t) for t in self.ties)
        elif self.explained:
            text = (
                f"its free run follows torch's formula ({self.torch_distance:.2g} u*S): "
                "the departure is not in the trajectory"
            )
            if self.first_difference:
                text += f"; its step from torch's state first differs in {self.first_difference}"
        else:
            text = f"no known departure explains this ({self.torch_distance:.2g} u*S from torch)"
            if self.first_difference:
                text += f"; its step from torch's state first differs in {self.first_difference}"
        if self.decided_by:
            text += f"; decided by {self.decided_by}"
        if self.observed:
            text += "; observed: " + "; ".join(self.observed)
        return text


@dataclass
class _FreeRun:
    """The candidate's free run of a scenario, beside torch's, with torch's accumulated scale per step."""

    params0: list[NDArray[Any]]
    #: Per step, one record per parameter.
    records: list[list[StepRecord]]
    #: Per step, per parameter: the accumulated scale after that step (along torch's trajectory).
    scales: list[list[NDArray[Any]]]
    #: Each parameter's group's hyperparameters at construction.
    initial: list[Hyper]


def _free_run(scenario: Scenario, adapter: Adapter, lockstep: bool = False) -> _FreeRun:
    """Run ``scenario`` on the candidate beside torch, free (``lockstep``: re-synced to torch before every step)."""
    params0, grads = materialize(scenario)
    options = pair_options(scenario)
    pair = LockstepPair(list(params0), scenario.hypers[0], scenario.matrix_case.impl.foreach, adapter, **options)
    initial = [scenario.hypers[k] for k in scenario.group_of]
    accumulated = [np.zeros(np.shape(as_real(np.asarray(p)))) for p in params0]
    records, scales = [], []
    with np.errstate(all="ignore"):
        for step, step_grads in enumerate(grads):
            pair.apply_schedule(step)
            if lockstep:
                pair.sync_candidate_to_torch()
            recs = pair.step(list(step_grads))
            for i, rec in enumerate(recs):
                if rec.grad is not None:
                    accumulated[i] = accumulate_scale(accumulated[i], rec, rec.hyper or pair.hyper)
            records.append(recs)
            scales.append(list(accumulated))
    return _FreeRun([as_real(np.asarray(p)) for p in params0], records, scales, initial)


def _given(hyper: Hyper, initial: Hyper, names: frozenset[str]) -> Hyper:
    """Return the hyperparameters a candidate with the departures ``names`` steps with, where torch has ``hyper``."""
    changes: dict[str, Any] = {k: getattr(initial, k) for k in CONTINUOUS if f"{k}_changes_ignored" in names}
    hyper = replace(hyper, **changes)
    if "zero_alpha_as_default" in names and hyper.alpha == 0:
        hyper = replace(hyper, alpha=Hyper.alpha)
    if "zero_eps_as_default" in names and hyper.eps == 0:
        hyper = replace(hyper, eps=Hyper.eps)
    return hyper


def _stepped_with(
    grad: NDArray[Any] | None, hyper: Hyper, param0: NDArray[Any], names: frozenset[str]
) -> NDArray[Any] | None:
    """Return the gradient a candidate with the departures ``names`` steps with (None: it takes no step)."""
    if grad is None:
        return np.zeros(param0.shape, param0.dtype) if "none_grad_as_zero" in names else None
    if "zero_lr_skips_step" in names and hyper.lr == 0:
        return None
    if "zero_grad_skipped" in names and grad.size and not np.any(grad):
        return None
    if "inf_grad_clipped" in names and np.isinf(grad).any():
        top = np.finfo(grad.dtype).max
        return np.clip(grad, -top, top)
    return grad


def _conditions(run: _FreeRun) -> set[str]:
    """Return the conditions of ``run`` (:data:`conformance.departures.CONDITIONS`) that departures may need."""
    out: set[str] = set()
    for recs in run.records:
        for i, rec in enumerate(recs):
            hyper, initial = rec.hyper or run.initial[i], run.initial[i]
            out |= {k for k in ("momentum", "weight_decay") if getattr(hyper, k) != 0}
            out |= {k for k in ("centered", "maximize") if getattr(hyper, k)}
            out |= {f"{k}_change" for k in CONTINUOUS if getattr(hyper, k) != getattr(initial, k)}
            out |= {f"{k}_zero" for k in ("alpha", "eps", "lr") if getattr(hyper, k) == 0}
            if rec.grad is None:
                out.add("none_grad")
            elif rec.grad.size and not np.any(rec.grad):
                out.add("zero_grad")
            elif np.isinf(rec.grad).any():
                out.add("inf_grad")
    return out


def _effective(hyper: Hyper, names: frozenset[str]) -> Hyper:
    """Return the hyperparameters torch's formula would need to compute what ``names`` computes, where one does."""
    changes: dict[str, Any] = {}
    if "alpha_swapped" in names:
        changes["alpha"] = 1 - hyper.alpha
    if "eps_ignored" in names:
        changes["eps"] = 0.0
    if {"weight_decay_ignored", "decoupled_weight_decay"} & names:
        changes["weight_decay"] = 0.0
    if "momentum_ignored" in names:
        changes["momentum"] = 0.0
    if "maximize_ignored" in names:
        changes["maximize"] = False
    if "centered_ignored" in names:
        changes["centered"] = False
    return replace(hyper, **changes)


def _distance(run: _FreeRun, names: frozenset[str], stop_above: float = math.inf) -> tuple[float, float]:
    """Return the candidate's largest distance (u*S) from the exact trajectory of torch's formula with ``names``.

    Returns the distance that judges it (on the larger scale, below) and the
    distance on torch's scale alone, the common yardstick that ranks the variants.

    The scale is the larger of the accumulated scales along torch's trajectory
    and along the variant's own (a variant may be worse conditioned than torch's
    formula: swapped alphas make a centered variance cancel).  Stops at the first
    step where the distance exceeds ``stop_above`` (returning that step's distance).
    """
    formula = names & FORMULA
    wide: list[NDArray[Any]] = [np.array(p, copy=True) for p in run.params0]
    state: list[dict[str, NDArray[Any]]] = [{} for _ in wide]
    own = [np.zeros(p.shape) for p in run.params0]
    worst = on_torch_scale = 0.0
    with np.errstate(all="ignore"):
        for step, (recs, scales) in enumerate(zip(run.records, run.scales)):
            for i, rec in enumerate(recs):
                dtype = rec.torch_param.dtype
                hyper = _given(rec.hyper or run.initial[i], run.initial[i], names)
                grad = _stepped_with(rec.grad, hyper, run.params0[i], names)
                if grad is not None:
                    exact = oracle_step(hyper, wide[i], grad, state[i], formula, run.params0[i].dtype)
                    after = {k: getattr(exact, k) for k in BUFFERS if getattr(exact, k) is not None}
                    if names:
                        mine = StepRecord(
                            param0=wide[i].astype(dtype),
                            grad=grad,
                            torch_state0={k: v.astype(dtype) for k, v in state[i].items()},
                            torch_param=exact.param.astype(dtype),
                            candidate_param=exact.param.astype(dtype),
                            torch_state={k: v.astype(dtype) for k, v in after.items()},
                            pairs=rec.pairs,
                        )
                        own[i] = accumulate_scale(own[i], mine, _effective(hyper, names))
                    wide[i], state[i] = exact.param, after
                ours = rec.candidate_param
                if ours.shape != wide[i].shape:
                    return math.inf, math.inf
                scale, mismatch = scales[i], _pinned_mismatch(ours, wide[i].astype(dtype), scales[i])
                if names:
                    # The variant's own scale where it pins the value, and only where larger.  Where the
                    # variant's own step leaves the pattern to the formula (a gradient whose square
                    # underflows in the dtype, a variance within rounding of zero), a NaN or Inf of the
                    # candidate is excused, as the free run excuses torch's; a NaN of the exact variant
                    # that the candidate does not show is not.
                    pins = np.isfinite(own[i])
                    scale = np.where(pins, np.maximum(scales[i], own[i]), scales[i])
                    mismatch = _pinned_mismatch(ours, wide[i].astype(dtype), scale) & (pins | np.isfinite(ours))
                if np.any(mismatch):
                    return math.inf, math.inf
                finite = np.isfinite(ours) & np.isfinite(wide[i])
                diff = np.abs(ours.astype(np.float64) - wide[i].astype(np.float64))[finite]
                norm = in_drift_units(diff, np.broadcast_to(scale, ours.shape)[finite], step, dtype)
                worst = max(worst, float(norm.max(initial=0.0)))
                if names:  # the same difference on torch's scale alone, which ranks the variants
                    plain = in_drift_units(diff, np.broadcast_to(scales[i], ours.shape)[finite], step, dtype)
                    on_torch_scale = max(on_torch_scale, float(plain.max(initial=0.0)))
            if worst > stop_above:
                break
    return worst, on_torch_scale if names else worst


def _step_distance(run: _FreeRun, names: frozenset[str]) -> float:
    """Return the largest lockstep error (u * step scale) of the candidate's re-synced steps against the variant's.

    ``run`` is re-synced to torch before every step (``_free_run(..., lockstep=True)``),
    so each record holds the candidate's one step from torch's state, in
    whatever convention the candidate keeps its buffers; the variant's exact step
    from the same state is what a candidate with the departures ``names``
    computes.  The parameter and every buffer both hold are compared, on the
    larger of torch's step scale and the variant's own, and a NaN/Inf pattern
    that differs where torch's step pins it is infinitely far.
    """
    formula = names & FORMULA
    worst = 0.0
    with np.errstate(all="ignore"):
        for recs in run.records:
            for i, rec in enumerate(recs):
                dtype = rec.torch_param.dtype
                hyper = _given(rec.hyper or run.initial[i], run.initial[i], names)
                grad = _stepped_with(rec.grad, hyper, run.params0[i], names)
                base = None
                if grad is None:  # no step: the candidate must hold what it was given
                    expected = {"param": rec.param0, **rec.torch_state0}
                    scale = {k: np.abs(v.astype(np.float64)) for k, v in expected.items()}
                else:
                    exact = oracle_step(hyper, rec.param0, grad, rec.torch_state0, formula)
                    expected = {"param": exact.param.astype(dtype)}
                    expected |= {k: getattr(exact, k).astype(dtype) for k in BUFFERS if getattr(exact, k) is not None}
                    buffers = {k: v for k, v in expected.items() if k != "param"}
                    theirs = step_scales(_effective(hyper, names), rec.param0, grad, rec.torch_state0, buffers)
                    base = theirs
                    if rec.grad is not None:
                        base = step_scales(rec.hyper or hyper, rec.param0, rec.grad, rec.torch_state0, rec.torch_state)
                    scale = {k: _larger(getattr(base, k), getattr(theirs, k)) for k in ("param", *BUFFERS)}
                ours = {"param": rec.candidate_param, **rec.candidate_state}
                for name, value in expected.items():
                    mine = ours.get(name)
                    if mine is None or scale.get(name) is None:
                        continue
                    if mine.shape != value.shape:
                        return math.inf
                    # As the lockstep check: where torch's own step leaves the pattern to the formula
                    # (a variance within rounding of zero; lerp's NaN or Inf), a difference is no evidence.
                    pins = (
                        nonfinite_pinned(name, rec, hyper, base)
                        if base is not None
                        else pinned_nonfinite(rec.param0, rec.pairs, hyper)
                    )
                    if np.any(nonfinite_mismatch_mask(mine, value) & pins):
                        return math.inf
                    err = normalised_error(mine, value, scale[name])
                    worst = max(worst, float(np.max(err, initial=0.0)))
                if worst > LOCKSTEP_BOUND:
                    return worst
    return worst


def _larger(a: NDArray[Any] | None, b: NDArray[Any] | None) -> NDArray[Any] | None:
    """Return the elementwise larger of two scales, either of which may be missing (None)."""
    if a is None or b is None:
        return b if a is None else a
    return np.maximum(a, b)


def _step_search(run: _FreeRun) -> list[tuple[float, frozenset[str]]]:
    """Return the smallest combinations whose re-synced steps keep the candidate within the lockstep bound."""
    options = relevant(_conditions(run))
    for size in range(1, MAX_COMBINATION + 1):
        found = [(d, c) for c in combinations_upto(options, size) if (d := _step_distance(run, c)) <= LOCKSTEP_BOUND]
        if found:
            return sorted(found, key=lambda x: (x[0], sorted(x[1])))
    return []


def _pinned_mismatch(ours: NDArray[Any], exact: NDArray[Any], scale: NDArray[Any]) -> NDArray[np.bool_]:
    """Return where one side is finite and the other not, and the bound still pins the value (as the free run)."""
    mismatch = np.isfinite(ours) != np.isfinite(exact)
    return mismatch & pinned(ours, exact, scale) if mismatch.any() else mismatch


def _search(run: _FreeRun, within: Sequence[frozenset[str]] | None = None) -> list[tuple[float, frozenset[str]]]:
    """Return the smallest combinations (by size) that explain the run, closest first, with their distances.

    A combination explains the run when its judging distance is within
    :data:`DIAGNOSIS_BOUND`; the closest is the one nearest on torch's scale
    (the others kept are those within the bound on that scale too: real ties).
    ``within``: consider only these combinations (default: every relevant
    combination of up to :data:`MAX_COMBINATION`, by increasing size).
    """
    if within is not None:
        sizes = sorted({len(c) for c in within})
        groups = [[c for c in within if len(c) == n] for n in sizes]
    else:
        options = relevant(_conditions(run))
        groups = [combinations_upto(options, n) for n in range(1, MAX_COMBINATION + 1)]
    for combos in groups:
        found = []
        for combo in combos:
            judged, ranked = _distance(run, combo, DIAGNOSIS_BOUND)
            if judged <= DIAGNOSIS_BOUND:
                found.append((ranked, combo))
        if found:
            found.sort(key=lambda x: (x[0], sorted(x[1])))
            return found[:1] + [f for f in found[1:] if f[0] <= DIAGNOSIS_BOUND]
    return []


def _telling_apart(scenario: Scenario) -> list[tuple[str, Scenario]]:
    """Scenarios that make more departures visible than ``scenario`` does: (what they change, the scenario)."""
    out = []
    hypers = scenario.hypers
    if any(h.momentum > 0 for h in hypers) and not any(c.name == "lr" for c in scenario.changes):
        step = max(1, scenario.steps // 2)
        out.append((f"{_LR_CHANGE} from step {step}", replace(scenario, lr_change=(step, 0.1))))
    small = tuple(replace(p, scale=p.scale * _SMALL_GRADIENTS) for p in scenario.params)
    out.append((f"the same scenario with gradients x {_SMALL_GRADIENTS:g}", replace(scenario, params=small)))
    return out


def _compared_steps(run: _FreeRun) -> Iterator[tuple[int, int, str, NDArray[Any] | None, NDArray[Any], NDArray[Any]]]:
    """Yield what the lockstep check compares in ``run``: ``(step, parameter, name, candidate's, torch's, scale)``."""
    for step, recs in enumerate(run.records):
        for i, rec in enumerate(recs):
            if rec.grad is None:
                continue
            scales = step_scales(rec.hyper or run.initial[i], rec.param0, rec.grad, rec.torch_state0, rec.torch_state)
            for name, ours, theirs, scale in compared_quantities(rec, scales):
                yield step, i, name, ours, theirs, scale


def _beyond_bound(ours: NDArray[Any], theirs: NDArray[Any], scale: NDArray[Any]) -> NDArray[np.bool_]:
    """Return where ``ours`` leaves the lockstep bound around ``theirs`` (NaN counts as beyond)."""
    return np.nan_to_num(np.asarray(normalised_error(ours, theirs, scale)), nan=np.inf) > LOCKSTEP_BOUND


def _first_difference(run: _FreeRun) -> str:
    """Return the first quantity of ``run`` that left the lockstep bound: step, parameter, element."""
    with np.errstate(all="ignore"):
        for step, i, name, ours, theirs, scale in _compared_steps(run):
            if ours is None:
                return f"{name} missing at step {step}, parameter #{i}"
            if ours.shape != theirs.shape:
                return f"{name} of shape {ours.shape} (torch {theirs.shape}) at step {step}, parameter #{i}"
            bad = np.argwhere(_beyond_bound(ours, theirs, scale))
            if bad.size:
                where = tuple(int(x) for x in bad[0])
                return (
                    f"{name} at step {step}, parameter #{i}, element {where} "
                    f"({float(ours[where])!r} against torch's {float(theirs[where])!r})"
                )
    return ""


def _flushes_subnormals(run: _FreeRun) -> bool:
    """Return whether each value of ``run`` beyond the lockstep bound is a subnormal of torch's the candidate zeroed.

    Flush-to-zero (and denormals-are-zero) arithmetic, as XLA's CPU backend
    uses, gives 0 where IEEE arithmetic gives a subnormal number.
    """
    seen = False
    with np.errstate(all="ignore"):
        for _, _, _, ours, theirs, scale in _compared_steps(run):
            if ours is None or ours.shape != theirs.shape:
                return False
            bad = _beyond_bound(ours, theirs, scale)
            if not bad.any():
                continue
            flushed = (ours == 0) & (np.abs(theirs) < np.finfo(theirs.dtype).tiny) & (theirs != 0)
            if not np.all(flushed[bad]):
                return False
            seen = True
    return seen


def _state_dict_cause(detail: str) -> str:
    """Name what the ``state_dict`` check's first difference says (its detail, parsed)."""
    keys = re.search(r"keys (\[[^\]]*\]) != (\[[^\]]*\])", detail)
    if keys:
        ours, theirs = (set(ast.literal_eval(k)) for k in keys.groups())
        parts = []
        if theirs - ours:
            parts.append(f"state_dict() leaves out {', '.join(sorted(theirs - ours))}")
        if ours - theirs:
            parts.append(f"state_dict() holds {', '.join(sorted(ours - theirs))}, which torch's does not")
        if parts:
            return "; ".join(parts)
    indices = re.search(r"state indices (\[[^\]]*\]) != (\[[^\]]*\])", detail)
    if indices:
        ours_i, theirs_i = (set(ast.literal_eval(k)) for k in indices.groups())
        extra, missing = sorted(ours_i - theirs_i), sorted(theirs_i - ours_i)
        if extra:
            return f"state for parameter(s) {', '.join(f'#{i}' for i in extra)}, which torch never stepped"
        if missing:
            return f"no state for parameter(s) {', '.join(f'#{i}' for i in missing)}, which torch stepped"
    step = re.search(r"\['step'\] (\S+) != (\S+?)[;,)]?(?:\s|$)", detail)
    if step:
        ours_step, torch_step = step.groups()
        if ours_step in ("0", "0.0"):
            return f"the step counter does not advance (0 where torch's is {torch_step})"
        return f"the step counter is not torch's ({ours_step} where torch's is {torch_step})"
    return f"state_dict() differs from torch's ({detail.split(';')[0]})"


def observed_causes(outcomes: Sequence[CheckOutcome]) -> tuple[str, ...]:
    """Causes the failing checks observed directly, not in the trajectory (empty: none)."""
    out = []
    for o in outcomes:
        if o.passed or o.raised:
            continue
        if o.check == "dtype":
            widened = "float64 != float32" in o.detail or "complex128 != complex64" in o.detail
            out.append("float32 values stored in float64" if widened else f"dtypes not preserved ({o.detail})")
        elif o.check == "state_dict":
            out.append(_state_dict_cause(o.detail))
        elif o.check == "contract_load_hypers":
            out.append("load_state_dict() does not restore the saved hyperparameters (contract_load_hypers)")
    return tuple(dict.fromkeys(out))


def _unrestored(scenario: Scenario, candidate: Adapter) -> tuple[str, ...]:
    """Return what ``load_state_dict`` does not restore: run half the scenario, save, load into a fresh one, compare.

    Returns one cause per buffer (or step counter) the fresh candidate does not
    hold as the saved one did; empty when everything came back, or the candidate raised.
    """
    params0, grads = materialize(scenario)
    try:
        pair = LockstepPair(
            list(params0), scenario.hypers[0], scenario.matrix_case.impl.foreach, candidate, **pair_options(scenario)
        )
        for step, step_grads in enumerate(grads):
            if step >= max(1, scenario.steps // 2):
                break
            pair.apply_schedule(step)
            pair.step(list(step_grads))
        saved = pair._call("saving its state", pair.candidate.state_dict)
        fresh = pair._call("building it", candidate.create, pair.candidate_values(), pair.groups, pair.device)
        pair._call("loading its state", fresh.load_state_dict, saved)
        lost: dict[str, None] = {}
        for i in range(len(params0)):
            before, after = pair.candidate.buffers(i), fresh.buffers(i)
            for name, value in before.items():
                back = after.get(name)
                if back is None or back.shape != value.shape or not np.array_equal(back, value, equal_nan=True):
                    lost[name] = None
    except CandidateError:
        return ()
    return tuple(f"load_state_dict() does not restore {name}" for name in lost)


def _explain(run: _FreeRun) -> list[tuple[float, frozenset[str]]]:
    """Torch's own formula if it explains the run, else the smallest combinations that do (best first)."""
    torch_distance = _distance(run, frozenset(), DIAGNOSIS_BOUND)[0]
    if torch_distance <= DIAGNOSIS_BOUND:
        return [(torch_distance, frozenset())]
    return _search(run)


def _extensions(best: frozenset[str], run: _FreeRun) -> list[frozenset[str]]:
    """Return ``best`` and each combination of it with one more departure relevant to ``run`` (up to 3 in all)."""
    if len(best) >= MAX_COMBINATION:
        return [best]
    grown = [c for c in combinations_upto(relevant(_conditions(run)), len(best) + 1) if best < c]
    return [best, *grown]


def diagnose(scenario: Scenario, candidate: Adapter, outcomes: Sequence[CheckOutcome] = ()) -> Diagnosis | None:
    """Replay ``scenario`` through the known departures and name those that explain ``candidate``.

    ``outcomes`` (the scenario's check outcomes) contribute the causes the
    checks observed directly (:func:`observed_causes`).  Returns None when the
    candidate could not run the free run (it raised: nothing to explain).
    """
    observed = observed_causes(outcomes)
    failed = {o.check for o in outcomes if not o.passed and not o.raised}
    try:
        run = _free_run(scenario, candidate)
    except CandidateError:
        return None
    found = _explain(run)
    if found and not found[0][1] and found[0][0] > HONEST_DISTANCE:
        # torch's formula is within the bound, but farther than an honest run gets, and a check failed:
        # a variant far closer is the better explanation.
        closer = _search(run)
        if closer and closer[0][0] * CLEARLY_CLOSER < found[0][0]:
            found = closer
    decided_by = []
    for what, other in _telling_apart(scenario):
        if not found:
            break  # nothing explains it: another scenario would not either
        follows_torch = len(found) == 1 and not found[0][1]
        if len(found) == 1 and not follows_torch and not what.startswith(_LR_CHANGE):
            continue  # one explanation: only an lr change can still reveal a departure (lr inside the buffer)
        try:
            other_run = _free_run(other, candidate)
        except CandidateError:
            continue
        if follows_torch:  # does a departure show where this scenario hid it?
            decided = _explain(other_run)
            better = bool(decided) and bool(decided[0][1])
        elif len(found) > 1:  # does it tell the tied explanations apart?
            decided = _search(other_run, within=[c for _, c in found])
            better = 0 < len(decided) < len(found)
        else:  # does one more departure show, hidden here (lr inside the buffer, eps's place)?
            decided = _search(other_run, within=_extensions(found[0][1], other_run))
            better = bool(decided) and decided[0][1] != found[0][1]
        if better:
            found, run = decided, other_run
            decided_by.append(f"{what} (replay {other.to_id()})")
    synced: _FreeRun | None = None
    by_steps, step_torch = False, 0.0
    if found and not found[0][1] and failed & {"lockstep", "nonfinite"}:
        # The trajectory is torch's, but a step from torch's state is not: judge the steps one by one
        # (every buffer too), as the lockstep check does, against each variant's step from that state.
        try:
            synced = _free_run(scenario, candidate, lockstep=True)
        except CandidateError:
            synced = None
        # Only where torch's own formula fails the steps do they tell anything.
        step_torch = _step_distance(synced, frozenset()) if synced is not None else 0.0
        stepped = _step_search(synced) if synced is not None and step_torch > LOCKSTEP_BOUND else []
        if stepped:
            found, by_steps = stepped, True
            decided_by.append("its steps from torch's state, one at a time (the lockstep check's view)")
    if found and not found[0][1]:  # the trajectory is torch's: what the checks saw is all there is
        if failed & {"torch_to_candidate", "candidate_to_torch", "candidate_roundtrip", "reordered_load"}:
            observed += _unrestored(scenario, candidate)
        if failed & {"sign", "magnitude", "growth"}:
            observed += ("its roundings lean one way (a bias the sign test sees, within the free-running bound)",)
        observed = tuple(dict.fromkeys(observed))
    first = ""
    if not found or (not found[0][1] and not observed):
        # Nothing named: say where the candidate's step first leaves torch's, from torch's own state.
        if synced is None:
            try:
                synced = _free_run(scenario, candidate, lockstep=True)
            except CandidateError:
                synced = run
        if found and _flushes_subnormals(synced):
            observed += ("subnormal results flushed to zero (flush-to-zero arithmetic)",)
        else:
            first = _first_difference(synced)
    if not found:
        return Diagnosis(torch_distance=_distance(run, frozenset())[0], first_difference=first, observed=observed)
    (distance, best), ties = found[0], tuple(c for _, c in found[1:])
    return Diagnosis(
        causes=tuple(sorted(best)),
        explained=True,
        distance=distance,
        torch_distance=step_torch if by_steps else _distance(run, frozenset())[0],
        ties=ties,
        decided_by=" and by ".join(decided_by),
        first_difference=first,
        observed=observed,
    )
