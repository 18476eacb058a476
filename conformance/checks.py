"""The checks a candidate optimizer must pass on one scenario, each with its name.

Check families (a :class:`~conformance.scenario.Scenario` lists the ones it runs):

``lockstep``
    Re-sync the candidate to torch before every step and compare one step at a
    time (bound :data:`~conformance.compare.LOCKSTEP_BOUND`, derived in
    :mod:`conformance.compare`).  Gives three checks: ``lockstep`` (every
    quantity within the bound), ``nonfinite`` (NaN/+Inf/-Inf at the same
    positions) and ``dtype`` (parameter and buffers keep torch's dtype).
``freerun``
    Run both sides through the whole stream without re-syncing; the
    trajectories must stay within :data:`~conformance.freerun.FREE_RUN_BOUND`
    of the accumulated scale (derived in :mod:`conformance.freerun`).
``sign``
    The sign test against the float64 oracle (:func:`sign_statistic`), which
    catches a systematic one-ULP bias that no max-ULP bound can see.
``state_dict``
    ``state_dict`` (layout, keys, ``step`` and hyperparameters equal torch's
    after the same steps), ``torch_to_lucid`` and ``lucid_to_torch`` (state
    handed over mid-run through a file, restored exactly, and the next step
    agrees without re-syncing), ``lucid_roundtrip`` (save, load into a fresh
    optimizer through a pickle-free file, continue: bit-identical to an
    uninterrupted run).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import lucid
from conformance import statedict
from conformance.compare import LOCKSTEP_BOUND, Hyper
from conformance.freerun import FREE_RUN_BOUND, run_free
from conformance.lockstep import LockstepResult, run_lockstep
from conformance.oracle import oracle_precision_bits, oracle_step
from conformance.runners import LockstepPair
from conformance.scenario import FAMILIES, Scenario
from conformance.streams import materialize

__all__ = [
    "CHECKS",
    "FAMILIES",
    "FREE_RUN_MIN_STEPS",
    "SIGN_MIN_SAMPLES",
    "SIGN_WARMUP",
    "SIGN_Z",
    "CheckOutcome",
    "DeviceUnavailableError",
    "SignStatistic",
    "require_device",
    "run_checks",
    "sign_statistic",
]

CHECKS = tuple(name for names in FAMILIES.values() for name in names)

#: The issue asks free-running comparisons of at least 100 steps.
FREE_RUN_MIN_STEPS = 100

#: Sign test threshold in standard deviations.  Under "the candidate is no more
#: biased than torch", each eligible element-step contributes an independent
#: +-1 with mean 0 (honest round-to-nearest), so the statistic has standard
#: deviation 1/sqrt(n); 6 sigma gives a false alarm probability of 2e-9 per test.
SIGN_Z = 6.0
#: Below this many eligible element-steps the test has no power against a
#: one-sided bias (6/sqrt(n) must stay well below 1) and is not judged.
SIGN_MIN_SAMPLES = 400
#: Steps left out of the sign test: in the first steps every element's update
#: has the same magnitude (lr/sqrt(1-alpha) on step 1, whatever the gradient),
#: so roundings are correlated across elements, not independent.
SIGN_WARMUP = 2


class DeviceUnavailableError(RuntimeError):
    """The case needs a device this machine does not have."""


def require_device(device: str) -> None:
    """Raise :class:`DeviceUnavailableError` (naming the reason) if torch cannot use ``device``."""
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) "
            "sees no GPU, so the cuda cases cannot run here"
        )


@dataclass(frozen=True)
class CheckOutcome:
    """One named check's result on one scenario."""

    check: str
    passed: bool
    detail: str
    verdict: str = ""

    def __str__(self) -> str:
        status = "ok  " if self.passed else "FAIL"
        verdict = f"; {self.verdict}" if self.verdict else ""
        return f"{status} {self.check}: {self.detail}{verdict}"


def _pair_options(scenario: Scenario) -> dict[str, Any]:
    case = scenario.matrix_case
    require_device(case.device)
    return {
        "device": case.device,
        "group_hypers": scenario.hypers,
        "group_of": scenario.group_of,
        "capturable": case.impl.capturable,
        "tensor_lr": case.impl.tensor_lr,
        "lr_factors": {scenario.lr_change[0]: scenario.lr_change[1]} if scenario.lr_change else {},
    }


