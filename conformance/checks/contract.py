"""The ``contract`` family: the optimizer API as ``torch.optim.RMSprop`` defines it, one check per item.

The numerical families compare what a step computes; this one checks what a
caller relies on besides the numbers, each item as torch 2.x behaves (and
:func:`run` given ``torch.optim.RMSprop`` itself runs every item on torch, so
the tests assert that torch passes its own contract):

``contract_positional``
    ``RMSprop(params, lr, alpha, eps, weight_decay, momentum, centered)``
    positionally: the groups hold those values in that order, and it steps bit
    for bit as the optimizer built by keywords.
``contract_zero_grad``
    ``zero_grad()`` sets every gradient to None (``set_to_none=True`` is the
    default); ``zero_grad(set_to_none=False)`` zeroes each gradient array in
    place and leaves a None gradient None.
``contract_closure``
    ``step(closure)`` calls the closure exactly once, before the update, with
    gradients enabled even under ``no_grad`` (and restored afterwards), steps
    with the gradients the closure leaves, and returns the closure's loss
    itself; ``step()`` returns None.
``contract_grad_untouched``
    ``step`` leaves every ``p.grad`` the same array with the same bits, on the
    scenario's own parameters and first two gradients, with its
    hyperparameters and with weight decay, momentum and centering on, maximize
    off and on (neither the decay nor the sign may be applied to the gradient
    in place).
``contract_state_isolation``
    No state shared between parameters (three of one size, two of them of one
    shape) or between two optimizers: buffers share no memory, and a step of
    one parameter, or of one optimizer, moves nothing else.
``contract_load_hypers``
    ``load_state_dict`` into an optimizer built with other hyperparameters and
    flags restores the saved ones (an lr changed before the save included),
    and the loaded optimizer continues bit for bit as the one that saved.
``contract_load_mapping``
    Saved state index ``i`` goes to the ``i``-th parameter over the groups in
    order, whatever the order of the saved entries, with a parameter that has
    no state in between and several of one shape and size.
``contract_named_params``
    ``RMSprop(model.named_parameters())`` and groups of ``(name, parameter)``
    pairs: ``params`` holds the parameters and ``param_names`` the names, in
    each group and in the state_dict's groups (absent without names); loading
    takes the saved names, keeps its own when the saved groups have none, and
    accepts torch's own named state_dict; a group that gives ``param_names``
    itself keeps them; names mixed with plain parameters are refused.
``contract_param_groups``
    A parameter in two groups is refused, by the constructor and by
    ``add_param_group`` (which then adds nothing); a scheduler's ``initial_lr``
    in a group changes no step and survives ``state_dict`` and
    ``load_state_dict``; ``lr`` as a 0-d float64 tensor of the library steps bit
    for bit as the float.
``contract_bad_grad``
    A gradient of another shape (one that broadcasts, one of the same size) or
    of the other precision is never stepped with: torch refuses the
    assignment; where the library allows it, ``step`` must refuse and leave
    every parameter, buffer and step count as it was.
``contract_in_place``
    Small parameters, several of a shape, in one group: a reference to a
    parameter's values taken before the steps sees every update (torch
    updates in place); a parameter and its buffers given new values between
    steps by assigning new arrays step exactly as when the values are written
    in place (torch reads ``p.data`` and ``opt.state[p]`` at every step).

Every failure says what the candidate did and what torch does.  An exception
raised inside one item fails that item with the error and the others still run.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from conformance import statedict
from conformance.adapters.objects import Library
from conformance.candidate import Adapter, resolve
from conformance.checks.outcome import CheckOutcome
from conformance.rmsprop import Hyper, reference_class
from conformance.scenario import FAMILIES, Scenario
from conformance.streams import materialize

__all__ = ["CONTRACT_CHECKS", "POSITIONAL_ORDER", "TORCH_DOES", "run"]

#: The checks of this family, in the order :func:`run` reports them.
CONTRACT_CHECKS = FAMILIES["contract"]

#: torch's positional order of RMSprop's constructor after ``params`` (``maximize`` comes later, after
#: torch's own ``capturable`` and ``foreach``, so it is passed by keyword).
POSITIONAL_ORDER = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

#: Hyperparameters no default equals and no two of which are equal, so a value in the wrong place shows.
_DISTINCT = {"lr": 0.0123, "alpha": 0.876, "eps": 3.4e-5, "weight_decay": 0.0456, "momentum": 0.321}


def _draw(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
    """Draw standard normal values of ``dtype`` (complex: both parts drawn)."""
    x = rng.standard_normal(shape)
    if dtype.kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _same(a: NDArray[Any] | None, b: NDArray[Any] | None) -> bool:
    """Whether two arrays hold the same bits (NaN payloads and signed zeros included), or both are None."""
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and a.dtype == b.dtype and np.ascontiguousarray(a).tobytes() == b.tobytes()


def _differing(a: NDArray[Any], b: NDArray[Any]) -> str:
    """How many elements of two same-shaped arrays differ, for a message."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"{a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}"
    x, y = np.ascontiguousarray(a), np.ascontiguousarray(b)
    bits = f"u{x.dtype.itemsize // (2 if x.dtype.kind == 'c' else 1)}"
    n = int(np.count_nonzero((x.view(bits) != y.view(bits)).reshape(x.size, -1).any(axis=1))) if x.size else 0
    return f"{n} of {x.size} elements differ"


