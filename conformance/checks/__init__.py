"""The checks a candidate optimizer must pass on one scenario, each with its name.

Check families (a :class:`~conformance.scenario.Scenario` lists the ones it runs):

``lockstep``
    Re-sync the candidate to torch before every step and compare one step at a
    time (bound :data:`~conformance.compare.LOCKSTEP_BOUND`, derived in
    :mod:`conformance.compare`).  Gives three checks: ``lockstep`` (every
    quantity within the bound), ``nonfinite`` (NaN/+Inf/-Inf at the same
    positions) and ``dtype`` (parameter and buffers keep torch's dtype).
``freerun``
    Run both sides through the whole stream without re-syncing; the
    trajectories must stay within :data:`~conformance.freerun.FREE_RUN_BOUND`
    of the accumulated scale (derived in :mod:`conformance.freerun`).
``sign``
    The sign test against the float64 oracle (:func:`sign_statistic`), which
    catches a systematic one-ULP bias that no max-ULP bound can see.
``state_dict``
    ``state_dict`` (layout, keys, ``step`` and hyperparameters equal torch's
    after the same steps), ``torch_to_candidate`` and ``candidate_to_torch`` (state
    handed over mid-run through a file, restored exactly, and the next step
    agrees without re-syncing), ``candidate_roundtrip`` (save, load into a fresh
    optimizer through a pickle-free file, continue: bit-identical to an
    uninterrupted run).
``contract``
    The optimizer API as torch defines it, one check per item
    (:mod:`conformance.checks.contract`): ``contract_positional``,
    ``contract_zero_grad``, ``contract_closure``, ``contract_grad_untouched``,
    ``contract_state_isolation``, ``contract_load_hypers``,
    ``contract_load_mapping``, ``contract_named_params``,
    ``contract_param_groups``, ``contract_bad_grad``, ``contract_in_place``.
"""

from __future__ import annotations

from conformance.candidate import DEFAULT_CANDIDATE, Adapter, CandidateError, resolve
from conformance.checks import contract, freerun, lockstep, sign, state_dict
from conformance.checks.freerun import FREE_RUN_MIN_STEPS
from conformance.checks.outcome import CheckOutcome, DeviceUnavailableError, require_device
from conformance.checks.sign import SIGN_MIN_SAMPLES, SIGN_WARMUP, SIGN_Z, SignStatistic, sign_statistic
from conformance.scenario import FAMILIES, Scenario

__all__ = [
    "CHECKS",
    "FAMILIES",
    "FREE_RUN_MIN_STEPS",
    "SIGN_MIN_SAMPLES",
    "SIGN_WARMUP",
    "SIGN_Z",
    "CheckOutcome",
    "DeviceUnavailableError",
    "SignStatistic",
    "require_device",
    "run_checks",
    "sign_statistic",
]

#: Every check's name, family by family.
CHECKS = tuple(name for names in FAMILIES.values() for name in names)

#: The module that runs each family: ``run(scenario, adapter) -> list[CheckOutcome]``.
_FAMILY_RUNNERS = {
    "lockstep": lockstep.run,
    "freerun": freerun.run,
    "sign": sign.run,
    "state_dict": state_dict.run,
    "contract": contract.run,
}


def _lacking(adapter: Adapter, scenario: Scenario, family: str) -> str:
    """Return what ``family`` on ``scenario`` needs that the candidate does not support (empty: nothing)."""
    lacking = ", ".join(adapter.supports.missing(scenario.dtype, scenario.hypers))
    if lacking or family != "contract":
        return lacking
    if not adapter.supports.object_api:
        return "an optimizer object with torch's API (zero_grad, step(closure), param_groups)"
    if not adapter.supports.maximize:
        return "maximize=True (the contract items step with it)"
    return ""


def run_checks(scenario: Scenario, candidate: Adapter | type | str | None = None) -> list[CheckOutcome]:
    """Run every check family ``scenario.checks`` names against ``candidate`` (default Lucid's RMSprop).

    A scenario that needs what the candidate does not support
    (:class:`~conformance.candidate.Support`) gives every check of it as
    ``unsupported``, naming what is lacking.  A candidate that raises while
    built or stepped gives the family's first check as ``raised``, with the
    error naming the step and the parameters (never a numerical verdict).

    Raises
    ------
    DeviceUnavailableError
        If the scenario's case needs a device torch does not see.
    """
    unknown = [f for f in scenario.checks if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown check families {unknown}; expected some of {list(FAMILIES)}")
    adapter = resolve(candidate if candidate is not None else DEFAULT_CANDIDATE)
    outcomes: list[CheckOutcome] = []
    for family in scenario.checks:
        lacking = _lacking(adapter, scenario, family)
        if lacking:
            outcomes += [
                CheckOutcome(name, True, f"not supported by {adapter.name}: {lacking}", unsupported=lacking)
                for name in FAMILIES[family]
            ]
            continue
        try:
            outcomes += _FAMILY_RUNNERS[family](scenario, adapter)
        except DeviceUnavailableError:
            raise
        except CandidateError as err:  # it raised: nothing compared, and said so
            outcomes.append(
                CheckOutcome(FAMILIES[family][0], False, f"the candidate could not run: {err}", raised=True)
            )
        except Exception as err:  # anything else the family raised fails its first check, with the error
            outcomes.append(CheckOutcome(FAMILIES[family][0], False, f"the run raised {type(err).__name__}: {err}"))
    return outcomes
