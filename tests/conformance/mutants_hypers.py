"""Wrong implementations that go wrong on hyperparameters and hand-overs (and one honest variant).

Each class has RMSprop's constructor and Lucid's Optimizer interface, so the
harness runs it by import path::

    python -m conformance check --optimizer tests.conformance.mutants_hypers:AlphaFrozen

Each is a bug an optimizer has shipped or easily could: a hyperparameter at
the edge of its range taken for "unset" or "nothing to do", a scalar derived
in the wrong precision, a value read once at construction although a
scheduler changes ``param_groups``, a state_dict that reports or restores the
wrong hyperparameters, state mapped to the wrong parameters on a load.
``test_mutants_hypers.py`` asserts that the probes (the deterministic floor
of ``check``) catch each, by the check named for it, and that the honest
variant (:class:`LerpOneBranch`) passes.  Every mutant here passed the probes
as they were before :func:`conformance.probes.hyper_probe` and the state_dict
family's hand-overs into optimizers built otherwise.
"""

from __future__ import annotations

from unittest import mock

import mutants
import numpy as np

from lucid._fma import fma
from lucid.optim import functional

__all__ = [
    "HONEST",
    "MUTANTS",
    "AlphaFrozen",
    "EpsFrozen",
    "FalsyAlphaDefault",
    "FalsyEpsDefault",
    "LerpOneBranch",
    "LoadByStateOrder",
    "LoadIndexAsPosition",
    "LoadKeepsOwnHypers",
    "MomentumFrozen",
    "OneMinusAlphaInDtype",
    "StaleHypersInStateDict",
    "WeightDecayFrozen",
    "ZeroLrSkipsStep",
]

_HYPER = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize")


# ------------------------------------------------------------------ boundary values


class OneMinusAlphaInDtype(mutants._Honest):
    """alpha converted to the parameter's dtype first, then ``1 - alpha`` computed from it.

    torch rounds the Python float ``1 - alpha`` once; ``1 - float32(alpha)`` is
    a cancellation, 1.3% off at ``alpha = 1 - 1e-6`` (the weight of every new
    squared gradient, so the mean square's window moves by that much).
    """

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group, alpha=float(p.data.dtype.type(group["alpha"])))


class FalsyAlphaDefault(mutants._Honest):
    """``alpha = group["alpha"] or 0.99``: alpha = 0 (torch accepts it: no averaging) read as unset."""

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group, alpha=group["alpha"] or 0.99)


class FalsyEpsDefault(mutants._Honest):
    """``eps = group["eps"] or 1e-8``: eps = 0 (torch accepts it: the bare root) read as unset."""

    def _update(self, p, grad, state, group, **changes):
        super()._update(p, grad, state, group, eps=group["eps"] or 1e-8)


class ZeroLrSkipsStep(mutants._Honest):
    """A group with lr = 0 is skipped as "nothing to update"; torch still updates its state and step."""

    def step(self, closure=None):
        hidden = [(p, p.grad) for g in self.param_groups if g["lr"] == 0 for p in g["params"]]
        for p, _ in hidden:
            p.grad = None
        try:
            return super().step(closure)
        finally:
            for p, grad in hidden:
                p.grad = grad


def _lerp_first_branch(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """``fma(w, end - start, start)`` for every weight: torch's formula for ``w < 0.5`` only."""
    return fma(start.dtype.type(weight), end - start, start)


class LerpOneBranch(mutants._Honest):
    """HONEST: ``grad_avg`` as ``fma(w, g - ga, ga)`` whatever the weight (torch switches formula at w = 1/2).

    For ``w >= 1/2`` (``alpha <= 1/2``) it rounds differently from torch's
    ``fma(-(g - ga), 1 - w, g)``, by about one rounding of ``|ga| + w |g - ga|``:
    within the lockstep bound (measured: ``alpha`` 0, 1e-6, 0.3 and 0.5 in the
    hyperparameter probe pass every check), so it is a legitimate variant, not
    a mutant; the harness must pass it.
    """

    def _update(self, p, grad, state, group, **changes):
        with mock.patch.object(functional, "_lerp", _lerp_first_branch):
            super()._update(p, grad, state, group, **changes)


# ------------------------------------------------------------------ hyperparameters changed mid-run


class _Frozen(mutants._Honest):
    """Reads the hyperparameters in :attr:`frozen` once, at construction (a scheduler's changes are ignored)."""

    frozen: tuple[str, ...] = ()

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self._built = [{k: g[k] for k in self.frozen} for g in self.param_groups]

    def _update(self, p, grad, state, group, **changes):
        k = next(i for i, g in enumerate(self.param_groups) if g is group)
        super()._update(p, grad, state, group, **self._built[k])


class AlphaFrozen(_Frozen):
    """alpha read at construction only (precomputed decay constants, never refreshed)."""

    frozen = ("alpha",)


class EpsFrozen(_Frozen):
    """eps read at construction only."""

    frozen = ("eps",)


class MomentumFrozen(_Frozen):
    """momentum read at construction only (a momentum warm-up schedule is ignored)."""

    frozen = ("momentum",)


class WeightDecayFrozen(_Frozen):
    """weight_decay read at construction only (a weight-decay schedule is ignored)."""

    frozen = ("weight_decay",)


# ------------------------------------------------------------------ hand-overs


class StaleHypersInStateDict(mutants._Honest):
    """state_dict() reports the hyperparameters the optimizer was built with, not the current ones."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self._built = [{k: g[k] for k in _HYPER} for g in self.param_groups]

    def state_dict(self):
        sd = super().state_dict()
        for saved, built in zip(sd["param_groups"], self._built):
            saved.update(built)
        return sd


class LoadKeepsOwnHypers(mutants._Honest):
    """load_state_dict() restores the state but keeps this optimizer's hyperparameters (torch takes the saved)."""

    def load_state_dict(self, state_dict):
        own = [{k: g[k] for k in _HYPER} for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, mine in zip(self.param_groups, own):
            group.update(mine)


class LoadByStateOrder(mutants._Honest):
    """load_state_dict() pairs the parameters with the saved entries in the order the entries come.

    Right while every parameter has state and the entries are in index order;
    wrong when one has none yet (its index is absent) or when torch listed them
    in the order the parameters got their first gradient.
    """

    def load_state_dict(self, state_dict):
        indices = [i for g in state_dict["param_groups"] for i in g["params"]]
        entries = list(state_dict["state"].values())
        super().load_state_dict({"state": dict(zip(indices, entries)), "param_groups": state_dict["param_groups"]})


class LoadIndexAsPosition(mutants._Honest):
    """load_state_dict() takes a saved index for the parameter's position, ignoring the saved groups' lists.

    Right for state_dicts numbered 0, 1, 2, ... in group order (what torch
    writes); wrong for any other numbering, which torch resolves through the
    saved ``param_groups``.
    """

    def load_state_dict(self, state_dict):
        groups, start = [], 0
        for saved in state_dict["param_groups"]:
            groups.append({**saved, "params": list(range(start, start + len(saved["params"])))})
            start += len(saved["params"])
        super().load_state_dict({"state": state_dict["state"], "param_groups": groups})


HONEST = (LerpOneBranch,)
MUTANTS = (
    OneMinusAlphaInDtype,
    FalsyAlphaDefault,
    FalsyEpsDefault,
    ZeroLrSkipsStep,
    AlphaFrozen,
    EpsFrozen,
    MomentumFrozen,
    WeightDecayFrozen,
    StaleHypersInStateDict,
    LoadKeepsOwnHypers,
    LoadByStateOrder,
    LoadIndexAsPosition,
)