def _lockstep(scenario: Scenario, optimizer_class: type | None) -> list[CheckOutcome]:
    params0, grads = materialize(scenario)
    case = scenario.matrix_case
    result = run_lockstep(
        params0,
        scenario.hypers[0],
        grads,
        foreach=case.impl.foreach,
        optimizer_class=optimizer_class,
        **_pair_options(scenario),
    )
    worst = ", ".join(f"{k} {v:.3g} (step {result.worst_step[k]})" for k, v in sorted(result.worst.items()))
    ok = result.max_error <= LOCKSTEP_BOUND
    found = result.verdict(scenario.hypers[0]) if not ok else None
    return [
        CheckOutcome(
            "lockstep",
            ok,
            f"worst u*scale errors {worst or 'none compared'}; bound {LOCKSTEP_BOUND:g}; "
            f"bit-identical {result.bitwise_fraction:.2%} of {result.elements} parameter element-steps",
            "" if found is None else str(found),
        ),
        CheckOutcome(
            "nonfinite", not result.nonfinite_mismatches, f"{result.nonfinite_mismatches} NaN/Inf positions differ"
        ),
        CheckOutcome("dtype", not result.dtype_errors, "; ".join(result.dtype_errors) or "dtypes preserved"),
    ]


def _freerun(scenario: Scenario, optimizer_class: type | None) -> list[CheckOutcome]:
    if scenario.steps < FREE_RUN_MIN_STEPS:
        raise ValueError(f"a free-running scenario needs >= {FREE_RUN_MIN_STEPS} steps, got {scenario.steps}")
    params0, grads = materialize(scenario)
    result = run_free(
        params0,
        scenario.hypers[0],
        grads,
        foreach=scenario.matrix_case.impl.foreach,
        optimizer_class=optimizer_class,
        **_pair_options(scenario),
    )
    worst_step = int(np.argmax(result.normalised)) if result.normalised else 0
    return [
        CheckOutcome(
            "freerun",
            result.passed(FREE_RUN_BOUND),
            f"{scenario.steps} steps: worst {result.max_normalised:.3g} u*accumulated scale (step {worst_step}), "
            f"bound {FREE_RUN_BOUND:g}; final relative difference {result.relative[-1] if result.relative else 0:.3g}; "
            f"growth exponent {result.growth_exponent:.2f}; {result.nonfinite_mismatches} NaN/Inf positions differ "
            f"({result.nonfinite_excused} more where the dynamics had blown up past the bound)",
        )
    ]


@dataclass(frozen=True)
class SignStatistic:
    """Signs of (side - exact) over eligible parameter element-steps.

    ``lucid`` and ``torch`` are ``(#above - #below) / n``: about 0 for honest
    rounding, about +1 for a side that is one ULP high on every step.
    """

    lucid: float
    torch: float
    n: int
    oracle_extra_bits: int

    @property
    def threshold(self) -> float:
        """``SIGN_Z / sqrt(n)``: the noise allowance."""
        return SIGN_Z / math.sqrt(self.n) if self.n else math.inf

    @property
    def judged(self) -> bool:
        """Whether there are enough samples and an oracle wider than the dtype."""
        return self.n >= SIGN_MIN_SAMPLES and self.oracle_extra_bits > 0

    @property
    def passed(self) -> bool:
        """The candidate is not more biased than torch beyond noise: ``|S_L| <= |S_T| + z/sqrt(n)``."""
        return not self.judged or abs(self.lucid) <= abs(self.torch) + self.threshold


