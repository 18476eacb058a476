r"""Known departures from torch's RMSprop: named variants of its formula, from real implementations and classic bugs.

Each :class:`Departure` changes torch's step in one documented way.  The
exact step of any combination of them is :func:`conformance.oracle.oracle_step`
with ``departures=`` their names (the oracle's own type: float64 for float32
parameters, long double for float64), so a candidate that disagrees with torch
can be replayed against every variant and combination
(:mod:`conformance.diagnosis`): the variant it follows as closely as torch
follows torch's own formula names the cause.

torch's step, for reference (``g`` the gradient, ``v`` ``square_avg``, ``m``
``grad_avg``, ``b`` ``momentum_buffer``)::

    g = -g if maximize;  g = g + wd * p
    v = alpha * v + (1 - alpha) * g^2              (v starts at 0)
    avg = sqrt(v - m^2) + eps,  m = alpha * m + (1 - alpha) * g   (centered)
    avg = sqrt(v) + eps                                             (otherwise)
    b = mu * b + g / avg;  p = p - lr * b          (momentum > 0)
    p = p - lr * g / avg                           (otherwise)

The others act on what the step is given, and the replay of
:mod:`conformance.diagnosis` applies them: hyperparameter changes ignored
(``lr_changes_ignored``, ``alpha_changes_ignored``, ...: read once, at
construction), a zero alpha or eps taken as unset (Python's ``or``), a group
with lr = 0 skipped, a missing gradient stepped as zeros, an all-zero gradient
skipped, infinite gradients clipped to the largest finite value.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from itertools import combinations

from conformance.rmsprop import CONTINUOUS

__all__ = [
    "CATALOGUE",
    "CONDITIONS",
    "DEPARTURES",
    "FORMULA",
    "Departure",
    "combinations_upto",
    "describe",
    "relevant",
]


@dataclass(frozen=True)
class Departure:
    """One named way a step can differ from torch's."""

    #: Identifier (``eps_inside_root``), as :func:`~conformance.oracle.oracle_step` takes it.
    name: str
    #: What the candidate computes, as a phrase after "computes torch's RMSprop with".
    phrase: str
    #: The formula it computes instead of torch's.
    formula: str
    #: Where it is found.
    seen_in: str
    #: The conditions of a run (:data:`CONDITIONS`) under which it changes anything: a flag
    #: (``momentum``, ``weight_decay``, ``centered``, ``maximize``), a hyperparameter changed mid-run
    #: (``lr_change``, ...) or zero (``lr_zero``, ...), gradients missing (``none_grad``), all zero
    #: (``zero_grad``) or infinite (``inf_grad``); empty: always.
    needs: tuple[str, ...] = ()


CATALOGUE: tuple[Departure, ...] = (
    Departure(
        "eps_inside_root",
        "eps inside the square root",
        "avg = sqrt(v + eps)",
        "the textbook formula (Hinton's lecture notes), TensorFlow, Keras, optax (eps_in_sqrt=True, its default), "
        "lucid-dl",
    ),
    Departure(
        "eps_ignored",
        "eps left out",
        "avg = sqrt(v) (a zero gradient gives 0/0 = NaN)",
        "a classic bug",
    ),
    Departure(
        "square_avg_starts_at_one",
        "square_avg starting at 1",
        "v_0 = 1 instead of 0",
        "TensorFlow 1's tf.train.RMSPropOptimizer (its accumulators start at one)",
    ),
    Departure(
        "alpha_swapped",
        "alpha and 1 - alpha swapped",
        "v = (1 - alpha) * v + alpha * g^2 (and grad_avg likewise)",
        "a library whose smoothing constant means the weight of the new term",
    ),
    Departure(
        "grad_avg_alpha_swapped",
        "grad_avg weighted by alpha instead of 1 - alpha",
        "m = m + alpha * (g - m)",
        "a classic bug of the centered variant (lerp's weight)",
        needs=("centered",),
    ),
    Departure(
        "centered_ignored",
        "centered ignored",
        "avg = sqrt(v) + eps when centered (grad_avg kept, never subtracted)",
        "a classic bug",
        needs=("centered",),
    ),
    Departure(
        "lr_inside_momentum",
        "lr inside the momentum buffer",
        "b = mu * b + lr * g / avg; p = p - b",
        "TensorFlow, Keras, optax (trace after scale_by_learning_rate): the same trajectory while lr is constant",
        needs=("momentum",),
    ),
    Departure(
        "momentum_ignored",
        "momentum ignored",
        "p = p - lr * g / avg whatever momentum is",
        "a classic bug",
        needs=("momentum",),
    ),
    Departure(
        "decoupled_weight_decay",
        "weight decay decoupled (AdamW-style)",
        "p = p * (1 - lr * wd) first, the gradient left undecayed",
        "AdamW-style optimizers (Loshchilov and Hutter)",
        needs=("weight_decay",),
    ),
    Departure(
        "weight_decay_ignored",
        "weight decay ignored",
        "g without + wd * p",
        "a classic bug",
        needs=("weight_decay",),
    ),
    Departure(
        "maximize_ignored",
        "maximize ignored",
        "descends when maximize=True",
        "an implementation that accepts maximize and drops it",
        needs=("maximize",),
    ),
    Departure(
        "maximize_after_weight_decay",
        "maximize applied after weight decay",
        "g = -(g + wd * p) instead of -g + wd * p",
        "an implementation that negates the decayed gradient",
        needs=("maximize", "weight_decay"),
    ),
    *(
        Departure(
            f"{name}_changes_ignored",
            f"{name} changes ignored ({name} read once, at construction)",
            f"{name} fixed at its initial value",
            f"an implementation that copies {name} out of param_groups when built (a scheduler's changes are lost)",
            needs=(f"{name}_change",),
        )
        for name in CONTINUOUS
    ),
    Departure(
        "zero_alpha_as_default",
        "alpha = 0 taken as unset (alpha 0.99)",
        "alpha = group['alpha'] or 0.99",
        "Python's `or` for a default, where torch accepts alpha = 0 (no averaging)",
        needs=("alpha_zero",),
    ),
    Departure(
        "zero_eps_as_default",
        "eps = 0 taken as unset (eps 1e-8)",
        "eps = group['eps'] or 1e-8",
        "Python's `or` for a default, where torch accepts eps = 0 (the bare root)",
        needs=("eps_zero",),
    ),
    Departure(
        "zero_lr_skips_step",
        "a group with lr = 0 skipped",
        "no step (state and counter untouched) where lr = 0",
        "an implementation that skips groups with nothing to update; torch still updates the state",
        needs=("lr_zero",),
    ),
    Departure(
        "none_grad_as_zero",
        "a missing gradient stepped as zeros",
        "a parameter whose grad is None stepped with g = 0 (torch skips it)",
        "an implementation that zero-fills missing gradients",
        needs=("none_grad",),
    ),
    Departure(
        "zero_grad_skipped",
        "an all-zero gradient skipped",
        "a parameter whose whole gradient is 0 not stepped (torch decays its state)",
        "sparse-style implementations",
        needs=("zero_grad",),
    ),
    Departure(
        "inf_grad_clipped",
        "infinite gradients clipped to the largest finite value",
        "g = clip(g, -max, max) (torch propagates the infinity: inf / inf = NaN)",
        "an implementation that sanitises its gradients",
        needs=("inf_grad",),
    ),
)