def _snapshot(side: Library, opt: Any, params: Sequence[Any]) -> list[tuple[NDArray[Any], dict[str, NDArray[Any]]]]:
    """Copy every parameter's values and buffers."""
    return [(side.values(p), {k: v.copy() for k, v in side.buffers(opt, p).items()}) for p in params]


def _moved(before: Sequence[Any], after: Sequence[Any], label: Callable[[int], str]) -> list[str]:
    """Name the parameters and buffers that differ between two snapshots."""
    problems = []
    for i, ((v0, b0), (v1, b1)) in enumerate(zip(before, after)):
        if not _same(v0, v1):
            problems.append(f"{label(i)} moved ({_differing(v0, v1)})")
        for key in sorted(set(b0) | set(b1)):
            if not _same(b0.get(key), b1.get(key)):
                problems.append(f"{label(i)}'s {key} changed")
    return problems


def _compare_runs(side: Library, ours: tuple[Any, Sequence[Any]], theirs: tuple[Any, Sequence[Any]]) -> list[str]:
    """Where two optimizers' parameters and buffers differ (bit for bit); each run is ``(optimizer, params)``."""
    problems = []
    for i, (p, q) in enumerate(zip(ours[1], theirs[1])):
        a, b = side.values(p), side.values(q)
        if not _same(a, b):
            problems.append(f"params[{i}] {_differing(a, b)}")
        ba, bb = side.buffers(ours[0], p), side.buffers(theirs[0], q)
        for key in sorted(set(ba) | set(bb)):
            if not _same(ba.get(key), bb.get(key)):
                problems.append(f"params[{i}]'s {key} differs" if key in ba and key in bb else f"{key} only on one")
    return problems


def _feed(side: Library, params: Sequence[Any], grads: Sequence[NDArray[Any] | None]) -> None:
    for p, g in zip(params, grads):
        side.set_grad(p, g)


def _run(side: Library, opt: Any, params: Sequence[Any], grads: Sequence[Sequence[NDArray[Any] | None]]) -> None:
    """Step ``opt`` once per entry of ``grads`` (one gradient or None per parameter)."""
    for step in grads:
        _feed(side, params, step)
        opt.step()


def _run_alike(
    side: Library, ours: tuple[Any, Sequence[Any]], theirs: tuple[Any, Sequence[Any]], grads: Sequence[Sequence[Any]]
) -> list[str]:
    """Step two runs ``(optimizer, params)`` through the same ``grads``; return where they differ."""
    for opt, params in (ours, theirs):
        _run(side, opt, params, grads)
    return _compare_runs(side, ours, theirs)


def _hyper_keys(group: dict[str, Any]) -> dict[str, Any]:
    return {k: group.get(k, "<missing>") for k in Hyper.__dataclass_fields__}


