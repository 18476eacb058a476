"""Complex parameters (complex64, complex128) against torch, every flag combination.

torch's default CPU path (``foreach=False``) adds the weight decay in complex
arithmetic, ``grad.add(param, alpha=wd)``, and only then views every tensor as
(real, imaginary) pairs for the rest of the step.  Lucid does the same (see
``lucid.optim.functional._update_complex``).  The lockstep comparison judges
each step on the real pairs with the harness's derived bound
(:data:`conformance.compare.LOCKSTEP_BOUND`); the NaN test pins the complex
decay itself, which a per-part (fused) decay gets wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from numpy.typing import NDArray

from conformance.compare import LOCKSTEP_BOUND
from conformance.lockstep import LockstepResult
from conformance.matrix import FlagConfig, flag_configs
from conformance.runners import LockstepPair, StepRecord
from lucid.nn import Parameter
from lucid.optim import RMSprop

COMPLEX = (np.complex64, np.complex128)
STEPS, SIZE = 12, 301
SCALES = (1e-6, 1.0, 1e4)


def as_pairs(x: NDArray[Any] | None) -> NDArray[Any] | None:
    """A complex array as its (real, imaginary) pairs, as torch.view_as_real sees it."""
    if x is None or not np.iscomplexobj(x):
        return x
    return np.ascontiguousarray(x).view(x.real.dtype)


def real_record(record: StepRecord) -> StepRecord:
    return StepRecord(
        param0=as_pairs(record.param0),
        grad=as_pairs(record.grad),
        torch_state0={k: as_pairs(v) for k, v in record.torch_state0.items()},
        torch_param=as_pairs(record.torch_param),
        candidate_param=as_pairs(record.candidate_param),
        torch_state={k: as_pairs(v) for k, v in record.torch_state.items()},
        candidate_state={k: as_pairs(v) for k, v in record.candidate_state.items()},
    )


def complex_draw(rng: np.random.Generator, dtype: Any, scale: float) -> NDArray[Any]:
    return ((rng.standard_normal(SIZE) + 1j * rng.standard_normal(SIZE)) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", COMPLEX, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("config", list(flag_configs()), ids=lambda c: c.name)
def test_complex_lockstep_agrees_with_torch(config: FlagConfig, dtype: Any, record_property) -> None:
    # weight decay 0.5 rather than the matrix's 1e-2: the decay term then moves most gradients by
    # several ULP, so a decay rounded another way would show in the bitwise counts.
    hyper = config.hyper(lr=1e-2, alpha=0.9)
    if config.weight_decay:
        hyper = type(hyper)(**{**hyper.kwargs(), "weight_decay": 0.5})
    result = LockstepResult()
    for seed, scale in enumerate(SCALES):
        rng = np.random.default_rng(seed)
        pair = LockstepPair([complex_draw(rng, dtype, 1.0)], hyper, foreach=False)
        for step in range(STEPS):
            pair.sync_candidate_to_torch()
            for record in pair.step([complex_draw(rng, dtype, scale)]):
                result.absorb(step, hyper, real_record(record))
    assert result.passed(LOCKSTEP_BOUND), (result.worst, result.nonfinite_mismatches, result.dtype_errors)
    record_property("bitwise", (np.dtype(dtype).name, result.bitwise_equal, result.elements))


@pytest.mark.parametrize("dtype", COMPLEX, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("config", list(flag_configs()), ids=lambda c: c.name)
def test_complex_nonfinite_positions_match_torch(config: FlagConfig, dtype: Any) -> None:
    """Every combination of special real and imaginary parts, in the parameter and the gradient.

    With weight decay, a parameter ``1 + inf j`` gives a NaN *real* part in torch
    (the complex product ``(1 + inf j) * (wd + 0j)`` has ``inf * 0`` in it); a
    decay applied to each part alone would leave it finite.
    """
    rdt = np.empty(0, dtype).real.dtype
    values = np.array([1.0, -0.5, 0.0, np.inf, -np.inf, np.nan], rdt)
    pr, pi, gr, gi = (v.ravel() for v in np.meshgrid(values, values, values, values, indexing="ij"))
    p0, g = np.empty(pr.size, dtype), np.empty(pr.size, dtype)
    p0.real, p0.imag, g.real, g.imag = pr, pi, gr, gi  # not pr + 1j * pi: 1j * inf has a NaN real part
    kwargs = config.hyper(lr=1e-2, alpha=0.9).kwargs()
    tp, lp = torch.nn.Parameter(torch.from_numpy(p0.copy())), Parameter(p0.copy())
    torch_opt, lucid_opt = torch.optim.RMSprop([tp], foreach=False, **kwargs), RMSprop([lp], **kwargs)
    tp.grad, lp.grad = torch.from_numpy(g.copy()), g.copy()
    torch_opt.step()
    lucid_opt.step()
    kinds = [np.isnan, np.isposinf, np.isneginf]
    for theirs, ours in [(tp.detach().numpy(), lp.data)] + [
        (torch_opt.state[tp][k].numpy(), lucid_opt.state[lp][k]) for k in torch_opt.state[tp] if k != "step"
    ]:
        for kind in kinds:
            np.testing.assert_array_equal(kind(as_pairs(ours)), kind(as_pairs(theirs)))


@pytest.mark.parametrize("dtype", COMPLEX, ids=lambda d: np.dtype(d).name)
def test_complex_state_keeps_the_complex_dtype(dtype: Any) -> None:
    p = Parameter(np.ones(3, dtype))
    opt = RMSprop([p], momentum=0.9, centered=True)
    p.grad = np.full(3, 1 - 2j, dtype)
    opt.step()
    assert p.dtype == dtype
    assert all(opt.state[p][k].dtype == dtype for k in ("square_avg", "momentum_buffer", "grad_avg"))