#: Every departure by name.
DEPARTURES: dict[str, Departure] = {d.name: d for d in CATALOGUE}

#: The departures :func:`~conformance.oracle.oracle_step` applies (the others act on the stream or the
#: hyperparameters the step is given, and :mod:`conformance.diagnosis` applies them).
FORMULA = frozenset(
    {
        "eps_inside_root",
        "eps_ignored",
        "square_avg_starts_at_one",
        "alpha_swapped",
        "grad_avg_alpha_swapped",
        "centered_ignored",
        "lr_inside_momentum",
        "momentum_ignored",
        "decoupled_weight_decay",
        "weight_decay_ignored",
        "maximize_ignored",
        "maximize_after_weight_decay",
    }
)

#: Every condition a departure may need (:attr:`Departure.needs`), which :func:`relevant` is given.
CONDITIONS = frozenset(
    {"momentum", "weight_decay", "centered", "maximize", "none_grad", "zero_grad", "inf_grad"}
    | {"alpha_zero", "eps_zero", "lr_zero"}
    | {f"{name}_change" for name in CONTINUOUS}
)

#: Pairs that cannot both hold, or where one makes the other meaningless (never combined).
_EXCLUSIVE = frozenset(
    frozenset(pair)
    for pair in (
        ("eps_inside_root", "eps_ignored"),
        ("lr_inside_momentum", "momentum_ignored"),
        ("decoupled_weight_decay", "weight_decay_ignored"),
        ("maximize_ignored", "maximize_after_weight_decay"),
        ("weight_decay_ignored", "maximize_after_weight_decay"),
        ("centered_ignored", "grad_avg_alpha_swapped"),
    )
)


def relevant(conditions: Collection[str]) -> list[Departure]:
    """Return the departures that can change a run where ``conditions`` hold (some of :data:`CONDITIONS`).

    Raises
    ------
    ValueError
        If a condition is not one of :data:`CONDITIONS`.
    """
    unknown = set(conditions) - CONDITIONS
    if unknown:
        raise ValueError(f"unknown conditions {sorted(unknown)}; expected some of {sorted(CONDITIONS)}")
    return [d for d in CATALOGUE if all(n in conditions for n in d.needs)]


def combinations_upto(departures: Iterable[Departure], size: int) -> list[frozenset[str]]:
    """Every combination of exactly ``size`` of ``departures`` whose members can hold together."""
    names = [d.name for d in departures]
    return [
        frozenset(combo)
        for combo in combinations(names, size)
        if not any(frozenset(pair) in _EXCLUSIVE for pair in combinations(combo, 2))
    ]


def describe(names: Iterable[str]) -> str:
    """Name a combination in words, in catalogue order: "eps inside the square root and square_avg starting at 1"."""
    chosen = set(names)
    phrases = [d.phrase for d in CATALOGUE if d.name in chosen]
    if not phrases:
        return "no departure"
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
