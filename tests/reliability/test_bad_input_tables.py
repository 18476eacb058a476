"""Tables of bad input: each row is refused with its error type, a message naming the bad value or key,
and nothing changed (optimizer state_dict, parameter data and gradients compared byte for byte)."""

# ruff: noqa: E501  (one table row per line reads better than wrapped rows)

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from support import trained

import lucid
from lucid.nn import Parameter
from lucid.optim import RMSprop

REAL_KEYS = ("lr", "alpha", "eps", "weight_decay", "momentum")
BOOL_KEYS = ("centered", "maximize")
SUPPORTED = "only float32, float64, complex64 and complex128 parameters can be optimized"


def _message(err: BaseException) -> str:
    """The message as written (``str(KeyError)`` would add quotes and escapes)."""
    return str(err.args[0]) if err.args else ""


def _bad_hyperparameters() -> list[tuple[str, dict[str, Any], type[Exception], str]]:
    rows = []
    for key in REAL_KEYS:
        for value, error, needle in [
            (-0.1, ValueError, f"Invalid {key} value: -0.1"),
            (math.nan, ValueError, f"Invalid {key} value: nan"),
            (math.inf, ValueError, f"Invalid {key} value: inf"),
            (-math.inf, ValueError, f"Invalid {key} value: -inf"),
            (10**400, ValueError, f"Invalid {key} value: 1000000000"),
            ("0.1", TypeError, f"{key} must be a real number, got '0.1'"),
            (None, TypeError, f"{key} must be a real number, got None"),
            (True, TypeError, f"{key} must be a real number, got True"),
            ([0.1], TypeError, f"{key} must be a real number, got [0.1]"),
            (1 + 0j, TypeError, f"{key} must be a real number, got (1+0j)"),
            (np.array([0.1, 0.2]), TypeError, f"{key} must be a real number, got ndarray(shape=(2,)"),
        ]:
            rows.append((f"{key}={value!r}"[:40], {key: value}, error, needle))
    rows.append(("alpha=1.5", {"alpha": 1.5}, ValueError, "Invalid alpha value: 1.5 (must be in [0, 1])"))
    for key in BOOL_KEYS:
        for value in (1, "yes", None, 0.0, np.array([True, False])):
            rows.append((f"{key}={value!r}"[:40], {key: value}, TypeError, f"{key} must be a bool, got"))
    return rows


HYPER_ROWS = _bad_hyperparameters()


@pytest.mark.parametrize(("kwargs", "error", "needle"), [r[1:] for r in HYPER_ROWS], ids=[r[0] for r in HYPER_ROWS])
def test_constructor_refuses_bad_hyperparameters(kwargs, error, needle, tally) -> None:
    with tally.case():
        params = [Parameter(np.arange(3.0))]
        before = params[0].data.tobytes()
        with pytest.raises(error) as info:
            RMSprop(params, **kwargs)
        assert needle in _message(info.value)
        assert params[0].data.tobytes() == before and params[0].grad is None


@pytest.mark.parametrize(("kwargs", "error", "needle"), [r[1:] for r in HYPER_ROWS], ids=[r[0] for r in HYPER_ROWS])
def test_add_param_group_refuses_bad_hyperparameters(kwargs, error, needle, tally, snap) -> None:
    with tally.case():
        params, opt = trained()
        new = Parameter(np.arange(3.0))
        before = snap(opt, [*params, new])
        with pytest.raises(error) as info:
            opt.add_param_group({"params": [new], **kwargs})
        assert needle in _message(info.value)
        assert snap(opt, [*params, new]) == before


def _consumed_generator() -> Any:
    gen = (p for p in [Parameter([1.0])])
    list(gen)
    return gen


def _shared() -> list[dict[str, Any]]:
    p = Parameter([1.0])
    return [{"params": [Parameter([2.0])]}, {"params": [p]}, {"params": [p]}]