def sign_statistic(
    params0: Sequence[NDArray[Any]],
    grads: Sequence[Sequence[NDArray[Any] | None]],
    optimizer_class: type | None = None,
    *,
    foreach: bool = False,
    warmup: int = SIGN_WARMUP,
    **pair_options: Any,
) -> SignStatistic:
    """Run in lockstep and count, per side, parameter elements above minus below the oracle.

    Eligible element-steps: after ``warmup`` steps, every value finite, and the
    exact update non-zero (an element the step does not move is exact on both
    sides and carries no information).
    """
    pair = LockstepPair(list(params0), pair_options.pop("hyper", Hyper()), foreach, optimizer_class, **pair_options)
    above_l = above_t = n = 0
    extra = oracle_precision_bits(params0[0].dtype) if params0 else 0
    for step, step_grads in enumerate(grads):
        pair.apply_schedule(step)
        pair.sync_lucid_to_torch()
        for rec in pair.step(list(step_grads)):
            if step < warmup or rec.grad is None or rec.lucid_param.shape != rec.torch_param.shape:
                continue
            exact = oracle_step(rec.hyper or pair.hyper, rec.param0, rec.grad, rec.torch_state0).param
            w = exact.dtype
            ours, theirs = rec.lucid_param.astype(w), rec.torch_param.astype(w)
            with np.errstate(invalid="ignore"):
                keep = np.isfinite(exact) & np.isfinite(ours) & np.isfinite(theirs) & (exact != rec.param0.astype(w))
            above_l += int(np.sum(np.sign(ours[keep] - exact[keep])))
            above_t += int(np.sum(np.sign(theirs[keep] - exact[keep])))
            n += int(np.count_nonzero(keep))
    return SignStatistic(above_l / n if n else 0.0, above_t / n if n else 0.0, n, extra)


def _sign(scenario: Scenario, optimizer_class: type | None) -> list[CheckOutcome]:
    params0, grads = materialize(scenario)
    stat = sign_statistic(
        params0,
        grads,
        optimizer_class,
        foreach=scenario.matrix_case.impl.foreach,
        hyper=scenario.hypers[0],
        **_pair_options(scenario),
    )
    if not stat.judged:
        why = "no oracle wider than the dtype" if not stat.oracle_extra_bits else f"only {stat.n} element-steps"
        return [CheckOutcome("sign", True, f"not judged: {why}")]
    return [
        CheckOutcome(
            "sign",
            stat.passed,
            f"(above - below exact)/n: candidate {stat.lucid:+.4f}, torch {stat.torch:+.4f} over n = {stat.n}; "
            f"allowed |candidate| <= |torch| + {stat.threshold:.4f}",
            f"candidate biased {'high' if stat.lucid > 0 else 'low'} against the float64 oracle"
            if not stat.passed
            else "",
        )
    ]


# ---------------------------------------------------------------- state_dict


def _bits(x: NDArray[Any]) -> NDArray[Any]:
    x = np.ascontiguousarray(x)
    return x.view(f"u{x.dtype.itemsize}") if x.dtype.kind == "f" else x


def _compare_state_dicts(ours: dict[str, Any], theirs: dict[str, Any], *, bitwise: bool) -> list[str]:
    """Differences between two NumPy-form state_dicts (``bitwise``: arrays bit for bit, else layout only)."""
    problems: list[str] = []
    if set(ours["state"]) != set(theirs["state"]):
        problems.append(f"state indices {sorted(ours['state'])} != {sorted(theirs['state'])}")
    for index in sorted(set(ours["state"]) & set(theirs["state"])):
        a, b = ours["state"][index], theirs["state"][index]
        if set(a) != set(b):
            problems.append(f"state[{index}] keys {sorted(a)} != {sorted(b)}")
        for key in sorted(set(a) & set(b)):
            x, y = a[key], b[key]
            if key == "step":
                if float(x) != float(y):
                    problems.append(f"state[{index}]['step'] {float(x):g} != {float(y):g}")
                continue
            x, y = np.asarray(x), np.asarray(y)
            if x.shape != y.shape or x.dtype != y.dtype:
                problems.append(f"state[{index}][{key!r}] {x.dtype}{list(x.shape)} != {y.dtype}{list(y.shape)}")
            elif bitwise and not np.array_equal(_bits(x), _bits(y)):
                problems.append(
                    f"state[{index}][{key!r}] differs in {int(np.count_nonzero(_bits(x) != _bits(y)))} elements"
                )
    if len(ours["param_groups"]) != len(theirs["param_groups"]):
        problems.append(f"{len(ours['param_groups'])} param groups != {len(theirs['param_groups'])}")
    for k, (ga, gb) in enumerate(zip(ours["param_groups"], theirs["param_groups"])):
        if list(ga.get("params", [])) != list(gb.get("params", [])):
            problems.append(f"param_groups[{k}]['params'] {ga.get('params')} != {gb.get('params')}")
        for key in Hyper.__dataclass_fields__:
            if key not in ga or key not in gb:
                problems.append(f"param_groups[{k}] lacks {key!r}")
            elif float(ga[key]) != float(gb[key]):
                problems.append(f"param_groups[{k}][{key!r}] {ga[key]} != {gb[key]}")
    return problems


