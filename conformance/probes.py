"""The deterministic floor of every ``check``: a fixed battery of scenarios per matrix case.

Each probe is chosen to make a check bite (small gradients where eps matters,
two param groups, a gradient that is None on some steps, a NaN, an lr change,
a transposed and a strided gradient; a 120-step free run; the sign-test
probe; boundary hyperparameters, every one of them changed mid-run, and
hand-overs into optimizers built otherwise: :func:`hyper_probe`).  Drawn
scenarios (:mod:`conformance.strategies`) search around them.
"""

from __future__ import annotations

from conformance.matrix import Case
from conformance.rmsprop import Hyper
from conformance.scenario import HyperChange, ParamSpec, Scenario

__all__ = ["hyper_probe", "probe_scenarios", "tensor_probe"]

#: The tensor probe's large parameter: 100023 elements, past every block, chunk and thread
#: threshold of Lucid's fast step (flat packs below 8192 elements, blocks of 65536 float32 /
#: 32768 float64 elements, threads from 32768) and divisible by no power of two above 1, so
#: every blocked or vectorised loop ends in a partial block.  It gets a gradient on the last
#: step only (its first, late): measured on the loaded 2-core machine, the probe then costs
#: about 1 s per case instead of 2-6 s with two steps.
LARGE_SHAPE = (3, 33341)
#: For complex cases: 50013 elements, 100026 real values in torch's ``view_as_real`` (where an
#: implementation that chunks the real view cuts them), half the cost of :data:`LARGE_SHAPE`.
LARGE_SHAPE_COMPLEX = (3, 16671)


#: The tensor probe's many small parameters, for 40 in all: past 16 and 32 tensors, where an
#: implementation that packs or chunks its tensor lists (multi-tensor kernels, flat buffers,
#: a fixed-size batch of parameters per pass) starts a second or third chunk.  An optimizer
#: that handled only the first 16 of them right survived the 14-parameter probe.
MANY_SMALL = tuple(ParamSpec(shape=(3,), group=k % 2, kind="normal") for k in range(26))


def tensor_probe(case: Case, seed: int = 0) -> Scenario:
    """Return the lockstep + state_dict probe of the tensors that implementations get wrong.

    Forty parameters in two groups (26 of them :data:`MANY_SMALL`): the large one (:data:`LARGE_SHAPE`, complex:
    :data:`LARGE_SHAPE_COMPLEX`), with its first gradient on the last step;
    three of one shape (two in one group, one in the other) and one with the
    same number of elements in another shape, so state keyed by shape or size
    shows; 0-d and empty ones; exact zeros (both signs) inside tensors, whole
    steps of zeros, subnormal gradients and gradients whose square is
    subnormal (:data:`conformance.streams.SPECIALS`); NaN, +Inf and -Inf inside
    tensors; first gradients at steps 3, 4, 8 and 11, two of them after the
    state_dict family's hand-over at step 6, so an optimizer that creates state
    before the first gradient shows it.
    """
    groups = (
        Hyper(lr=1e-2, alpha=0.9, eps=1e-8, momentum=0.9, weight_decay=1e-2),
        Hyper(lr=3e-3, alpha=0.75, eps=1e-6, momentum=0.5, weight_decay=1e-3),
    )
    steps = 12
    large = LARGE_SHAPE_COMPLEX if case.np_dtype.kind == "c" else LARGE_SHAPE
    return Scenario(
        case=case.id,
        groups=groups,
        params=(
            ParamSpec(shape=large, group=0, special="zeros", nonfinite="mixed", first_step=steps - 1),
            ParamSpec(shape=(16,), group=0, special="zeros"),
            ParamSpec(shape=(16,), group=0, scale=1e-3),
            ParamSpec(shape=(16,), group=1, kind="wide", special="zeros"),
            ParamSpec(shape=(4, 4), group=1, scale=1e3),
            ParamSpec(shape=(24,), group=0, special="subnormal"),
            ParamSpec(shape=(24,), group=1, special="subnormal", kind="signflip"),
            ParamSpec(shape=(9, 5), group=0, special="zeros", nonfinite="mixed"),
            ParamSpec(shape=(7,), group=1, special="zero_steps"),
            ParamSpec(shape=(), group=0, first_step=3),
            ParamSpec(shape=(0,), group=1),
            ParamSpec(shape=(3, 0), group=0, first_step=4),
            ParamSpec(shape=(16,), group=1, first_step=8),
            ParamSpec(shape=(5, 3), group=0, layout="strided", special="all", nonfinite="inf", first_step=4),
            *MANY_SMALL,
        ),
        steps=steps,
        seed=seed + 3,
        label="tensor probe",
    )


#: The sign probe's hyperparameters: every one a power of two or 1 - a power of two, exact in
#: every dtype, so rounding them to the dtype (torch does, an implementation in a wider type
#: does not) is exact and leaves no systematic error of its own (:mod:`conformance.checks.sign`).
SIGN_GROUP = Hyper(lr=2.0**-10, alpha=1 - 2.0**-3, eps=2.0**-27, momentum=1 - 2.0**-3, weight_decay=2.0**-10)


