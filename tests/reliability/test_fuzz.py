"""Property-based fuzzing of load_state_dict and the constructor (Hypothesis, ``ci`` profile).

A valid state_dict is mutated by a random sequence of edits, each of a known
kind:

* *benign*: another spelling of the same content (NumPy integers for indices,
  0-d or one-element arrays for numbers, ``np.bool_``, torch's implementation
  keys, fallback keys left out, tuples, non-contiguous buffers, indices
  relabelled by a permutation, entries reordered).  The equivalent valid
  state_dict is unchanged.
* *data*: a different but valid state (NaN, Inf or negative buffer values, other
  hyperparameters and steps, a dropped entry, an extra buffer).  Applied to the
  equivalent valid state_dict too.
* *damaging* (at most one, applied last): a missing or unknown key, a value of
  the wrong type or out of range, a shape or dtype changed, an index
  duplicated, unknown or missing, a container of the wrong kind.

Property: with a damaging edit the load raises ValueError, TypeError or
KeyError and leaves the optimizer byte for byte unchanged; without one it is
accepted, and the optimizer then equals, and keeps stepping bit for bit like,
one loaded from the equivalent valid state_dict.  Any other exception fails.
The caller's state_dict is never modified.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support import same, trained

from lucid.nn import Parameter
from lucid.optim import RMSprop

EXPECTED_ERRORS = (ValueError, TypeError, KeyError)
REAL_KEYS = ("lr", "alpha", "eps", "weight_decay", "momentum")
BOOL_KEYS = ("centered", "maximize")
FALLBACKS = {"momentum": 0.0, "centered": False, "maximize": False}


# --------------------------------------------------------------- the edits
# Each edit takes (draw, mutated, equivalent) and changes them in place.
Edit = Callable[[Any, dict[str, Any], dict[str, Any]], None]


def _entries(sd: dict[str, Any]) -> list[Any]:
    return sorted(sd["state"], key=int)


def _group_of(sd: dict[str, Any], index: Any) -> dict[str, Any]:
    return next(g for g in sd["param_groups"] if any(int(i) == int(index) for i in g["params"]))


def benign_numpy_index(draw, sd, eq) -> None:
    gi = draw(st.integers(0, len(sd["param_groups"]) - 1))
    params = list(sd["param_groups"][gi]["params"])
    k = draw(st.integers(0, len(params) - 1))
    params[k] = draw(st.sampled_from([np.int64, np.int32, np.uint8]))(params[k])
    sd["param_groups"][gi]["params"] = params
    if sd["state"] and draw(st.booleans()):
        key = draw(st.sampled_from(_entries(sd)))
        sd["state"][np.int64(key)] = sd["state"].pop(key)


def benign_number_spelling(draw, sd, eq) -> None:
    if sd["state"] and draw(st.booleans()):
        entry = sd["state"][draw(st.sampled_from(_entries(sd)))]
        step = entry["step"]  # a small whole number: every spelling below is exact
        entry["step"] = draw(st.sampled_from([np.float64, np.float32, int, np.array, lambda v: np.array([v])]))(step)
    else:
        group = draw(st.sampled_from(sd["param_groups"]))
        key = draw(st.sampled_from([k for k in REAL_KEYS if k in group]))
        group[key] = draw(st.sampled_from([np.float64, np.array, lambda v: np.array([v])]))(group[key])


def benign_bool_spelling(draw, sd, eq) -> None:
    options = [(g, k) for g in sd["param_groups"] for k in BOOL_KEYS if k in g]  # fallback keys may be gone
    if options:
        group, key = draw(st.sampled_from(options))
        group[key] = np.bool_(group[key])


def benign_torch_keys(draw, sd, eq) -> None:
    group = draw(st.sampled_from(sd["param_groups"]))
    for key in draw(st.sets(st.sampled_from(["foreach", "capturable", "differentiable", "fused"]), min_size=1)):
        group[key] = draw(st.sampled_from([None, False, True]))


def benign_drop_fallback(draw, sd, eq) -> None:
    options = [(gi, k) for gi, g in enumerate(sd["param_groups"]) for k, v in FALLBACKS.items() if g.get(k) == v]
    if options:
        gi, key = draw(st.sampled_from(options))
        del sd["param_groups"][gi][key]


def benign_tuple_params(draw, sd, eq) -> None:
    group = draw(st.sampled_from(sd["param_groups"]))
    group["params"] = tuple(group["params"])


def benign_strided_buffer(draw, sd, eq) -> None:
    if not sd["state"]:
        return
    entry = sd["state"][draw(st.sampled_from(_entries(sd)))]
    key = draw(st.sampled_from([k for k in entry if k != "step"]))
    wide = np.zeros((*entry[key].shape, 2), entry[key].dtype)
    wide[..., 0] = entry[key]
    # np.array(order="F"), not np.asfortranarray, which turns a 0-d array into shape (1,)
    entry[key] = wide[..., 0] if draw(st.booleans()) else np.array(entry[key], order="F")


def benign_relabel(draw, sd, eq) -> None:
    """Indices are only labels: a consistent permutation changes nothing."""
    labels = [int(i) for g in sd["param_groups"] for i in g["params"]]
    new = draw(st.permutations(labels))
    mapping = dict(zip(labels, new))
    for g in sd["param_groups"]:
        g["params"] = type(g["params"])(type(i)(mapping[int(i)]) for i in g["params"])
    sd["state"] = {type(k)(mapping[int(k)]): v for k, v in sd["state"].items()}


def benign_reorder_entries(draw, sd, eq) -> None:
    keys = draw(st.permutations(list(sd["state"])))
    sd["state"] = {k: sd["state"][k] for k in keys}


def _both(sd: dict[str, Any], eq: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    change(sd)
    change(eq)


def data_buffer_values(draw, sd, eq) -> None:
    if not sd["state"]:
        return
    index = draw(st.sampled_from(_entries(sd)))
    key = draw(st.sampled_from([k for k in sd["state"][index] if k != "step"]))
    size = sd["state"][index][key].size
    if size == 0:
        return
    flat = draw(st.integers(0, size - 1))
    value = draw(st.sampled_from([math.nan, math.inf, -math.inf, -1.0, 0.0, -0.0, 1e300]))

    def change(d: dict[str, Any]) -> None:
        buffer = np.array(d["state"][index][key])  # a copy: benign edits may have made a view
        with np.errstate(over="ignore"):
            buffer[np.unravel_index(flat, buffer.shape)] = value  # reshape(-1) would copy a Fortran array
        d["state"][index][key] = buffer if buffer.flags.writeable else buffer.copy()

    _both(sd, eq, change)


def data_hyperparameter(draw, sd, eq) -> None:
    gi = draw(st.integers(0, len(sd["param_groups"]) - 1))
    key = draw(st.sampled_from(["lr", "eps", "weight_decay", "alpha"]))
    high = 1.0 if key == "alpha" else 10.0
    value = draw(st.floats(0.0, high, allow_nan=False))
    _both(sd, eq, lambda d: d["param_groups"][gi].__setitem__(key, value))


def data_step(draw, sd, eq) -> None:
    if sd["state"]:
        index = draw(st.sampled_from(_entries(sd)))
        value = float(draw(st.integers(0, 10**6)))
        _both(sd, eq, lambda d: d["state"][index].__setitem__("step", value))


def data_drop_entry(draw, sd, eq) -> None:
    if sd["state"]:
        index = draw(st.sampled_from(_entries(sd)))
        _both(sd, eq, lambda d: d["state"].pop(index))


def data_initial_lr(draw, sd, eq) -> None:
    gi = draw(st.integers(0, len(sd["param_groups"]) - 1))
    value = draw(st.floats(0.0, 1.0))
    _both(sd, eq, lambda d: d["param_groups"][gi].__setitem__("initial_lr", value))


def data_extra_buffer(draw, sd, eq) -> None:
    options = [i for i in _entries(sd) if "momentum_buffer" not in sd["state"][i]]
    if options:
        index = draw(st.sampled_from(options))
        shape = sd["state"][index]["square_avg"].shape
        dtype = sd["state"][index]["square_avg"].dtype
        _both(sd, eq, lambda d: d["state"][index].__setitem__("momentum_buffer", np.ones(shape, dtype)))


BENIGN: list[Edit] = [
    benign_numpy_index,
    benign_number_spelling,
    benign_bool_spelling,
    benign_torch_keys,
    benign_drop_fallback,
    benign_tuple_params,
    benign_strided_buffer,
    benign_reorder_entries,
]  # benign_relabel runs after the others, which index both dicts by the same labels
DATA: list[Edit] = [
    data_buffer_values,
    data_hyperparameter,
    data_step,
    data_drop_entry,
    data_initial_lr,
    data_extra_buffer,
]


class Replace:
    """Returned by a damaging edit that replaces the whole state_dict."""

    def __init__(self, value: Any) -> None:
        self.value = value


WRONG_VALUES = ["0.1", None, [0.5], {"v": 1}, 1 + 0j, object(), True]


def damaging_options(sd: dict[str, Any]) -> list[tuple[str, Callable[[Any], Any]]]:
    """Every damaging edit that applies to ``sd`` as it is now, by name.

    Each entry's function takes ``draw`` and returns the damaged state_dict
    (or another object); it works on a deep copy.
    """
    options: list[tuple[str, Callable[[Any], Any]]] = []

    def add(name: str) -> Callable[[Callable[[Any, dict[str, Any]], Any]], None]:
        def register(fn: Callable[[Any, dict[str, Any]], Any]) -> None:
            def run(draw: Any) -> Any:
                d = copy.deepcopy(sd)
                out = fn(draw, d)
                return out.value if isinstance(out, Replace) else d

            options.append((name, run))

        return register

    entries = _entries(sd)
    groups = sd["param_groups"]

    add("not-a-dict")(lambda draw, d: Replace(draw(st.sampled_from([[d], None, "sd", 3]))))
    add("top-level-key")(lambda draw, d: d.pop(draw(st.sampled_from(["state", "param_groups"]))))
    add("extra-top-level-key")(lambda draw, d: d.__setitem__("epoch", 1))
    add("state-container")(lambda draw, d: d.__setitem__("state", draw(st.sampled_from([[], None, ()]))))
    add("groups-container")(lambda draw, d: d.__setitem__("param_groups", draw(st.sampled_from([{}, None, "g"]))))
    add("group-count")(
        lambda draw, d: d.__setitem__(
            "param_groups", draw(st.sampled_from([d["param_groups"][:1], [*d["param_groups"], d["param_groups"][0]]]))
        )
    )

    @add("group-not-dict")
    def _(draw, d):
        d["param_groups"][draw(st.integers(0, len(groups) - 1))] = draw(st.sampled_from([[0], None, "g"]))

    @add("param-count")
    def _(draw, d):
        g = d["param_groups"][draw(st.integers(0, len(groups) - 1))]
        g["params"] = list(g["params"])[:-1] if draw(st.booleans()) else [*g["params"], 99]

    @add("duplicate-index")
    def _(draw, d):
        g0, g1 = d["param_groups"]
        g1["params"] = [list(g0["params"])[draw(st.integers(0, len(g0["params"]) - 1))]]

    @add("index-type")
    def _(draw, d):
        g = d["param_groups"][draw(st.integers(0, len(groups) - 1))]
        params = list(g["params"])
        params[0] = draw(st.sampled_from([str(int(params[0])), float(params[0]), None, bool(int(params[0]) % 2)]))
        g["params"] = params

    add("unknown-state-index")(lambda draw, d: d["state"].__setitem__(draw(st.sampled_from([7, -1, "0", 2.0])), {}))

    @add("group-missing-key")
    def _(draw, d):
        g = d["param_groups"][draw(st.integers(0, len(groups) - 1))]
        del g[draw(st.sampled_from(["lr", "alpha", "eps", "weight_decay", "params"]))]

    @add("group-unknown-key")
    def _(draw, d):
        d["param_groups"][draw(st.integers(0, len(groups) - 1))]["nesterov"] = True

    @add("hyperparameter-value")
    def _(draw, d):
        g = d["param_groups"][draw(st.integers(0, len(groups) - 1))]
        key = draw(st.sampled_from(REAL_KEYS))
        bad = [-1.0, -1e-300, math.nan, math.inf, -math.inf, 10**400, *WRONG_VALUES]
        g[key] = draw(st.sampled_from([*bad, 1.5] if key == "alpha" else bad))

    @add("bool-value")
    def _(draw, d):
        g = d["param_groups"][draw(st.integers(0, len(groups) - 1))]
        g[draw(st.sampled_from(BOOL_KEYS))] = draw(st.sampled_from([0, 1, "False", None, 1.0]))

    for gi, group in enumerate(groups):
        in_group = [i for i in entries if int(i) in {int(j) for j in group["params"]}]
        for flag, buffer in (("momentum", "momentum_buffer"), ("centered", "grad_avg")):
            if not group.get(flag) and any(buffer not in sd["state"][i] for i in in_group):

                def switch_on(draw, d, gi=gi, flag=flag):
                    d["param_groups"][gi][flag] = 0.5 if flag == "momentum" else True

                add(f"{flag}-switched-on")(switch_on)

    if not entries:
        return options

    @add("entry-not-dict")
    def _(draw, d):
        d["state"][draw(st.sampled_from(entries))] = draw(st.sampled_from([[], None, 1.0]))

    @add("unknown-state-key")
    def _(draw, d):
        d["state"][draw(st.sampled_from(entries))][draw(st.sampled_from(["exp_avg", "Step", 0]))] = 1.0

    @add("missing-required")
    def _(draw, d):
        required = []
        for i in entries:
            group = _group_of(d, i)
            keys = ["step", "square_avg"]
            keys += ["momentum_buffer"] if group.get("momentum", 0) else []
            keys += ["grad_avg"] if group.get("centered", False) else []
            required += [(i, k) for k in keys]
        i, key = draw(st.sampled_from(required))
        del d["state"][i][key]

    @add("step-value")
    def _(draw, d):
        d["state"][draw(st.sampled_from(entries))]["step"] = draw(
            st.sampled_from([math.nan, math.inf, -1.0, 10**400, *WRONG_VALUES, np.array([1.0, 2.0])])
        )

    @add("buffer-shape")
    def _(draw, d):
        entry = d["state"][draw(st.sampled_from(entries))]
        key = draw(st.sampled_from([k for k in entry if k != "step"]))
        old = np.asarray(entry[key])
        entry[key] = draw(
            st.sampled_from(
                [np.zeros((*old.shape, 1), old.dtype), np.zeros(old.size + 1, old.dtype), old.reshape(-1)[:0]]
            )
        )
        if entry[key].shape == old.shape:  # a 0-element buffer can coincide with nothing but (0,)
            entry[key] = np.zeros((*old.shape, 2), old.dtype)

    @add("buffer-dtype")
    def _(draw, d):
        entry = d["state"][draw(st.sampled_from(entries))]
        key = draw(st.sampled_from([k for k in entry if k != "step"]))
        old = np.asarray(entry[key])
        other = draw(st.sampled_from([np.float16, np.float32, np.float64, np.int64, np.complex128, np.bool_, object]))
        if np.dtype(other) == old.dtype:
            other = np.float16
        with np.errstate(invalid="ignore", over="ignore"):  # NaN to int64, 1e300 to float16
            entry[key] = old.astype(other)

    @add("buffer-type")
    def _(draw, d):
        entry = d["state"][draw(st.sampled_from(entries))]
        key = draw(st.sampled_from([k for k in entry if k != "step"]))
        entry[key] = draw(st.sampled_from([np.asarray(entry[key]).tolist(), None, 0.0, "zeros"]))

    return options


# ------------------------------------------------------------------ the tests
def _load_and_check(opt, params, mutated, equivalent, damaged: bool, dtype, snap, encode) -> None:
    argument = encode(mutated)
    before = snap(opt, params)
    try:
        opt.load_state_dict(mutated)
    except EXPECTED_ERRORS as err:
        assert damaged, f"a valid state_dict was refused: {err!r}"
        assert snap(opt, params) == before, "a refused load changed the optimizer"
    else:
        assert not damaged, "a damaged state_dict was accepted"
        ref_params, ref = trained(dtype)
        ref.load_state_dict(equivalent)
        assert same(opt.state_dict(), ref.state_dict(), ordered=False)
        rng = np.random.default_rng(1)
        for _ in range(3):
            for p, q in zip(params, ref_params):
                p.grad = rng.standard_normal(p.shape).astype(dtype)
                q.grad = p.grad.copy()
            opt.step()
            ref.step()
        assert same(opt.state_dict(), ref.state_dict(), ordered=False)
        assert all(same(p.data, q.data) for p, q in zip(params, ref_params))
    assert encode(mutated) == argument, "load_state_dict modified its argument"


def _mutate(data: Any, dtype: Any, damage: str | None) -> tuple[list[Parameter], RMSprop, Any, dict[str, Any]]:
    """A trained optimizer, its state_dict after random edits, and the equivalent valid state_dict."""
    params, opt = trained(dtype)
    mutated = opt.state_dict()
    equivalent = copy.deepcopy(mutated)
    for edit in data.draw(st.lists(st.sampled_from(BENIGN + DATA), max_size=4), label="edits"):
        edit(data.draw, mutated, equivalent)
    if data.draw(st.booleans(), label="relabel"):
        benign_relabel(data.draw, mutated, equivalent)
    if damage is not None:
        options = dict(damaging_options(mutated))
        assume(damage in options)  # e.g. "momentum-switched-on" needs an entry without a momentum buffer
        mutated = options[damage](data.draw)
    return params, opt, mutated, equivalent


DAMAGES = [name for name, _ in damaging_options(trained(np.float64)[1].state_dict())]
#: Examples per damage kind: a fifth of the profile's budget (10 under ``ci``, 200 under ``thorough``).
PER_DAMAGE = max(5, settings.default.max_examples // 5)


def test_valid_spellings_and_data_are_loaded_exactly(tally, snap, encode) -> None:
    @given(st.data(), st.sampled_from([np.float32, np.float64]))
    def run(data, dtype) -> None:
        params, opt, mutated, equivalent = _mutate(data, dtype, None)
        with tally.case():
            _load_and_check(opt, params, mutated, equivalent, False, dtype, snap, encode)

    run()


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_state_dicts_are_refused_cleanly(damage: str, tally, snap, encode) -> None:
    @settings(max_examples=PER_DAMAGE)
    @given(st.data(), st.sampled_from([np.float32, np.float64]))
    def run(data, dtype) -> None:
        params, opt, mutated, equivalent = _mutate(data, dtype, damage)
        with tally.case():  # counted once drawn in full (Hypothesis may discard a draw half way)
            _load_and_check(opt, params, mutated, equivalent, True, dtype, snap, encode)

    run()


# ------------------------------------------------------------- constructor
def _valid_real(key: str) -> st.SearchStrategy[Any]:
    high = 1.0 if key == "alpha" else 10.0
    floats = st.floats(0.0, high, allow_nan=False)
    return st.one_of(
        floats,
        floats.map(np.float64),
        floats.map(np.float32).filter(lambda v: float(v) <= high),
        floats.map(np.array),
        st.integers(0, int(high)),
        st.integers(0, int(high)).map(np.int64),
    )


BAD_REAL = [
    -1.0,
    -1e-300,
    math.nan,
    math.inf,
    -math.inf,
    10**400,
    "0.1",
    None,
    True,
    np.bool_(False),
    [0.1],
    1 + 0j,
    object(),
    np.array([0.1, 0.2]),
    np.array("1"),
]
BAD_BOOL = [0, 1, 1.0, "True", None, np.array([True])]


@st.composite
def constructor_kwargs(draw) -> tuple[dict[str, Any], set[str]]:
    """Keyword arguments, and the names of those that are invalid."""
    kwargs: dict[str, Any] = {}
    bad: set[str] = set()
    for key in REAL_KEYS:
        if draw(st.booleans()):
            if draw(st.integers(0, 4)) == 0:
                kwargs[key] = draw(st.sampled_from([*BAD_REAL, 1.5] if key == "alpha" else BAD_REAL))
                bad.add(key)
            else:
                kwargs[key] = draw(_valid_real(key))
    for key in BOOL_KEYS:
        if draw(st.booleans()):
            if draw(st.integers(0, 4)) == 0:
                kwargs[key] = draw(st.sampled_from(BAD_BOOL))
                bad.add(key)
            else:
                kwargs[key] = draw(st.sampled_from([True, False, np.bool_(True), np.bool_(False)]))
    if draw(st.integers(0, 9)) == 0:
        name = draw(st.sampled_from(["nesterov", "betas", "learning_rate", "weight_decy", "foreach"]))
        kwargs[name] = 0.1
        bad.add(name)
    return kwargs, bad


def _canonical(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: (bool(v) if k in BOOL_KEYS else float(np.asarray(v).reshape(()).item())) for k, v in kwargs.items()}


def _check_refusal(err: BaseException, bad: set[str]) -> None:
    assert bad, f"valid arguments were refused: {err!r}"
    message = str(err.args[0]) if err.args else ""
    assert any(key in message for key in bad), f"{message!r} names none of {sorted(bad)}"


def test_constructor_accepts_exactly_the_valid_arguments(tally) -> None:
    @given(constructor_kwargs())
    def run(args: tuple[dict[str, Any], set[str]]) -> None:
        with tally.case():
            check_constructor(*args)

    run()


def check_constructor(kwargs: dict[str, Any], bad: set[str]) -> None:
    if True:
        p = Parameter(np.linspace(-1, 1, 5))
        try:
            opt = RMSprop([p], **kwargs)
        except (ValueError, TypeError) as err:
            _check_refusal(err, bad)
            assert p.grad is None and p.data.tobytes() == np.linspace(-1, 1, 5).tobytes()
            return
        assert not bad, f"{sorted(bad)} were accepted"
        q = Parameter(np.linspace(-1, 1, 5))
        ref = RMSprop([q], **_canonical(kwargs))
        assert same(opt.state_dict(), ref.state_dict(), ordered=False)
        for _ in range(3):
            p.grad = q.grad = np.linspace(0.5, -2.0, 5)
            opt.step()
            ref.step()
        assert same(p.data, q.data) and same(opt.state_dict(), ref.state_dict(), ordered=False)


def test_add_param_group_accepts_exactly_the_valid_arguments(tally, snap) -> None:
    @given(constructor_kwargs())
    def run(args: tuple[dict[str, Any], set[str]]) -> None:
        with tally.case():
            check_add_param_group(*args, snap)

    run()


def check_add_param_group(kwargs: dict[str, Any], bad: set[str], snap: Callable[..., Any]) -> None:
    if True:
        params, opt = trained(np.float64)
        new = Parameter(np.ones(2))
        before = snap(opt, [*params, new])
        try:
            opt.add_param_group({"params": [new], **kwargs})
        except (ValueError, TypeError) as err:
            _check_refusal(err, bad)
            assert snap(opt, [*params, new]) == before
            return
        assert not bad, f"{sorted(bad)} were accepted"
        group = opt.param_groups[-1]
        assert all(same(group[k], v) for k, v in _canonical(kwargs).items())