def _feed(params: Sequence[Any], opt: Any, step_grads: Sequence[NDArray[Any] | None]) -> None:
    for p, g in zip(params, step_grads):
        p.grad = None if g is None else np.array(g, copy=True)
    opt.step()


def _torch_only_keys(sd: dict[str, Any], opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Keep torch's implementation switches (foreach, capturable, ...) across a load of a Lucid state_dict."""
    for saved, current in zip(sd["param_groups"], opt.param_groups):
        for key in ("foreach", "capturable", "differentiable", "fused"):
            if key in current:
                saved.setdefault(key, current[key])
    return sd


def _continue(pair: LockstepPair, grads: Sequence[Sequence[Any]], start: int) -> LockstepResult:
    """Continue both sides; the first step without re-syncing (it uses the loaded state), the rest in lockstep."""
    result = LockstepResult()
    for step in range(start, len(grads)):
        pair.apply_schedule(step)
        if step > start:
            pair.sync_lucid_to_torch()
        for rec in pair.step(list(grads[step])):
            result.absorb(step, pair.hyper, rec)
    return result


def _attempt(name: str, run: Callable[[], list[str]], ok_text: str) -> CheckOutcome:
    """Run one state_dict check; an exception from a broken candidate is that check's failure, not a crash."""
    try:
        problems = run()
    except Exception as err:  # the candidate may raise anything; report it under this check's name
        problems = [f"{type(err).__name__}: {err}"]
    return CheckOutcome(name, not problems, "; ".join(problems[:4]) or ok_text)


def _continuation_problem(res: LockstepResult) -> str:
    return (
        f"continuing: worst {res.max_error:.3g} u*scale (bound {LOCKSTEP_BOUND:g}), "
        f"{res.nonfinite_mismatches} NaN/Inf mismatches"
    )


def _run_free_to(pair: LockstepPair, grads: Sequence[Sequence[Any]], stop: int) -> None:
    for step in range(stop):
        pair.apply_schedule(step)
        pair.step(list(grads[step]))


def _state_dict(scenario: Scenario, optimizer_class: type | None) -> list[CheckOutcome]:
    params0, grads = materialize(scenario)
    options = _pair_options(scenario)
    foreach = scenario.matrix_case.impl.foreach
    cls = optimizer_class or lucid.optim.RMSprop
    split = max(1, scenario.steps // 2)
    out = []

    def fresh(values: Sequence[NDArray[Any]]) -> LockstepPair:
        return LockstepPair([np.array(v) for v in values], scenario.hypers[0], foreach, cls, **options)

    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        # 1. Layout, keys, step and hyperparameters against torch after the same steps.
        pair = fresh(params0)
        _run_free_to(pair, grads, split)
        ours: dict[str, Any] | None = None

        def layout() -> list[str]:
            nonlocal ours
            ours = pair.lucid_opt.state_dict()
            return _compare_state_dicts(ours, statedict.to_numpy(pair.torch_opt.state_dict()), bitwise=False)

        out.append(_attempt("state_dict", layout, f"same layout as torch's after {split} steps"))

        def handover(nxt: LockstepPair, after_load: list[str]) -> list[str]:
            """Problems after a mid-run load; if none, the continuation must agree (first step unsynced)."""
            if after_load:
                return after_load
            res = _continue(nxt, grads, split)
            return [] if res.passed(LOCKSTEP_BOUND) else [_continuation_problem(res)]

        # 2. torch -> candidate mid-run, through torch.save / torch.load(weights_only=True).
        def torch_to_lucid() -> list[str]:
            loaded = statedict.to_numpy(statedict.torch_file_roundtrip(pair.torch_opt.state_dict(), tmp))
            nxt = fresh([p.detach().cpu().numpy() for p in pair.torch_params])
            nxt.torch_opt.load_state_dict(pair.torch_opt.state_dict())
            nxt.lucid_opt.load_state_dict(loaded)
            diff = _compare_state_dicts(nxt.lucid_opt.state_dict(), loaded, bitwise=True)
            return handover(nxt, [f"after load: {p}" for p in diff])

        out.append(
            _attempt("torch_to_lucid", torch_to_lucid, f"loaded exactly at step {split}, continued in agreement")
        )

        # 3. candidate -> torch mid-run, through the candidate's file and torch's.
        def lucid_to_torch() -> list[str]:
            if ours is None:
                raise RuntimeError("the candidate's state_dict() failed")
            mine = statedict.lucid_file_roundtrip(ours, tmp)
            nxt = fresh([p.data for p in pair.lucid_params])
            nxt.lucid_opt.load_state_dict(mine)
            handed = statedict.torch_file_roundtrip(statedict.to_torch(mine, options["device"]), tmp)
            nxt.torch_opt.load_state_dict(_torch_only_keys(handed, nxt.torch_opt))
            if nxt.tensor_lr:
                for group in nxt.torch_opt.param_groups:
                    group["lr"] = nxt._torch_lr(float(group["lr"]))
            diff = _compare_state_dicts(statedict.to_numpy(nxt.torch_opt.state_dict()), mine, bitwise=True)
            return handover(nxt, [f"torch after load: {p}" for p in diff])

        out.append(
            _attempt("lucid_to_torch", lucid_to_torch, f"torch continued from the candidate's step-{split} state")
        )

        # 4. candidate -> file -> fresh candidate, continued: bit-identical to an uninterrupted run.
        def lucid_roundtrip() -> list[str]:
            whole = fresh(params0)
            _run_lucid(whole, grads, 0, len(grads))
            part = fresh(params0)
            _run_lucid(part, grads, 0, split)
            saved = statedict.lucid_file_roundtrip(part.lucid_opt.state_dict(), tmp)
            resumed = fresh([p.data for p in part.lucid_params])
            resumed.lucid_opt.load_state_dict(saved)
            _run_lucid(resumed, grads, split, len(grads))
            problems = [
                f"param {i} differs in {int(np.count_nonzero(_bits(a.data) != _bits(b.data)))} elements"
                for i, (a, b) in enumerate(zip(whole.lucid_params, resumed.lucid_params))
                if a.data.shape != b.data.shape or not np.array_equal(_bits(a.data), _bits(b.data))
            ]
            return problems + _compare_state_dicts(
                resumed.lucid_opt.state_dict(), whole.lucid_opt.state_dict(), bitwise=True
            )

        out.append(_attempt("lucid_roundtrip", lucid_roundtrip, f"saved at step {split}, resumed bit for bit"))
    return out


def _run_lucid(pair: LockstepPair, grads: Sequence[Sequence[Any]], start: int, stop: int) -> None:
    factors = pair.lr_factors
    for step in range(start, stop):
        if step in factors:  # the lr the schedule would set; Lucid side only
            for group in pair.lucid_opt.param_groups:
                group["lr"] = group["lr"] * factors[step]
        _feed(pair.lucid_params, pair.lucid_opt, grads[step])


_FAMILY_RUNNERS = {"lockstep": _lockstep, "freerun": _freerun, "sign": _sign, "state_dict": _state_dict}


def run_checks(scenario: Scenario, optimizer_class: type | None = None) -> list[CheckOutcome]:
    """Run every check family ``scenario.checks`` names against ``optimizer_class`` (default Lucid's RMSprop).

    Raises
    ------
    DeviceUnavailableError
        If the scenario's case needs a device torch does not see.
    """
    unknown = [f for f in scenario.checks if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown check families {unknown}; expected some of {list(FAMILIES)}")
    outcomes: list[CheckOutcome] = []
    for family in scenario.checks:
        try:
            outcomes += _FAMILY_RUNNERS[family](scenario, optimizer_class)
        except DeviceUnavailableError:
            raise
        except Exception as err:  # a candidate that raises fails the family's first check, with the error
            outcomes.append(CheckOutcome(FAMILIES[family][0], False, f"the run raised {type(err).__name__}: {err}"))
    return outcomes