PARAM_ROWS: list[tuple[str, Callable[[], Any], dict[str, Any], type[Exception], str]] = [
    ("empty", lambda: [], {}, ValueError, "empty parameter list"),
    ("consumed-generator", _consumed_generator, {}, ValueError, "generator of parameters already consumed"),
    ("same-twice", lambda: (lambda p: [p, p])(Parameter([1.0])), {}, ValueError, "params[1] is the same parameter"),
    ("two-groups", _shared, {}, ValueError, "param group 2: params[0] is already in param group 1"),
    ("ndarray", lambda: [np.zeros(2)], {}, TypeError, "params[0] is ndarray(shape=(2,), dtype=float64)"),
    ("float", lambda: [Parameter([1.0]), 1.5], {}, TypeError, "params[1] is 1.5"),
    ("string", lambda: "weights", {}, TypeError, "params[0] is 'w'"),
    ("none", lambda: None, {}, TypeError, "got None"),
    ("bare-tensor", lambda: Parameter([1.0]), {}, TypeError, "Parameter(shape=(1,), dtype=float32)"),
    ("set", lambda: {Parameter([1.0])}, {}, TypeError, "ordering of tensors in sets"),
    ("integer-param", lambda: [Parameter(np.arange(3), requires_grad=False)], {}, TypeError, "params[0] has dtype int64"),
    ("float16-param", lambda: [Parameter(np.ones(2, np.float32)), Parameter(np.ones(2, np.float16))], {}, TypeError, f"params[1] has dtype float16; {SUPPORTED}"),
    ("longdouble-param", lambda: [Parameter(np.ones(2, np.longdouble))], {}, TypeError, f"params[0] has dtype {np.dtype(np.longdouble)}; {SUPPORTED}"),
    ("clongdouble-param", lambda: [Parameter(np.ones(2, np.clongdouble))], {}, TypeError, f"params[0] has dtype {np.dtype(np.clongdouble)}; {SUPPORTED}"),
    ("non-leaf", lambda: [lucid.tensor([1.0], requires_grad=True) * 2], {}, ValueError, "params[0] is not a leaf"),
    ("group-no-params", lambda: [{"lr": 0.1}], {}, ValueError, "no 'params' key"),
    ("group-empty", lambda: [{"params": []}], {}, ValueError, "param group 0: the parameter list is empty"),
    ("unknown-kwarg", lambda: [Parameter([1.0])], {"nesterov": True}, TypeError, "nesterov"),
    ("unknown-group-key", lambda: [{"params": [Parameter([1.0])], "weight_decy": 0.1}], {}, TypeError, "'weight_decy'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "kwargs", "error", "needle"), [r[1:] for r in PARAM_ROWS], ids=[r[0] for r in PARAM_ROWS]
)
def test_constructor_refuses_bad_params(make, kwargs, error, needle, tally) -> None:
    with tally.case():
        with pytest.raises(error) as info:
            RMSprop(make(), **kwargs)
        assert needle in _message(info.value)


GROUP_ROWS: list[tuple[str, Callable[[list[Parameter]], Any], type[Exception], str]] = [
    ("not-a-dict", lambda ps: [Parameter([1.0])], TypeError, "a param group must be a dict, got [Parameter("),
    ("no-params", lambda ps: {"lr": 0.1}, ValueError, "param group 2: the param group has no 'params' key"),
    ("empty", lambda ps: {"params": []}, ValueError, "param group 2: the parameter list is empty"),
    ("already-in-group-0", lambda ps: {"params": [Parameter([1.0]), ps[1]]}, ValueError, "params[1] is already in param group 0 (its params[1])"),
    ("same-twice", lambda ps: (lambda p: {"params": [p, p]})(Parameter([1.0])), ValueError, "params[1] is the same parameter as params[0]"),
    ("ndarray", lambda ps: {"params": [np.zeros(2)]}, TypeError, "params[0] is ndarray"),
    ("float16", lambda ps: {"params": [Parameter(np.ones(2)), Parameter(np.ones(2, np.float16))]}, TypeError, f"param group 2: params[1] has dtype float16; {SUPPORTED}"),
    ("longdouble", lambda ps: {"params": [Parameter(np.ones(2, np.longdouble))]}, TypeError, f"params[0] has dtype {np.dtype(np.longdouble)}"),
    ("unknown-key", lambda ps: {"params": [Parameter([1.0])], "nesterov": True}, TypeError, "'nesterov'"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "error", "needle"), [r[1:] for r in GROUP_ROWS], ids=[r[0] for r in GROUP_ROWS])
def test_add_param_group_refuses_bad_groups(make, error, needle, tally, snap) -> None:
    with tally.case():
        params, opt = trained()
        group = make(params)
        before = snap(opt, params)
        with pytest.raises(error) as info:
            opt.add_param_group(group)
        assert needle in _message(info.value)
        assert snap(opt, params) == before


# ---------------------------------------------------------------- gradients
Setup = Callable[[list[Parameter], RMSprop], None]


def _replace_data(value: np.ndarray) -> Setup:
    def setup(params: list[Parameter], opt: RMSprop) -> None:
        params[2].data = value

    return setup


def _read_only_data(params: list[Parameter], opt: RMSprop) -> None:
    params[2].data.flags.writeable = False


def _read_only_state(key: str) -> Setup:
    def setup(params: list[Parameter], opt: RMSprop) -> None:
        opt.state[params[2]][key].flags.writeable = False

    return setup


GRAD_ROWS: list[tuple[str, Any, Setup | None, type[Exception], str]] = [
    ("shape-(1,)", np.ones(1), None, ValueError, ".grad has shape (1,), the parameter has ()"),
    ("shape-(1,1)", np.ones((1, 1)), None, ValueError, ".grad has shape (1, 1)"),
    ("int64", np.array(1), None, TypeError, ".grad has dtype int64, the parameter has float64"),
    ("float32", np.array(1, np.float32), None, TypeError, ".grad has dtype float32, the parameter has float64"),
    ("complex128", np.array(1, np.complex128), None, TypeError, ".grad has dtype complex128"),
    ("bool", np.array(True), None, TypeError, ".grad has dtype bool"),
    ("str", np.array("x"), None, TypeError, ".grad has dtype <U1"),
    ("object", np.array(None, dtype=object), None, TypeError, ".grad has dtype object"),
    ("python-float", 1.0, None, TypeError, ".grad must be an ndarray or None, got 1.0"),
    ("list", [1.0], None, TypeError, ".grad must be an ndarray or None, got [1.0]"),
    ("numpy-scalar", np.float64(1.0), None, TypeError, f".grad must be an ndarray or None, got {np.float64(1.0)!r}"),  # repr differs on NumPy 1 and 2
    ("tensor", lucid.tensor(np.float64(1.0)), None, TypeError, "got Tensor(shape=(), dtype=float64)"),
    ("torch-tensor", torch.tensor(1.0, dtype=torch.float64), None, TypeError, "got tensor(1."),
    ("masked-array", np.ma.masked_array(1.0, mask=True), None, TypeError, ".grad is a masked array; its mask would be ignored"),
    ("param-data-int", np.array(1), _replace_data(np.array(1)), TypeError, "the parameter's data is ndarray(shape=(), dtype=int64)"),
    ("param-data-reshaped", np.ones(2), _replace_data(np.ones(2)), ValueError, "state['square_avg'] is ndarray(shape=()"),
    ("param-data-float16", np.array(1, np.float16), _replace_data(np.array(1, np.float16)), TypeError, f"the parameter's data is ndarray(shape=(), dtype=float16); {SUPPORTED.replace('parameters', 'arrays')}"),
    ("param-data-longdouble", np.array(1, np.longdouble), _replace_data(np.array(1, np.longdouble)), TypeError, f"dtype={np.dtype(np.longdouble)})"),
    ("param-data-read-only", np.array(1.0), _read_only_data, ValueError, "the parameter's data is read-only"),
    ("state-read-only", np.array(1.0), _read_only_state("momentum_buffer"), ValueError, "state['momentum_buffer'] is read-only"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("grad", "setup", "error", "needle"), [r[1:] for r in GRAD_ROWS], ids=[r[0] for r in GRAD_ROWS]
)
def test_bad_gradient_refuses_the_whole_step(grad, setup, error, needle, tally, snap) -> None:
    """The bad gradient is on the last parameter: checking as it goes would already have moved the first two."""
    with tally.case():
        params, opt = trained()
        if setup is not None:
            setup(params, opt)
        params[0].grad = np.ones((2, 3))
        params[1].grad = np.ones(4)
        params[2].grad = grad
        before = snap(opt, params)
        with pytest.raises(error) as info:
            opt.step()
        assert "param_groups[1]['params'][0]" in _message(info.value) and needle in _message(info.value)
        assert snap(opt, params) == before


def _edit(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda group: group.update(changes)


STEP_GROUP_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], type[Exception], str]] = [
    *((name, _edit(**kwargs), error, needle) for name, kwargs, error, needle in HYPER_ROWS),
    ("unknown-key", _edit(weight_decy=0.1), TypeError, "unknown hyperparameter 'weight_decy'"),
    ("lr-deleted", lambda group: group.pop("lr"), KeyError, "missing hyperparameter 'lr'"),
    ("initial_lr-str", _edit(initial_lr="0.1"), TypeError, "initial_lr must be a real number, got '0.1'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "error", "needle"), [r[1:] for r in STEP_GROUP_ROWS], ids=[r[0] for r in STEP_GROUP_ROWS]
)
def test_step_refuses_a_group_edited_after_construction(edit, error, needle, tally, snap) -> None:
    """A group is checked as it is at each step (a scheduler edits ``lr`` in place), before anything changes."""
    with tally.case():
        params, opt = trained()
        for p in params:
            p.grad = np.ones(p.shape)
        edit(opt.param_groups[1])
        before = snap(opt, params)
        with pytest.raises(error) as info:
            opt.step()
        assert "param_groups[1]" in _message(info.value) and needle in _message(info.value)
        assert snap(opt, params) == before


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")  # NumPy's own warning on np.matrix
def test_matrix_and_memmap_gradients_step_like_plain_arrays(tmp_path) -> None:
    """ndarray subclasses whose arithmetic differs (np.matrix: * is a matrix product) are used as plain arrays."""
    grad = np.arange(9.0).reshape(3, 3) - 4
    mapped = np.memmap(tmp_path / "g.bin", dtype=np.float64, mode="w+", shape=(3, 3))
    mapped[...] = grad
    results = []
    for g in (grad, np.asmatrix(grad), mapped):
        p = Parameter(np.ones((3, 3)))
        opt = RMSprop([p], momentum=0.9, centered=True, weight_decay=0.1)
        for _ in range(2):
            p.grad = g
            opt.step()
        results.append(p.data.tobytes())
    assert results[1] == results[0] and results[2] == results[0]


@pytest.mark.parametrize(
    ("param_dtype", "grad_dtype"),
    [(np.complex64, np.float32), (np.complex128, np.complex64), (np.float32, np.complex64)],
    ids=lambda d: np.dtype(d).name,
)
def test_complex_and_real_gradients_do_not_mix(param_dtype, grad_dtype, tally, snap) -> None:
    with tally.case():
        p = Parameter(np.ones(3, param_dtype))
        opt = RMSprop([p], weight_decay=0.1)
        p.grad = np.ones(3, grad_dtype)
        before = snap(opt, [p])
        with pytest.raises(TypeError) as info:
            opt.step()
        assert f"dtype {np.dtype(grad_dtype).name}, the parameter has {np.dtype(param_dtype).name}" in str(info.value)
        assert snap(opt, [p]) == before


# ------------------------------------------------------------ load_state_dict
def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sd: dict[str, Any]) -> dict[str, Any]:
        target = sd
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return sd

    return mutate


