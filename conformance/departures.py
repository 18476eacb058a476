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

Two departures act on the stream rather than the formula, and are applied by
the replay: ``lr_changes_ignored`` (the learning rate read once, at
construction) and ``none_grad_as_zero`` (a parameter without a gradient stepped
with zeros, where torch skips it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

from conformance.rmsprop import Hyper

__all__ = ["CATALOGUE", "DEPARTURES", "FORMULA", "Departure", "combinations_upto", "describe", "relevant"]


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
    #: Which flag or hyperparameter must be set for it to change anything
    #: (``momentum``, ``weight_decay``, ``centered``, ``maximize``, ``lr_change``, ``none_grad``; empty: always).
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
    Departure(
        "lr_changes_ignored",
        "lr changes ignored (the learning rate read once, at construction)",
        "lr fixed at its initial value",
        "an implementation that copies lr out of param_groups when built",
        needs=("lr_change",),
    ),
    Departure(
        "none_grad_as_zero",
        "a missing gradient stepped as zeros",
        "a parameter whose grad is None stepped with g = 0 (torch skips it)",
        "an implementation that zero-fills missing gradients",
        needs=("none_grad",),
    ),
)

#: Every departure by name.
DEPARTURES: dict[str, Departure] = {d.name: d for d in CATALOGUE}

#: The departures :func:`~conformance.oracle.oracle_step` applies (the others act on the stream).
FORMULA = frozenset(DEPARTURES) - {"lr_changes_ignored", "none_grad_as_zero"}

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


def relevant(hypers: Sequence[Hyper], lr_change: bool, none_grad: bool) -> list[Departure]:
    """Return the departures that can change a run with these groups, an lr change or not, missing gradients or not."""
    present = {
        "momentum": any(h.momentum > 0 for h in hypers),
        "weight_decay": any(h.weight_decay != 0 for h in hypers),
        "centered": any(h.centered for h in hypers),
        "maximize": any(h.maximize for h in hypers),
        "lr_change": lr_change,
        "none_grad": none_grad,
    }
    return [d for d in CATALOGUE if all(present[n] for n in d.needs)]


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
