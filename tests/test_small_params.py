"""Many small parameters: pack views as ``p.data``, and the replayed step that skips unchanged checks."""

from __future__ import annotations

import numpy as np
import pytest

from lucid.nn import Parameter
from lucid.optim import RMSprop
from lucid.optim.functional import rmsprop_update

HYPER = {"lr": 1e-2, "alpha": 0.9, "eps": 1e-8, "weight_decay": 1e-3, "momentum": 0.5, "centered": True}


def _grads(step: int, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    rng = np.random.default_rng(step)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _reference(values: list[np.ndarray], steps: int) -> list[np.ndarray]:
    params = [v.copy() for v in values]
    state = [(np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)) for p in params]
    for step in range(steps):
        for p, g, (sq, ga, buf) in zip(params, _grads(step, [v.shape for v in values]), state):
            rmsprop_update(p, g, sq, ga, buf, maximize=False, **HYPER)
    return params


def _bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).tobytes()


@pytest.fixture
def model() -> tuple[list[np.ndarray], list[Parameter], RMSprop]:
    rng = np.random.default_rng(0)
    values = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(40)]
    params = [Parameter(v.copy()) for v in values]
    return values, params, RMSprop(params, **HYPER)


def _step(opt: RMSprop, params: list[Parameter], step: int) -> None:
    for p, g in zip(params, _grads(step, [p.shape for p in params])):
        p.grad = g
    opt.step()


@pytest.mark.usefixtures("accelerator")
def test_parameters_become_pack_views_and_the_replayed_steps_equal_the_reference(model) -> None:
    values, params, opt = model
    for step in range(4):
        _step(opt, params, step)
        assert opt._fast_step._plan is not None  # every step after the first replays the recorded one
    assert all(p.data.base is not None and not p.data.flags.owndata for p in params)
    for p, e in zip(params, _reference(values, 4)):
        assert _bits(p.data) == _bits(e)


@pytest.mark.usefixtures("accelerator")
def test_a_reference_held_by_the_user_is_never_orphaned(model) -> None:
    values, params, opt = model
    held = params[3].data  # someone else holds this array: it must keep receiving the updates
    holder = np.zeros((3, 5, 2), np.float32)
    holder[..., 0] = values[7]
    params[7].data = holder[..., 0]  # a view of the user's array: its memory is still the user's
    for step in range(3):
        _step(opt, params, step)
    assert params[3].data is held and params[7].data.base is holder
    expected = _reference(values, 3)
    assert _bits(held) == _bits(expected[3]) and _bits(holder[..., 0]) == _bits(expected[7])
    for p, e in zip(params, expected):
        assert _bits(p.data) == _bits(e)


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize("keep", [False, True], ids=["dropped", "kept-by-user"])
def test_data_replaced_after_it_became_a_view_is_still_updated_bit_for_bit(model, keep) -> None:
    values, params, opt = model
    _step(opt, params, 0)
    _step(opt, params, 1)
    assert params[5].data.base is not None
    replacement = params[5].data.copy()  # the same values in an array of the user's
    params[5].data = replacement
    if not keep:
        del replacement
    _step(opt, params, 2)
    _step(opt, params, 3)
    expected = _reference(values, 4)
    for p, e in zip(params, expected):
        assert _bits(p.data) == _bits(e)
    if keep:
        assert params[5].data is replacement  # the user's array was updated, never swapped for a view


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize(
    ("bad", "error", "needle"),
    [
        (lambda buf: np.zeros(buf.size, buf.dtype), ValueError, "state['square_avg']"),
        (lambda buf: buf.astype(np.float64), ValueError, "state['square_avg']"),
        (lambda buf: np.broadcast_to(buf.copy(), buf.shape), ValueError, "read-only"),
        (lambda buf: [1.0], TypeError, "must be an ndarray"),
    ],
    ids=["shape", "dtype", "read-only", "list"],
)
def test_a_state_buffer_replaced_by_the_user_is_checked_again(model, bad, error, needle) -> None:
    _, params, opt = model
    _step(opt, params, 0)
    _step(opt, params, 1)
    opt.state[params[4]]["square_avg"] = bad(opt.state[params[4]]["square_avg"])
    before = [_bits(p.data) for p in params], opt.state_dict()
    for p, g in zip(params, _grads(2, [p.shape for p in params])):
        p.grad = g
    with pytest.raises(error) as info:
        opt.step()
    assert needle in str(info.value)
    after = [_bits(p.data) for p in params], opt.state_dict()
    assert before[0] == after[0]
    assert all(before[1]["state"][i]["step"] == after[1]["state"][i]["step"] for i in before[1]["state"])


@pytest.mark.usefixtures("accelerator")
@pytest.mark.parametrize("what", ["data", "state"])
def test_a_view_marked_read_only_in_place_is_refused(model, what) -> None:
    _, params, opt = model
    _step(opt, params, 0)
    _step(opt, params, 1)
    target = params[2].data if what == "data" else opt.state[params[2]]["momentum_buffer"]
    target.flags.writeable = False
    before = [_bits(p.data) for p in params]
    with pytest.raises(ValueError, match="read-only"):
        _step(opt, params, 2)
    assert [_bits(p.data) for p in params] == before


@pytest.mark.usefixtures("accelerator")
def test_load_state_dict_rebuilds_the_packs_and_adopts_again(model) -> None:
    values, params, opt = model
    _step(opt, params, 0)
    opt.load_state_dict(opt.state_dict())
    for step in (1, 2):
        _step(opt, params, step)
    pack = next(iter(opt._fast_step._packs.values()))
    assert pack.copied == []  # the old pack's views were adopted into the new pack
    for p, e in zip(params, _reference(values, 3)):
        assert _bits(p.data) == _bits(e)


@pytest.mark.usefixtures("accelerator")
def test_a_gradient_that_appears_or_vanishes_leaves_the_replay(model) -> None:
    _, params, opt = model
    _step(opt, params, 0)
    _step(opt, params, 1)
    params[0].grad = None
    opt.step()  # the full way: parameter 0 has no gradient now
    assert opt.state[params[0]]["step"] == 2.0 and opt.state[params[1]]["step"] == 3.0
