"""The ``state_dict`` family: torch's layout, hand-overs both ways, and the candidate's own round trip.

Checks: ``state_dict`` (layout, keys, ``step`` and hyperparameters equal
torch's after the same steps, schedule changes before the save included),
``torch_to_candidate`` and ``candidate_to_torch`` (state handed over mid-run through a
file, restored exactly, and the next step agrees without re-syncing),
``candidate_roundtrip`` (save, load into a fresh optimizer through a pickle-free
file, continue: bit-identical to an uninterrupted run) and ``reordered_load``
(torch's state_dict, its indices relabelled, loaded into an optimizer whose
same-shaped parameters come in another order).

Every receiving optimizer is built with *other* hyperparameters than the
saving one (:func:`other_hypers`): ``load_state_dict`` restores the saved
param groups' values, in torch, so the continuation must use those.  torch
maps saved state to parameters by position: the k-th index listed in the
saved ``param_groups`` (flattened in group order) names the state of the
k-th parameter of the loading optimizer, whatever the index's value and
whichever parameter object sits there.  ``reordered_load`` asserts exactly
that: the relabelled indices must be resolved through the saved lists (not
used as positions), and the state follows the position (not the parameter).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from conformance import statedict
from conformance.candidate import Adapter
from conformance.checks.outcome import CheckOutcome, pair_options
from conformance.compare import LOCKSTEP_BOUND
from conformance.lockstep import LockstepResult
from conformance.rmsprop import Hyper
from conformance.runners import LockstepPair
from conformance.scenario import Scenario
from conformance.streams import as_real, materialize

__all__ = ["other_hypers", "reordering", "run"]


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
            pair.sync_candidate_to_torch()
        for rec in pair.step(list(grads[step])):
            result.absorb(step, pair.hyper, rec)
    return result


def other_hypers(hypers: Sequence[Hyper]) -> list[Hyper]:
    """Hyperparameters unlike each group's (same flags), to build an optimizer that then loads a state_dict.

    Each value moves (``alpha`` across 1/2, so into torch's other ``lerp``
    branch; ``momentum`` and ``weight_decay`` on even where the saving group
    has them at 0): a candidate that keeps any of them through a load differs.
    """
    return [
        replace(
            h,
            lr=h.lr * 3 + 1e-3,
            alpha=0.3 if h.alpha >= 0.5 else 0.8,
            eps=h.eps * 10 + 1e-7,
            weight_decay=h.weight_decay * 2 + 1e-3,
            momentum=0.2 if h.momentum >= 0.5 else 0.7,
        )
        for h in hypers
    ]


def reordering(scenario: Scenario) -> list[int] | None:
    """Return a permutation of the parameters that moves only same-shaped ones within a group (None: none).

    The parameters of the first group that has several of one shape come in
    reverse order; every position keeps its shape and group, so torch's
    positional mapping of saved state stays well-defined.
    """
    for k in range(len(scenario.groups)):
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, spec in enumerate(scenario.params):
            if spec.group == k:
                by_shape.setdefault(tuple(spec.shape), []).append(i)
        for same in by_shape.values():
            if len(same) > 1:
                order = list(range(len(scenario.params)))
                for position, source in zip(same, reversed(same)):
                    order[position] = source
                return order
    return None


def _relabelled(sd: dict[str, Any]) -> dict[str, Any]:
    """``sd`` with every parameter index ``i`` renamed ``n - 1 - i``, in the groups' lists and the state alike.

    For torch the same state_dict: indices are labels, resolved through the
    saved ``param_groups``.  A loader that takes an index for a position
    puts every entry on the wrong parameter.
    """
    n = sum(len(g["params"]) for g in sd["param_groups"])
    return {
        "state": {n - 1 - int(i): entry for i, entry in sd["state"].items()},
        "param_groups": [{**g, "params": [n - 1 - int(i) for i in g["params"]]} for g in sd["param_groups"]],
    }


def _attempt(name: str, run: Callable[[], list[str]], ok_text: str) -> CheckOutcome:
    """Run one state_dict check; an exception from a broken candidate is that check's failure, not a crash."""
    try:
        problems = run()
    except Exception as err:  # the candidate raised: this check could not run (not a verdict on numbers)
        return CheckOutcome(name, False, f"the candidate raised {type(err).__name__}: {err}", raised=True)
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


