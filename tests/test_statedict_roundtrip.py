"""state_dict round-trips: Lucid -> Lucid bitwise, Lucid <-> torch mid-run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conformance import statedict
from conformance.compare import LOCKSTEP_BOUND
from conformance.lockstep import LockstepResult
from conformance.matrix import DTYPES, FlagConfig, flag_configs
from conformance.runners import LockstepPair
from conformance.streams import gradient_stream
from lucid.nn import Parameter
from lucid.optim import RMSprop

STEPS, SPLIT, SHAPES = 16, 7, [(5, 3), (), (11,)]


def _grads(dtype, seed: int) -> list[list[np.ndarray | None]]:
    """Per step, one gradient per parameter; the scalar parameter has none on odd steps."""
    streams = [gradient_stream("normal", 0.1, s, dtype, STEPS, seed + i) for i, s in enumerate(SHAPES)]
    return [
        [g if not (i == 1 and step % 2) else None for i, g in enumerate(gs)] for step, gs in enumerate(zip(*streams))
    ]


def _lucid(config: FlagConfig, dtype) -> tuple[list[Parameter], RMSprop]:
    rng = np.random.default_rng(42)
    params = [Parameter(rng.standard_normal(s).astype(dtype)) for s in SHAPES]
    hyper = config.hyper(lr=1e-2, alpha=0.9).kwargs()
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": 3e-3, "alpha": 0.75}]
    return params, RMSprop(groups, **hyper)


def _run(params, opt, grads) -> None:
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.copy()
        opt.step()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("config", list(flag_configs()), ids=lambda c: c.name)
def test_lucid_save_load_continue_is_bitwise_uninterrupted(config: FlagConfig, dtype) -> None:
    grads = _grads(dtype, 0)
    params_a, opt_a = _lucid(config, dtype)
    _run(params_a, opt_a, grads)

    params_b, opt_b = _lucid(config, dtype)
    _run(params_b, opt_b, grads[:SPLIT])
    saved = copy.deepcopy(opt_b.state_dict())
    values = [p.data.copy() for p in params_b]
    params_c, opt_c = _lucid(config, dtype)  # a fresh process would start like this
    for p, v in zip(params_c, values):
        p.data[...] = v
    opt_c.load_state_dict(saved)
    _run(params_c, opt_c, grads[SPLIT:])
    for a, c in zip(params_a, params_c):
        np.testing.assert_array_equal(c.data, a.data, strict=True)
    sa, sc = opt_a.state_dict(), opt_c.state_dict()
    assert sa["param_groups"] == sc["param_groups"]
    for index, entry in sa["state"].items():
        assert entry.keys() == sc["state"][index].keys()
        for key, value in entry.items():
            np.testing.assert_array_equal(sc["state"][index][key], value, strict=True)


def test_state_dict_is_a_snapshot() -> None:
    params, opt = _lucid(FlagConfig(True, 0.9, 0.0, False), np.float32)
    _run(params, opt, _grads(np.float32, 0)[:2])
    snapshot = opt.state_dict()
    frozen = copy.deepcopy(snapshot)
    _run(params, opt, _grads(np.float32, 0)[2:4])
    np.testing.assert_array_equal(snapshot["state"][0]["square_avg"], frozen["state"][0]["square_avg"])
    assert snapshot["state"][0]["step"] == frozen["state"][0]["step"]


def _continue_in_lockstep(pair: LockstepPair, grads, hyper) -> LockstepResult:
    result = LockstepResult()
    for step, step_grads in enumerate(grads):
        pair.sync_candidate_to_torch()
        for record in pair.step(step_grads):
            result.absorb(step, hyper, record)
    return result


@pytest.mark.parametrize("direction", ["candidate_to_torch", "torch_to_candidate"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("config", list(flag_configs()), ids=lambda c: c.name)
def test_interchange_with_torch_mid_run(config: FlagConfig, dtype, direction: str) -> None:
    """Run one side alone, hand its state to the other side, then continue both in agreement."""
    hyper = config.hyper(lr=1e-2, alpha=0.9)
    grads = _grads(dtype, 3)
    rng = np.random.default_rng(7)
    params0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    pair = LockstepPair(params0, hyper, foreach=False)
    if direction == "candidate_to_torch":
        _run(pair.candidate.params, pair.candidate.opt, grads[:SPLIT])
        pair.torch_opt.load_state_dict(statedict.to_torch(pair.candidate.opt.state_dict()))
        with torch.no_grad():
            for tp, lp in zip(pair.torch_params, pair.candidate.params):
                tp.copy_(torch.from_numpy(lp.data))
        assert pair.torch_opt.state_dict()["param_groups"][0]["lr"] == hyper.lr
    else:
        for step_grads in grads[:SPLIT]:
            for tp, g in zip(pair.torch_params, step_grads):
                tp.grad = None if g is None else torch.from_numpy(g.copy())
            pair.torch_opt.step()
        pair.candidate.opt.load_state_dict(statedict.to_numpy(pair.torch_opt.state_dict()))
        for key, value in pair.candidate.opt.state[pair.candidate.params[0]].items():
            expected = pair.torch_opt.state[pair.torch_params[0]][key]
            np.testing.assert_array_equal(value, expected.numpy(), strict=key != "step")
    result = _continue_in_lockstep(pair, grads[SPLIT:], hyper)
    assert result.passed(LOCKSTEP_BOUND), (result.worst, result.nonfinite_mismatches)
    steps_l = [s["step"] for s in pair.candidate.opt.state_dict()["state"].values()]
    steps_t = [float(s["step"]) for s in pair.torch_opt.state_dict()["state"].values()]
    assert steps_l == steps_t and max(steps_l) == STEPS


def test_refused_load_changes_nothing() -> None:
    params, opt = _lucid(FlagConfig(True, 0.9, 0.0, False), np.float64)
    _run(params, opt, _grads(np.float64, 0)[:3])
    good = opt.state_dict()
    bad = copy.deepcopy(good)
    bad["param_groups"][1]["lr"] = 99.0
    bad["state"][2]["grad_avg"] = np.zeros(4)  # damage in the last entry only
    with pytest.raises(ValueError, match=r"state_dict\['state'\]\[2\]\['grad_avg'\] has shape \(4,\)"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == good["param_groups"]
    for index, entry in good["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(after["state"][index][key], value, strict=True)
