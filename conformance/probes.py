"""The deterministic floor of every ``check``: a fixed battery of scenarios per matrix case.

Each probe is chosen to make a check bite (small gradients where eps matters,
two param groups, a gradient that is None on some steps, a NaN, an lr change,
a transposed and a strided gradient; a 120-step free run; the sign-test
probe).  Drawn scenarios (:mod:`conformance.strategies`) search around them.
"""

from __future__ import annotations

from conformance.matrix import Case
from conformance.scenario import GroupSpec, ParamSpec, Scenario

__all__ = ["probe_scenarios"]


def probe_scenarios(case: Case, seed: int = 0) -> list[Scenario]:
    """Return the fixed battery of one case: a lockstep + state_dict probe, a free run and a sign probe."""
    groups = (
        GroupSpec(lr=1e-2, alpha=0.9, eps=1e-8, momentum=0.9, weight_decay=1e-2),
        GroupSpec(lr=3e-3, alpha=0.75, eps=1e-6, momentum=0.5, weight_decay=1e-3),
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
        groups=groups,
        params=(
            ParamSpec(shape=(33,), group=0, kind="normal", scale=1.0),
            ParamSpec(shape=(3, 5), group=1, kind="signflip", scale=1e-3),
        ),
        steps=120,
        seed=seed + 1,
        lr_change=(60, 0.3),
        checks=("freerun",),
        label="free run",
    )
    sign = Scenario(
        case=case.id,
        groups=(GroupSpec(lr=1e-3, alpha=0.9, eps=1e-8, momentum=0.9, weight_decay=1e-3),),
        params=(ParamSpec(shape=(2048,), kind="wide"), ParamSpec(shape=(2048,), kind="normal")),
        steps=8,
        seed=seed + 2,
        checks=("sign",),
        label="sign probe",
    )
    return [lockstep, freerun, sign]