def run(scenario: Scenario, candidate: Adapter) -> list[CheckOutcome]:
    """Run the state_dict family on ``scenario``: layout, the hand-overs, the candidate's round trip."""
    params0, grads = materialize(scenario)
    options = pair_options(scenario)
    foreach = scenario.matrix_case.impl.foreach
    split = max(1, scenario.steps // 2)
    other = other_hypers(scenario.hypers)
    out = []

    def fresh(values: Sequence[NDArray[Any]], hypers: list[Hyper] | None = None, **changes: Any) -> LockstepPair:
        chosen = {**options, "group_hypers": hypers or scenario.hypers, **changes}
        return LockstepPair([np.array(v) for v in values], chosen["group_hypers"][0], foreach, candidate, **chosen)

    with tempfile.TemporaryDirectory(prefix="conformance-") as tmp:
        # 1. Layout, keys, step and hyperparameters against torch after the same steps (and changes).
        pair = fresh(params0)
        _run_free_to(pair, grads, split)
        # What torch holds at the split, copied: a loading torch optimizer aliases the tensors it is given.
        torch_saved = copy.deepcopy(pair.torch_opt.state_dict())
        torch_values = [p.detach().cpu().numpy().copy() for p in pair.torch_params]
        ours: dict[str, Any] | None = None

        def layout() -> list[str]:
            nonlocal ours
            ours = pair.candidate.state_dict()
            return _compare_state_dicts(ours, statedict.to_numpy(pair.torch_opt.state_dict()), bitwise=False)

        out.append(_attempt("state_dict", layout, f"same layout as torch's after {split} steps"))

        def handover(nxt: LockstepPair, after_load: list[str], stream: Sequence[Sequence[Any]] = grads) -> list[str]:
            """Problems after a mid-run load; if none, the continuation must agree (first step unsynced)."""
            if after_load:
                return after_load
            nxt.reload_hypers()
            res = _continue(nxt, stream, split)
            return [] if res.passed(LOCKSTEP_BOUND) else [_continuation_problem(res)]

        # 2. torch -> candidate mid-run, through torch.save / torch.load(weights_only=True), into optimizers
        #    built with other hyperparameters.
        def torch_to_candidate() -> list[str]:
            loaded = statedict.to_numpy(statedict.torch_file_roundtrip(torch_saved, tmp))
            nxt = fresh(torch_values, other)
            nxt.torch_opt.load_state_dict(copy.deepcopy(torch_saved))
            nxt.candidate.load_state_dict(loaded)
            diff = _compare_state_dicts(nxt.candidate.state_dict(), loaded, bitwise=True)
            return handover(nxt, [f"after load: {p}" for p in diff])

        out.append(
            _attempt(
                "torch_to_candidate", torch_to_candidate, f"loaded exactly at step {split}, continued in agreement"
            )
        )

        # 3. candidate -> torch mid-run, through the candidate's file and torch's.
        def candidate_to_torch() -> list[str]:
            if ours is None:
                raise RuntimeError("the candidate's state_dict() failed")
            mine = statedict.lucid_file_roundtrip(ours, tmp)
            nxt = fresh(pair.candidate_values(), other)
            nxt.candidate.load_state_dict(mine)
            handed = statedict.torch_file_roundtrip(statedict.to_torch(mine, options["device"]), tmp)
            nxt.torch_opt.load_state_dict(_torch_only_keys(handed, nxt.torch_opt))
            if nxt.tensor_lr:
                for group in nxt.torch_opt.param_groups:
                    group["lr"] = nxt._torch_lr(float(group["lr"]))
            diff = _compare_state_dicts(statedict.to_numpy(nxt.torch_opt.state_dict()), mine, bitwise=True)
            return handover(nxt, [f"torch after load: {p}" for p in diff])

        out.append(
            _attempt(
                "candidate_to_torch", candidate_to_torch, f"torch continued from the candidate's step-{split} state"
            )
        )

        # 4. candidate -> file -> fresh candidate, continued: bit-identical to an uninterrupted run.
        def candidate_roundtrip() -> list[str]:
            whole = fresh(params0)
            _run_candidate(whole, grads, 0, len(grads))
            part = fresh(params0)
            _run_candidate(part, grads, 0, split)
            saved = statedict.lucid_file_roundtrip(part.candidate.state_dict(), tmp)
            resumed = fresh(part.candidate_values(), other)
            resumed.candidate.load_state_dict(saved)
            resumed.hypers = list(part.hypers)  # what the load restored: the schedule scales from these
            _run_candidate(resumed, grads, split, len(grads))
            problems = [
                f"param {i} differs in {int(np.count_nonzero(_bits(a) != _bits(b)))} elements"
                for i, (a, b) in enumerate(zip(whole.candidate_values(), resumed.candidate_values()))
                if a.shape != b.shape or not np.array_equal(_bits(a), _bits(b))
            ]
            return problems + _compare_state_dicts(
                resumed.candidate.state_dict(), whole.candidate.state_dict(), bitwise=True
            )

        out.append(_attempt("candidate_roundtrip", candidate_roundtrip, f"saved at step {split}, resumed bit for bit"))

        # 5. torch's state_dict, indices relabelled, into optimizers whose same-shaped parameters are reordered.
        order = reordering(scenario)

        def reordered_load() -> list[str]:
            assert order is not None
            relabelled = _relabelled(torch_saved)
            nxt = fresh([torch_values[i] for i in order], other, group_of=[scenario.group_of[i] for i in order])
            nxt.torch_opt.load_state_dict(copy.deepcopy(relabelled))
            nxt.candidate.load_state_dict(statedict.to_numpy(statedict.torch_file_roundtrip(relabelled, tmp)))
            diff = _compare_state_dicts(
                nxt.candidate.state_dict(), statedict.to_numpy(nxt.torch_opt.state_dict()), bitwise=True
            )
            stream = [[step[i] for i in order] for step in grads]
            return handover(nxt, [f"after load: {p}" for p in diff], stream)

        if order is None:
            out.append(CheckOutcome("reordered_load", True, "not judged: no group has two parameters of one shape"))
        else:
            swapped = [i for i, j in enumerate(order) if i != j]
            out.append(
                _attempt(
                    "reordered_load",
                    reordered_load,
                    f"relabelled indices, parameters {swapped} reordered: state followed the position as in torch",
                )
            )
    return out


def _run_candidate(pair: LockstepPair, grads: Sequence[Sequence[Any]], start: int, stop: int) -> None:
    """Step the candidate alone from ``start`` to ``stop``, its schedule applied as the pair applies it."""
    for step in range(start, stop):
        pair.apply_schedule(step)
        pair.step_candidate(list(grads[step]))