def _drop(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sd: dict[str, Any]) -> dict[str, Any]:
        target = sd
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return sd

    return mutate


def _last_entry_only(sd: dict[str, Any]) -> dict[str, Any]:
    """Valid changes to group 0 and state 0, damage in the last state entry only."""
    sd["param_groups"][0]["lr"] = 0.5
    sd["state"][0]["square_avg"] = sd["state"][0]["square_avg"] + 1.0
    sd["state"][1]["step"] = 99.0
    sd["state"][2]["grad_avg"] = np.zeros(4)
    return sd


def _rename_state(old: Any, new: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sd: dict[str, Any]) -> dict[str, Any]:
        sd["state"][new] = sd["state"].pop(old)
        return sd

    return mutate


LOAD_ROWS: list[tuple[str, Callable[[dict[str, Any]], Any], type[Exception], str]] = [
    ("list", lambda sd: [sd], TypeError, "state_dict must be a dict, got [{"),
    ("none", lambda sd: None, TypeError, "state_dict must be a dict, got None"),
    ("string", lambda sd: "checkpoint.pt", TypeError, "got 'checkpoint.pt'"),
    ("no-state", _drop(("state",)), KeyError, "missing: 'state'; unexpected: none"),
    ("no-param_groups", _drop(("param_groups",)), KeyError, "missing: 'param_groups'"),
    ("extra-top-level-key", _set(("epoch",), 3), KeyError, "unexpected: 'epoch'"),
    ("state-not-dict", _set(("state",), []), TypeError, "state_dict['state'] must be a dict, got []"),
    ("groups-not-list", _set(("param_groups",), {}), TypeError, "state_dict['param_groups'] must be a list, got {}"),
    ("fewer-groups", lambda sd: {**sd, "param_groups": sd["param_groups"][:1]}, ValueError, "state_dict has 1 parameter groups, this optimizer has 2"),
    ("more-groups", lambda sd: {**sd, "param_groups": [*sd["param_groups"], sd["param_groups"][1]]}, ValueError, "has 3 parameter groups"),
    ("fewer-params", _set(("param_groups", 0, "params"), [0]), ValueError, "['param_groups'][0] has 1 parameters, this optimizer's group 0 has 2"),
    ("more-params", _set(("param_groups", 0, "params"), [0, 1, 5]), ValueError, "['param_groups'][0] has 3 parameters"),
    ("group-not-dict", _set(("param_groups", 1), [2]), TypeError, "['param_groups'][1] must be a dict, got [2]"),
    ("group-no-params", _drop(("param_groups", 1, "params")), KeyError, "['param_groups'][1] has no 'params' key"),
    ("params-not-list", _set(("param_groups", 1, "params"), 2), TypeError, "['params'] must be a list of indices, got 2"),
    ("duplicated-index", _set(("param_groups", 1, "params"), [0]), ValueError, "repeats parameter index 0"),
    ("string-index", _set(("param_groups", 0, "params"), ["0", 1]), TypeError, "holds '0', not an integer index"),
    ("float-index", _set(("param_groups", 0, "params"), [0, 1.0]), TypeError, "holds 1.0, not an integer index"),
    ("bool-index", _set(("param_groups", 0, "params"), [False, 1]), TypeError, "holds False, not an integer index"),
    ("unknown-state-index", _set(("state", 7), {}), KeyError, "parameter index 7, which no param group lists"),
    ("string-state-index", _rename_state(0, "0"), KeyError, "parameter index '0'"),
    ("permuted-state-entries", lambda sd: {**sd, "state": {0: sd["state"][2], 1: sd["state"][1], 2: sd["state"][0]}}, ValueError, "state_dict['state'][0]['square_avg'] has shape ()"),
    ("group-missing-lr", _drop(("param_groups", 1, "lr")), KeyError, "['param_groups'][1] has no 'lr' hyperparameter"),
    ("group-negative-lr", _set(("param_groups", 1, "lr"), -1.0), ValueError, "['param_groups'][1]: Invalid lr value: -1.0"),
    ("group-nan-eps", _set(("param_groups", 1, "eps"), math.nan), ValueError, "Invalid eps value: nan"),
    ("group-alpha-2", _set(("param_groups", 0, "alpha"), 2.0), ValueError, "Invalid alpha value: 2.0"),
    ("group-centered-str", _set(("param_groups", 1, "centered"), "no"), TypeError, "centered must be a bool, got 'no'"),
    ("group-lr-str", _set(("param_groups", 0, "lr"), "1e-3"), TypeError, "lr must be a real number, got '1e-3'"),
    ("group-unknown-key", _set(("param_groups", 0, "nesterov"), True), TypeError, "'nesterov'"),
    ("entry-not-dict", _set(("state", 0), [1.0]), TypeError, "state_dict['state'][0]: a state entry must be a dict, got [1.0]"),
    ("buffer-shape", _set(("state", 0, "square_avg"), np.zeros((3, 2))), ValueError, "['state'][0]['square_avg'] has shape (3, 2), the parameter has (2, 3)"),
    ("buffer-flat", _set(("state", 0, "square_avg"), np.zeros(6)), ValueError, "['square_avg'] has shape (6,)"),
    ("buffer-dtype", _set(("state", 1, "square_avg"), np.zeros(4, np.float32)), TypeError, "['state'][1]['square_avg'] has dtype float32, the parameter has float64"),
    ("buffer-big-endian", _set(("state", 1, "square_avg"), np.zeros(4, ">f8")), TypeError, "has dtype >f8"),
    ("buffer-list", _set(("state", 1, "square_avg"), [0.0] * 4), TypeError, "['square_avg'] must be an ndarray (not masked), got [0.0, 0.0, 0.0, 0.0]"),
    ("buffer-masked", _set(("state", 1, "square_avg"), np.ma.masked_array(np.zeros(4), mask=[1, 0, 0, 0])), TypeError, "['square_avg'] must be an ndarray (not masked), got MaskedArray"),
    ("buffer-torch", _set(("state", 1, "square_avg"), torch.zeros(4, dtype=torch.float64)), TypeError, "must be an ndarray (not masked), got tensor("),
    ("missing-momentum_buffer", _drop(("state", 2, "momentum_buffer")), KeyError, "['state'][2]: missing 'momentum_buffer'"),
    ("missing-grad_avg", _drop(("state", 2, "grad_avg")), KeyError, "['state'][2]: missing 'grad_avg'"),
    ("missing-square_avg", _drop(("state", 0, "square_avg")), KeyError, "missing 'square_avg'"),
    ("missing-step", _drop(("state", 1, "step")), KeyError, "['state'][1]: missing 'step'"),
    ("momentum-switched-on", _set(("param_groups", 0, "momentum"), 0.9), KeyError, "['state'][0]: missing 'momentum_buffer'"),
    ("step-nan", _set(("state", 0, "step"), math.nan), ValueError, "step must be finite and >= 0, got nan"),
    ("step-inf", _set(("state", 0, "step"), math.inf), ValueError, "step must be finite and >= 0, got inf"),
    ("step-negative", _set(("state", 0, "step"), -1.0), ValueError, "step must be finite and >= 0, got -1.0"),
    ("step-string", _set(("state", 0, "step"), "2"), TypeError, "step must be a real number, got '2'"),
    ("step-bool", _set(("state", 0, "step"), True), TypeError, "step must be a real number, got True"),
    ("step-huge-int", _set(("state", 0, "step"), 10**400), ValueError, "state_dict['state'][0]: Invalid step value: 1000"),
    ("unknown-state-key", _set(("state", 0, "exp_avg"), np.zeros((2, 3))), KeyError, "unknown state keys 'exp_avg'"),
    ("damage-in-last-entry-only", _last_entry_only, ValueError, "state_dict['state'][2]['grad_avg'] has shape (4,), the parameter has ()"),
]  # fmt: skip