#: The free run's large parameter, for the growth check's sign counts: 1023 elements (not a
#: multiple of any power of two above 1), 6/sqrt(n) = 0.18 with the other two's 48.
GROWTH_SHAPE = (1023,)
#: The free run's param groups: the lockstep probe's values made exact in every dtype (the
#: growth check judges only such constants), and its lr change a factor of 1/4.
FREE_RUN_GROUPS = (
    Hyper(lr=2.0**-7, alpha=1 - 2.0**-3, eps=2.0**-27, momentum=1 - 2.0**-3, weight_decay=2.0**-7),
    Hyper(lr=2.0**-8, alpha=0.75, eps=2.0**-20, momentum=0.5, weight_decay=2.0**-10),
)


def probe_scenarios(case: Case, seed: int = 0) -> list[Scenario]:
    """Return the fixed battery of one case: a lockstep + state_dict probe, a free run and a sign probe."""
    groups = (
        Hyper(lr=1e-2, alpha=0.9, eps=1e-8, momentum=0.9, weight_decay=1e-2),
        Hyper(lr=3e-3, alpha=0.75, eps=1e-6, momentum=0.5, weight_decay=1e-3),
    )
    lockstep = Scenario(
        case=case.id,
        groups=groups,
        params=(
            ParamSpec(shape=(37,), group=0, kind="normal", scale=1.0),
            ParamSpec(shape=(5, 7), group=1, kind="normal", scale=1e-6, layout="transposed"),
            ParamSpec(shape=(), group=0, kind="constant", scale=1.0, none_every=3),
            ParamSpec(shape=(4, 9), group=1, kind="wide", scale=1.0, layout="strided", nonfinite="nan"),
        ),
        steps=12,
        seed=seed,
        lr_change=(6, 0.5),
        checks=("lockstep", "state_dict", "contract"),
        label="probe",
    )
    freerun = Scenario(
        case=case.id,
        groups=FREE_RUN_GROUPS,
        params=(
            ParamSpec(shape=(33,), group=0, kind="normal", scale=1.0),
            ParamSpec(shape=(3, 5), group=1, kind="signflip", scale=1e-3),
            ParamSpec(shape=GROWTH_SHAPE, group=0, kind="normal", scale=1.0, param_scale=2.0**-4),
        ),
        steps=120,
        seed=seed + 1,
        lr_change=(60, 0.25),
        checks=("freerun",),
        label="free run",
    )
    sign = Scenario(
        case=case.id,
        groups=(SIGN_GROUP,),
        params=(
            ParamSpec(shape=(2048,), kind="wide"),
            ParamSpec(shape=(2048,), kind="normal", param_scale=SIGN_GROUP.lr),
        ),
        steps=8,
        seed=seed + 2,
        checks=("sign",),
        label="sign probe",
    )
    return [lockstep, freerun, sign, tensor_probe(case, seed), hyper_probe(case, seed + 4)]


def hyper_probe(case: Case, seed: int = 0) -> Scenario:
    """Return the hyperparameter probe of ``case``: boundary values, every hyperparameter changed, hand-overs.

    Two groups at the edges of the ranges: group 0 with ``alpha = 0.3`` (torch's
    ``lerp`` weight 0.7, its second branch) and ``eps = 0``; group 1 with
    ``alpha = 1 - 1e-6`` (the weight ``1 - alpha`` is a cancellation) and
    momentum and weight decay at 0 inside a case that switches them on.  Before
    the state_dict family's save (step 4 of 8) alpha, eps, lr (scaled), momentum
    and weight decay change (momentum and weight decay only where the case has
    them on, from 0 to a value where torch allows it); after it lr goes to 0 and
    back, alpha to 0 and to 1 and eps from 0.  Group 0 starts with a parameter
    that never gets a gradient (no state: saved state_dicts lack its index) and
    has two parameters of one shape, which ``reordered_load`` swaps.
    """
    on_m, on_wd = case.flags.momentum > 0, case.flags.weight_decay > 0
    schedule = [
        HyperChange(2, "alpha", 0.95, 0),
        HyperChange(2, "eps", 1e-8, 1),
        HyperChange(3, "lr", 0.5, scale=True),
        *([HyperChange(3, "momentum", 0.8, 0)] if on_m else []),
        *([HyperChange(3, "weight_decay", 0.1, 0), HyperChange(3, "weight_decay", 1e-2, 1)] if on_wd else []),
        HyperChange(5, "lr", 0.0, 1),
        HyperChange(6, "lr", 1e-3, 1),
        HyperChange(6, "alpha", 0.0, 0),
        HyperChange(6, "alpha", 1.0, 1),
        HyperChange(6, "eps", 1e-8, 0),
    ]
    return Scenario(
        case=case.id,
        groups=(
            Hyper(lr=1e-2, alpha=0.3, eps=0.0, momentum=0.5, weight_decay=1e-2),
            Hyper(lr=3e-3, alpha=1.0 - 1e-6, eps=1e-6, momentum=0.0, weight_decay=0.0),
        ),
        params=(
            ParamSpec(shape=(7,), group=0, none_every=1),
            ParamSpec(shape=(13,), group=0, kind="normal", scale=1.0),
            ParamSpec(shape=(13,), group=0, kind="wide", scale=1.0),
            ParamSpec(shape=(3, 5), group=1, kind="normal", scale=1e-3),
            ParamSpec(shape=(), group=1, kind="signflip", scale=1.0),
        ),
        steps=8,
        seed=seed,
        schedule=tuple(schedule),
        label="hyperparameter probe",
    )