def _hyper_differences(group: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """``key=value (expected e)`` for every hyperparameter of ``group`` that is not ``expected``'s."""
    out = []
    for key, want in expected.items():
        have = group.get(key, "<missing>")
        same = have == want if isinstance(want, bool) else (have != "<missing>" and float(have) == float(want))
        if not same:
            out.append(f"{key}={have!r} (expected {want!r})")
    return out


# ---------------------------------------------------------------------------- the items


def _positional(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    values: dict[str, Any] = {**_DISTINCT, "centered": not hyper.centered}
    shapes = [(6,), (2, 3)]
    init = [_draw(rng, s, side.dtype) for s in shapes]
    grads = [[_draw(rng, s, side.dtype) for s in shapes] for _ in range(2)]
    pos_params, kw_params = [side.param(v) for v in init], [side.param(v) for v in init]
    args = [values[k] for k in POSITIONAL_ORDER]
    by_position = side.cls(pos_params, *args, maximize=hyper.maximize)
    by_keyword = side.cls(kw_params, **values, maximize=hyper.maximize)
    call = f"RMSprop(params, {', '.join(repr(a) for a in args)})"
    problems = []
    wrong = _hyper_differences(by_position.param_groups[0], values)
    if wrong:
        problems.append(
            f"{call} gave {', '.join(wrong)}; torch's positional order is (params, {', '.join(POSITIONAL_ORDER)})"
        )
    wrong = _hyper_differences(by_keyword.param_groups[0], values)
    if wrong:
        problems.append(f"built by keywords it holds {', '.join(wrong)}; torch's groups hold the values passed")
    diff = _run_alike(side, (by_position, pos_params), (by_keyword, kw_params), grads)
    if diff:
        problems.append(f"built positionally it stepped differently from by keywords ({'; '.join(diff[:3])})")
    return problems


def _zero_grad(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    params = [side.param(_draw(rng, (5,), side.dtype)) for _ in range(3)]
    opt = side.cls(params, **hyper.kwargs())
    problems = []
    _feed(side, params, [_draw(rng, (5,), side.dtype), _draw(rng, (5,), side.dtype), None])
    opt.zero_grad()
    left = [f"params[{i}].grad is {type(p.grad).__name__}" for i, p in enumerate(params) if p.grad is not None]
    if left:
        problems.append(
            f"zero_grad() left {', '.join(left)}; torch's zero_grad() sets every grad to None (set_to_none=True)"
        )
    held = [side.set_grad(p, g) for p, g in zip(params, [_draw(rng, (5,), side.dtype)] * 2 + [None])]
    opt.zero_grad(set_to_none=False)
    for i, (p, obj) in enumerate(zip(params, held)):
        if obj is None:
            if p.grad is not None:
                problems.append(
                    f"zero_grad(set_to_none=False) gave params[{i}] (grad None) a gradient; torch leaves it None"
                )
            continue
        if p.grad is not obj:
            problems.append(
                f"zero_grad(set_to_none=False) replaced params[{i}].grad "
                f"({'with None' if p.grad is None else 'with another array'}); torch zeroes it in place"
            )
        g = side.grad(p)
        if g is not None and (g.shape != (5,) or g.dtype != side.dtype or np.count_nonzero(g)):
            problems.append(f"zero_grad(set_to_none=False) left params[{i}].grad {g!r}; torch zeroes every element")
    return problems


def _closure(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    shapes = [(7,), (3, 2)]
    init = [_draw(rng, s, side.dtype) for s in shapes]
    before, inside = ([_draw(rng, s, side.dtype) for s in shapes] for _ in range(2))
    params, reference = [side.param(v) for v in init], [side.param(v) for v in init]
    opt, ref_opt = side.cls(params, **hyper.kwargs()), side.cls(reference, **hyper.kwargs())
    problems = []
    _feed(side, params, before)
    calls: list[bool] = []
    loss = np.float64(0.625)  # any object: torch returns the closure's value itself

    def closure() -> Any:
        calls.append(side.grad_enabled())
        _feed(side, params, inside)
        return loss

    with side.no_grad():
        returned = opt.step(closure)
        after = side.grad_enabled()
    if len(calls) != 1:
        problems.append(f"step(closure) called the closure {len(calls)} times; torch calls it exactly once")
    if calls and not all(calls):
        problems.append(
            "the closure ran with gradients disabled (step called under no_grad); "
            "torch runs it inside enable_grad, so that it can compute gradients"
        )
    if after:
        problems.append("step(closure) under no_grad left gradients enabled; torch restores the caller's mode")
    if returned is not loss:
        problems.append(f"step(closure) returned {returned!r}, not the closure's loss {loss!r}; torch returns it")
    _feed(side, reference, inside)
    ref_opt.step()
    diff = _compare_runs(side, (opt, params), (ref_opt, reference))
    if diff:
        problems.append(
            "step(closure) did not step with the gradients the closure set "
            f"({'; '.join(diff[:2])}); torch calls the closure first, then updates"
        )
    _feed(side, params, inside)
    plain = opt.step()
    if plain is not None:
        problems.append(f"step() without a closure returned {plain!r}; torch returns None")
    return problems


def _grad_untouched(side: Library, scenario: Scenario, hyper: Hyper) -> list[str]:
    params0, grads = materialize(scenario)
    configs = [("the scenario's hyperparameters", hyper)] + [
        (
            f"weight decay, momentum, centered{', maximize' if up else ''}",
            Hyper(**_DISTINCT, centered=True, maximize=up),
        )
        for up in (False, True)  # each way: a decay in place may write p.grad only where maximize is off
    ]
    problems: list[str] = []
    for label, settings in configs:
        params = [side.param(v) for v in params0]
        opt = side.cls(params, **settings.kwargs())
        for step, step_grads in enumerate(grads[:2]):  # the step that creates the state, and one that has it
            held = [side.set_grad(p, g) for p, g in zip(params, step_grads)]
            copies = [None if obj is None else side.grad(p).copy() for p, obj in zip(params, held)]
            opt.step()
            for i, (p, obj, copy) in enumerate(zip(params, held, copies)):
                if obj is None:
                    if p.grad is not None:
                        problems.append(f"{label}: step {step} gave params[{i}] (grad None) a gradient")
                    continue
                if p.grad is not obj:
                    problems.append(f"{label}: step {step} replaced params[{i}].grad with another object")
                now = side.grad(p)
                if now is not None and not _same(copy, now):
                    problems.append(f"{label}: step {step} wrote into params[{i}].grad ({_differing(copy, now)})")
            if problems:
                return [*problems[:3], "torch's step never writes p.grad"]
    return problems


def _state_isolation(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    settings = Hyper(**{**hyper.kwargs(), "momentum": _DISTINCT["momentum"], "centered": True})
    shapes = [(4, 3), (4, 3), (12,)]  # two of one shape, and a third of the same size
    params = [side.param(_draw(rng, s, side.dtype)) for s in shapes]
    opt = side.cls(params, **settings.kwargs())
    label = "params[{}]".format
    problems = []
    _run(side, opt, params, [[_draw(rng, s, side.dtype) for s in shapes]])
    for only in range(len(params)):
        before = _snapshot(side, opt, params)
        grads: list[NDArray[Any] | None] = [None] * len(params)
        grads[only] = _draw(rng, shapes[only], side.dtype)
        _run(side, opt, params, [grads])
        after = _snapshot(side, opt, params)
        moved = _moved([s for i, s in enumerate(before) if i != only], [s for i, s in enumerate(after) if i != only],
                       lambda k, only=only: label(k + (k >= only)))  # fmt: skip
        if moved:
            problems.append(f"a step with only params[{only}]'s gradient: {', '.join(moved[:3])}")
    buffers = [side.buffers(opt, p) for p in params]
    for i in range(len(params)):
        for j in range(i + 1, len(params)):
            for key in sorted(set(buffers[i]) & set(buffers[j])):
                if np.shares_memory(buffers[i][key], buffers[j][key]):
                    problems.append(f"params[{i}] and params[{j}] share the memory of their {key}")
    # Two optimizers over different parameters of the same shapes.
    others = [side.param(_draw(rng, s, side.dtype)) for s in shapes]
    second = side.cls(others, **settings.kwargs())
    if any(p is q for g in second.param_groups for p in g["params"] for q in params):
        problems.append("a second optimizer's param_groups hold the first one's parameters")
    before = _snapshot(side, opt, params)
    _run(side, second, others, [[_draw(rng, s, side.dtype) for s in shapes] for _ in range(2)])
    moved = _moved(before, _snapshot(side, opt, params), "the first optimizer's params[{}]".format)
    if moved:
        problems.append(f"stepping a second optimizer: {', '.join(moved[:3])}")
    first_lr = opt.param_groups[0]["lr"]
    second.param_groups[0]["lr"] = first_lr * 0.5
    if opt.param_groups[0]["lr"] != first_lr:
        problems.append("setting the second optimizer's lr changed the first's")
    theirs = [side.buffers(second, p) for p in others]
    for i, mine in enumerate(buffers):
        for j, other in enumerate(theirs):
            for key in sorted(set(mine) & set(other)):
                if np.shares_memory(mine[key], other[key]):
                    problems.append(f"two optimizers share the memory of a {key} (params[{i}] and params[{j}])")
    return [*problems[:3], "torch keeps each parameter's state its own"] if problems else []


def _load_hypers(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    shapes = [(5,), (2, 4)]
    init = [_draw(rng, s, side.dtype) for s in shapes]
    grads = [[_draw(rng, s, side.dtype) for s in shapes] for _ in range(4)]
    saver_params = [side.param(v) for v in init]
    saver = side.cls(saver_params, **hyper.kwargs())
    _run(side, saver, saver_params, grads[:1])
    saver.param_groups[0]["lr"] = hyper.lr * 0.5  # a scheduler's change before the save
    _run(side, saver, saver_params, grads[1:2])
    saved = side.state_dict(saver)
    other = {k: v for k, v in _DISTINCT.items() if k != "momentum"}
    other["momentum"] = 0.0 if hyper.momentum > 0 else _DISTINCT["momentum"]
    other_flags = {"centered": not hyper.centered, "maximize": not hyper.maximize}
    loader_params = [side.param(side.values(p)) for p in saver_params]
    loader = side.cls(loader_params, **other, **other_flags)
    side.load(loader, saved)
    expected = {**hyper.kwargs(), "lr": hyper.lr * 0.5}
    problems = []
    wrong = _hyper_differences(loader.param_groups[0], expected)
    if wrong:
        problems.append(
            f"after load_state_dict into an optimizer built with other hyperparameters, param_groups[0] holds "
            f"{', '.join(wrong)}; torch's load_state_dict restores the saved groups' values"
        )
    diff = _run_alike(side, (loader, loader_params), (saver, saver_params), grads[2:])
    if diff:
        problems.append(
            f"continued after the load it departs from the optimizer that saved ({'; '.join(diff[:3])}); "
            "torch continues with the saved hyperparameters and state"
        )
    return problems


#: The load mapping's groups: shapes by group; the parameter marked None never gets a gradient (no state).
_MAPPING_GROUPS = (((4, 3), None, (5,)), ((4, 3), (12,)))


def _load_mapping(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    shapes = [s or (4, 3) for group in _MAPPING_GROUPS for s in group]
    stateless = {i for i, s in enumerate(s for group in _MAPPING_GROUPS for s in group) if s is None}
    sizes = [len(group) for group in _MAPPING_GROUPS]

    def groups_of(params: list[Any]) -> list[dict[str, Any]]:
        bounds = itertools.accumulate(sizes, initial=0)
        return [{"params": params[a:b]} for a, b in itertools.pairwise(bounds)]

    def draws(active: set[int]) -> list[NDArray[Any] | None]:
        return [_draw(rng, s, side.dtype) if i in active - stateless else None for i, s in enumerate(shapes)]

    saver_params = [side.param(_draw(rng, s, side.dtype)) for s in shapes]
    saver = side.cls(groups_of(saver_params), **hyper.kwargs())
    every = set(range(len(shapes)))
    _run(side, saver, saver_params, [draws({3, 0}), draws({4, 2, 0}), draws(every)])  # first gradients out of order
    saved = side.state_dict(saver)
    reordered = {"state": dict(reversed(list(saved["state"].items()))), "param_groups": saved["param_groups"]}
    problems = []
    for label, sd in (("in index order", saved), ("with its entries in reverse order", reordered)):
        loader_params = [side.param(side.values(p)) for p in saver_params]
        loader = side.cls(groups_of(loader_params), **hyper.kwargs())
        side.load(loader, sd)
        for i, q in enumerate(loader_params):
            mine = (side.buffers(loader, q), side.step_count(loader, q))
            if _same_state(mine, (side.buffers(saver, saver_params[i]), side.step_count(saver, saver_params[i]))):
                continue
            match = [
                j
                for j, p in enumerate(saver_params)
                if _same_state(mine, (side.buffers(saver, p), side.step_count(saver, p)))
            ]
            held = f"the state saved for parameter {match[0]}" if match else "no saved parameter's state"
            problems.append(f"a state_dict {label}: parameter {i} (shape {shapes[i]}) holds {held}")
        if problems:
            break
        step = draws(every)
        _run(side, loader, loader_params, [step])
        probe = [side.param(side.values(p)) for p in saver_params]
        probe_opt = side.cls(groups_of(probe), **hyper.kwargs())
        side.load(probe_opt, saved)
        _run(side, probe_opt, probe, [step])
        diff = _compare_runs(side, (loader, loader_params), (probe_opt, probe))
        if diff:
            problems.append(f"a state_dict {label}, loaded and stepped: {'; '.join(diff[:3])}")
    if problems:
        return [*problems[:3], "torch maps saved index i to the i-th parameter over param_groups in order"]
    return problems


def _same_state(
    a: tuple[dict[str, NDArray[Any]], float | None], b: tuple[dict[str, NDArray[Any]], float | None]
) -> bool:
    return a[1] == b[1] and set(a[0]) == set(b[0]) and all(_same(a[0][k], b[0][k]) for k in a[0])


_NAMES = ("encoder.weight", "encoder.bias", "head.weight")
_NAMED_SHAPES = ((3, 2), (3,), (2, 3))


def _refused(make: Callable[[], Any]) -> bool:
    try:
        make()
    except Exception:  # any refusal will do; torch's is a ValueError
        return True
    return False


def _named_params(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    init = [_draw(rng, s, side.dtype) for s in _NAMED_SHAPES]
    grads = [[_draw(rng, s, side.dtype) for s in _NAMED_SHAPES] for _ in range(2)]
    params = [side.param(v) for v in init]
    problems = []
    try:
        opt = side.cls(iter(zip(_NAMES, params)), **hyper.kwargs())  # a generator, as named_parameters() is
    except Exception as err:
        return [
            f"RMSprop(model.named_parameters()) raised {type(err).__name__}: {err}; "
            "torch 2.x accepts (name, parameter) pairs"
        ]
    group = opt.param_groups[0]
    if len(group["params"]) != len(params) or any(p is not q for p, q in zip(group["params"], params)):
        problems.append("param_groups[0]['params'] does not hold the parameters themselves; torch unpacks the pairs")
    if list(group.get("param_names", [])) != list(_NAMES):
        problems.append(
            f"param_groups[0]['param_names'] is {group.get('param_names', '<missing>')!r}; "
            f"torch stores the names there: {list(_NAMES)}"
        )
    plain_params = [side.param(v) for v in init]
    plain = side.cls(plain_params, **hyper.kwargs())
    diff = _run_alike(side, (opt, params), (plain, plain_params), grads)
    if diff:
        problems.append(f"named, it steps differently from unnamed ({'; '.join(diff[:2])}); names change nothing")
    saved = side.state_dict(opt)
    saved_group = saved["param_groups"][0]
    if list(saved_group.get("param_names", [])) != list(_NAMES) or list(saved_group["params"]) != [0, 1, 2]:
        problems.append(
            f"state_dict()['param_groups'][0] has param_names {saved_group.get('param_names', '<missing>')!r}, "
            f"params {saved_group['params']!r}; torch's: param_names {list(_NAMES)}, params [0, 1, 2]"
        )
    unnamed = side.state_dict(plain)
    if "param_names" in unnamed["param_groups"][0]:
        problems.append("an optimizer without names writes param_names into its state_dict; torch writes none")
    pairs = list(zip(_NAMES, [side.param(v) for v in init]))
    grouped = side.cls([{"params": pairs[:1], "lr": _DISTINCT["lr"]}, {"params": pairs[1:]}], **hyper.kwargs())
    names = [list(g.get("param_names", [])) for g in side.state_dict(grouped)["param_groups"]]
    if names != [list(_NAMES[:1]), list(_NAMES[1:])]:
        problems.append(f"groups of named parameters save param_names {names}; torch's: [{_NAMES[:1]}, {_NAMES[1:]}]")

    def loaded_names(sd: dict[str, Any], own: Sequence[str] | None) -> list[str] | None:
        fresh = [side.param(v) for v in side_values]
        target = side.cls(list(zip(own, fresh)) if own else fresh, **hyper.kwargs())
        side.load(target, sd)
        got = target.param_groups[0].get("param_names")
        return None if got is None else list(got)

    side_values = [side.values(p) for p in params]
    renamed = ["a", "b", "c"]
    for sd, own, want, what in (
        (saved, renamed, list(_NAMES), "a named state_dict into an optimizer with other names"),
        (saved, None, list(_NAMES), "a named state_dict into an unnamed optimizer"),
        (unnamed, renamed, renamed, "an unnamed state_dict into a named optimizer"),
        (_torch_named_state_dict(init, hyper), None, list(_NAMES), "torch's own named state_dict"),
    ):
        got = loaded_names(sd, own)
        if got != want:
            problems.append(
                f"loading {what} left param_names {got!r}; torch's load takes the saved names, "
                f"and keeps its own where the saved groups have none: {want!r}"
            )
    # A group that gives its names itself, as a saved group does: torch keeps them as they are.
    given = {"params": [side.param(v) for v in init[:2]], "param_names": list(_NAMES[:2])}
    try:
        kept = side.state_dict(side.cls([given], **hyper.kwargs()))["param_groups"][0].get("param_names")
    except Exception as err:
        kept = f"<{type(err).__name__}: {err}>"
    if kept is None or list(kept) != list(_NAMES[:2]):
        problems.append(
            f"a group giving param_names {list(_NAMES[:2])} itself saved {kept!r}; torch keeps a group's param_names"
        )
    fresh = [side.param(v) for v in init]
    if not _refused(lambda: side.cls([(_NAMES[0], fresh[0]), fresh[1]], **hyper.kwargs())):
        problems.append("a named parameter beside a plain one in one group was accepted; torch refuses it")
    if not _refused(lambda: side.cls([{"params": [(_NAMES[0], fresh[0])]}, {"params": [fresh[1]]}])):
        problems.append("a named group beside a group without names was accepted; torch refuses it")
    return problems


def _torch_named_state_dict(init: Sequence[NDArray[Any]], hyper: Hyper) -> dict[str, Any]:
    """Return the state_dict of a named torch RMSprop after one step, in NumPy form (torch's own keys kept)."""
    params = [torch.nn.Parameter(torch.from_numpy(np.array(v, copy=True))) for v in init]
    opt = reference_class()(list(zip(_NAMES, params)), **hyper.kwargs())
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return statedict.to_numpy(opt.state_dict())


def _param_groups(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    shapes = [(2, 3), (4,)]
    init = [_draw(rng, s, side.dtype) for s in shapes]
    grads = [[_draw(rng, s, side.dtype) for s in shapes] for _ in range(3)]
    problems = []
    params = [side.param(v) for v in init]
    if not _refused(lambda: side.cls([{"params": params[:1]}, {"params": params}], **hyper.kwargs())):
        problems.append("a parameter in two param groups was accepted; torch refuses it (ValueError)")
    opt = side.cls(params[:1], **hyper.kwargs())
    if not _refused(lambda: opt.add_param_group({"params": [params[1], params[0]]})):
        problems.append("add_param_group with a parameter the optimizer holds already was accepted; torch refuses it")
    elif len(opt.param_groups) != 1 or [id(q) for q in opt.param_groups[0]["params"]] != [id(params[0])]:
        problems.append("a refused add_param_group changed param_groups; torch's refusal adds nothing")
    # A scheduler's bookkeeping key (torch's LRScheduler sets initial_lr in every group; after it has
    # decayed lr, initial_lr is the larger), and lr as a 0-d tensor of the library (torch accepts a
    # Tensor lr): the optimizer steps with lr as with neither.
    initial = 2 * hyper.lr + 1e-3
    keyed, plain, tensor_lr = ([side.param(v) for v in init] for _ in range(3))
    with_key = side.cls(keyed, **hyper.kwargs())
    for group in with_key.param_groups:
        group["initial_lr"] = initial
    without = side.cls(plain, **hyper.kwargs())
    diff = _run_alike(side, (with_key, keyed), (without, plain), grads)
    if diff:
        problems.append(
            f"with a scheduler's initial_lr={initial!r} in its group (lr={hyper.lr!r}) it stepped otherwise "
            f"({'; '.join(diff[:3])}); torch steps with lr and keeps initial_lr for the scheduler"
        )
    saved = side.state_dict(with_key)["param_groups"][0].get("initial_lr", "<missing>")
    loader = side.cls([side.param(v) for v in init], **hyper.kwargs())
    side.load(loader, side.state_dict(with_key))
    loaded = loader.param_groups[0].get("initial_lr", "<missing>")
    if saved != initial or loaded != initial:
        problems.append(
            f"a group's initial_lr={initial!r} was saved as {saved!r} and loaded as {loaded!r}; torch's state_dict "
            "and load_state_dict keep every key of a group"
        )
    try:
        by_tensor = side.cls(tensor_lr, **{**hyper.kwargs(), "lr": side.scalar(hyper.lr)})
        _run(side, by_tensor, tensor_lr, grads)
    except Exception as err:
        problems.append(f"lr as a 0-d float64 tensor raised {type(err).__name__}: {err}; torch accepts a Tensor lr")
    else:
        diff = _compare_runs(side, (by_tensor, tensor_lr), (without, plain))
        if diff:
            problems.append(
                f"lr as a 0-d float64 tensor stepped otherwise than the float ({'; '.join(diff[:3])}); "
                "torch steps with the tensor's value"
            )
    return problems


def _other_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """Return the dtype of the same kind and the other precision (float32 <-> float64, complex64 <-> complex128)."""
    return np.dtype({"f4": "f8", "f8": "f4", "c8": "c16", "c16": "c8"}[f"{dtype.kind}{dtype.itemsize}"])


def _bad_grad(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    shapes = [(5,), (2, 3)]
    init = [_draw(rng, s, side.dtype) for s in shapes]
    first = [_draw(rng, s, side.dtype) for s in shapes]
    other = _other_dtype(side.dtype)
    problems = []
    # The wrong gradients, given to the last parameter (so a step that updates the first before it
    # looks at the second shows): one that broadcasts against it, one of its size, one of the other
    # precision.  torch refuses each as it is assigned; where the library allows the assignment,
    # step must refuse it and leave every parameter, buffer and step count as it was.
    for label, grad in (
        ("of shape (3,) for a (2, 3) parameter", _draw(rng, (3,), side.dtype)),
        ("of shape (6,) for a (2, 3) parameter", _draw(rng, (6,), side.dtype)),
        (f"of dtype {other} for a {side.dtype} parameter", first[1].astype(other)),
    ):
        params = [side.param(v) for v in init]
        opt = side.cls(params, **hyper.kwargs())
        _run(side, opt, params, [first])  # state to keep
        side.set_grad(params[0], first[0])
        try:
            side.assign_grad(params[1], grad)
        except Exception:
            continue  # refused as torch refuses it
        before = _snapshot(side, opt, params)
        steps = [side.step_count(opt, p) for p in params]
        if not _refused(opt.step):
            problems.append(f"a gradient {label} was stepped with; torch refuses it")
            continue
        moved = _moved(before, _snapshot(side, opt, params), lambda i: f"params[{i}]")
        if moved or steps != [side.step_count(opt, p) for p in params]:
            problems.append(
                f"a step refusing a gradient {label} changed the optimizer ({'; '.join(moved[:2]) or 'step counts'}); "
                "torch refuses such a gradient before anything changes"
            )
    return problems


#: The in-place item's parameters: small ones, several of a shape, in one group (an implementation
#: may pack such parameters into one flat array); the ones at :data:`_HELD` are referenced by the caller.
_EDIT_SHAPES = ((3,), (2, 2), (3,), (5,), (2, 2), (1,))
_HELD = (0, 3, 4)


def _in_place(side: Library, hyper: Hyper, rng: np.random.Generator) -> list[str]:
    init = [_draw(rng, s, side.dtype) for s in _EDIT_SHAPES]
    grads = [[_draw(rng, s, side.dtype) for s in _EDIT_SHAPES] for _ in range(5)]
    problems = []
    # 1. A reference to a parameter's values taken before the steps (an EMA's, a logger's) sees
    # every update: torch updates p in place.  Some parameters held, then all of them.
    for held_ones in (_HELD, range(len(_EDIT_SHAPES))):
        params = [side.param(v) for v in init]
        opt = side.cls(params, **hyper.kwargs())
        held = {i: params[i].data for i in held_ones}
        _run(side, opt, params, grads[:3])
        stale = [f"params[{i}]" for i, ref in held.items() if not _same(side.as_array(ref), side.values(params[i]))]
        if stale:
            problems.append(
                f"a reference to {', '.join(stale)}.data taken before the steps no longer shows the parameter; "
                "torch updates each parameter in place"
            )
            break
    # 2. Values, then state, edited between steps, by assignment in one run and in place in the
    # other, step alike: torch reads p.data and opt.state[p] afresh at every step.
    unedited = [side.param(v) for v in init]
    unedited_opt = side.cls(unedited, **hyper.kwargs())
    _run(side, unedited_opt, unedited, grads)
    for edited in ("p.data", "opt.state[p]"):
        runs = []
        for in_place in (False, True):
            ps = [side.param(v) for v in init]
            o = side.cls(ps, **hyper.kwargs())
            _run(side, o, ps, grads[:2])
            for i in (1, 3):
                if edited == "p.data":
                    side.replace_data(ps[i], init[i] * 0.5, in_place)
                    continue
                for key, buf in side.buffers(o, ps[i]).items():
                    value = np.abs(buf) * 2 + 1 if key == "square_avg" else buf * 0.5
                    side.replace_buffer(o, ps[i], key, value, in_place)
            _run(side, o, ps, grads[2:])
            runs.append((o, ps))
        diff = _compare_runs(side, runs[0], runs[1])
        if diff:
            problems.append(
                f"new arrays assigned to {edited} between steps stepped otherwise than the same values written in "
                f"place ({'; '.join(diff[:3])}); torch reads p.data and opt.state[p] at every step"
            )
        elif not _compare_runs(side, runs[1], (unedited_opt, unedited)):
            problems.append(
                f"values written into {edited} between steps changed nothing (the run ends as one without the "
                "edit); torch reads p.data and opt.state[p] at every step"
            )
    return problems


# ---------------------------------------------------------------------------- the family


def _items(side: Library, scenario: Scenario, hyper: Hyper, seed: int) -> Iterator[tuple[str, Callable[[], list[str]]]]:
    def rng(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, k])

    yield "contract_positional", lambda: _positional(side, hyper, rng(0))
    yield "contract_zero_grad", lambda: _zero_grad(side, hyper, rng(1))
    yield "contract_closure", lambda: _closure(side, hyper, rng(2))
    yield "contract_grad_untouched", lambda: _grad_untouched(side, scenario, hyper)
    yield "contract_state_isolation", lambda: _state_isolation(side, hyper, rng(4))
    yield "contract_load_hypers", lambda: _load_hypers(side, hyper, rng(5))
    yield "contract_load_mapping", lambda: _load_mapping(side, hyper, rng(6))
    yield "contract_named_params", lambda: _named_params(side, hyper, rng(7))
    yield "contract_param_groups", lambda: _param_groups(side, hyper, rng(8))
    yield "contract_bad_grad", lambda: _bad_grad(side, hyper, rng(9))
    yield "contract_in_place", lambda: _in_place(side, hyper, rng(10))


#: What torch does, item by item: a passing outcome's text, and the other half of a failure by exception.
TORCH_DOES = {
    "contract_positional": "RMSprop(params, lr, alpha, eps, weight_decay, momentum, centered): by position as by name",
    "contract_zero_grad": "zero_grad() sets grads to None; zero_grad(set_to_none=False) zeroes them in place",
    "contract_closure": "step(closure) calls it once, gradients enabled, before the update, and returns its loss",
    "contract_grad_untouched": "step never writes or replaces p.grad",
    "contract_state_isolation": "each parameter's state, and each optimizer's, is its own",
    "contract_load_hypers": "load_state_dict restores the saved hyperparameters over the constructor's",
    "contract_load_mapping": "saved state index i goes to the i-th parameter over param_groups in order",
    "contract_named_params": "(name, parameter) pairs accepted; their names are param_names in groups and state_dicts",
    "contract_param_groups": "a parameter in two groups refused; extra group keys and a Tensor lr change no step",
    "contract_bad_grad": "a gradient of another shape or dtype refused, the optimizer left as it was",
    "contract_in_place": "parameters updated in place; p.data and opt.state[p] read afresh at every step",
}


def _outcome(name: str, item: Callable[[], list[str]]) -> CheckOutcome:
    """Run one item; an exception from the candidate is that item's failure, with what torch does."""
    try:
        with np.errstate(all="ignore"):  # NaN, Inf and 0/0 in the streams: the API is judged here, not warnings
            problems = item()
    except Exception as err:  # the candidate raised where torch does not: the item could not run
        detail = f"the candidate raised {type(err).__name__}: {err}; torch: {TORCH_DOES[name]}"
        return CheckOutcome(name, False, detail, raised=True)
    return CheckOutcome(name, not problems, "; ".join(problems) or f"as torch: {TORCH_DOES[name]}")


def run(scenario: Scenario, candidate: Adapter | type) -> list[CheckOutcome]:
    """Run the contract family on ``scenario`` against ``candidate``'s optimizer class.

    The class may be ``torch.optim.RMSprop`` itself (or another
    ``torch.optim.Optimizer``): the same items then run on torch's tensors,
    which is how the tests show that each item is the contract torch keeps.
    The scenario gives the dtype, the flags and group 0's hyperparameters;
    ``contract_grad_untouched`` runs on its parameters and first gradients.
    """
    adapter = resolve(candidate)
    if adapter.optimizer_class is None:
        raise ValueError(f"{adapter.name} has no optimizer object: the contract family does not apply")
    side = Library(adapter.optimizer_class, np.dtype(scenario.dtype))
    hyper = scenario.hypers[0]
    return [_outcome(name, item) for name, item in _items(side, scenario, hyper, scenario.seed)]