@pytest.mark.parametrize(("mutate", "error", "needle"), [r[1:] for r in LOAD_ROWS], ids=[r[0] for r in LOAD_ROWS])
def test_load_state_dict_refuses_bad_input(mutate, error, needle, tally, snap, encode) -> None:
    with tally.case():
        params, opt = trained()
        bad = mutate(copy.deepcopy(opt.state_dict()))
        argument = encode(bad)
        before = snap(opt, params)
        with pytest.raises(error) as info:
            opt.load_state_dict(bad)
        assert needle in _message(info.value)
        assert snap(opt, params) == before
        assert encode(bad) == argument  # the caller's dict is not modified either


def test_a_refused_load_leaves_the_next_step_unchanged(snap) -> None:
    """Beyond equal snapshots: after a refused load the optimizer steps exactly as one never given it."""
    params_a, opt_a = trained()
    params_b, opt_b = trained()
    with pytest.raises(ValueError):
        opt_a.load_state_dict(_last_entry_only(copy.deepcopy(opt_a.state_dict())))
    for pa, pb in zip(params_a, params_b):
        pa.grad = pb.grad = np.full(pa.shape, 0.25)
    opt_a.step()
    opt_b.step()
    assert snap(opt_a, params_a)[:2] == snap(opt_b, params_b)[:2]
    for pa, pb in zip(params_a, params_b):
        np.testing.assert_array_equal(pa.data, pb.data, strict=True)
