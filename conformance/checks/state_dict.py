"""The ``state_dict`` family: torch's layout, hand-overs both ways, and the candidate's own round trip.

Checks: ``state_dict`` (layout, keys, ``step`` and hyperparameters equal
torch's after the same steps), ``torch_to_lucid`` and ``lucid_to_torch``
(state handed over mid-run through a file, restored exactly, and the next step
agrees without re-syncing), ``lucid_roundtrip`` (save, load into a fresh
optimizer through a pickle-free file, continue: bit-identical to an
uninterrupted run).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import lucid
from conformance import statedict
from conformance.checks.outcome import CheckOutcome, pair_options
from conformance.compare import LOCKSTEP_BOUND, Hyper
from conformance.lockstep import LockstepResult
from conformance.runners import LockstepPair
from conformance.scenario import Scenario
from conformance.streams import as_real, materialize

__all__ = ["run"]


def _bits(x: NDArray[Any]) -> NDArray[Any]:
    x = np.ascontiguousarray(as_real(x))  # complex: its parts' bits, so that NaN equals NaN there too
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


def run(scenario: Scenario, optimizer_class: type | None) -> list[CheckOutcome]:
    """Run the state_dict family on ``scenario``: layout, both hand-overs, the candidate's round trip."""
    params0, grads = materialize(scenario)
    options = pair_options(scenario)
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
