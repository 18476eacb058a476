"""Run the whole harness against a candidate optimizer, from Python or the command line.

>>> from conformance.harness import check_candidate          # doctest: +SKIP
>>> report = check_candidate("lucid.optim:RMSprop", device="cpu", budget=60)  # doctest: +SKIP
>>> report.ok                                                  # doctest: +SKIP
True

The deterministic floor is :func:`~conformance.probes.probe_scenarios`, a fixed
battery of scenarios per matrix case, each chosen to make a check bite.  Then
Hypothesis searches (:mod:`conformance.search`): for ``budget`` seconds across
every selected case, or ``examples`` scenarios per case.  Every failing
scenario comes with the one-line command that replays it (:func:`replay_command`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from conformance.candidates import DEFAULT_CANDIDATE, load_candidate
from conformance.checks import CheckOutcome, run_checks
from conformance.matrix import Case, select_cases
from conformance.probes import probe_scenarios
from conformance.scenario import Scenario
from conformance.search import SearchSummary, search_budget, search_case

__all__ = [
    "DEFAULT_CANDIDATE",
    "CandidateReport",
    "ScenarioResult",
    "check_candidate",
    "probe_scenarios",
    "replay_command",
]


def replay_command(scenario: Scenario, optimizer: str | None = None) -> str:
    """Return the shell command that runs exactly ``scenario`` again (against ``optimizer`` if given)."""
    extra = "" if optimizer in (None, DEFAULT_CANDIDATE) else f" --optimizer {shlex.quote(optimizer)}"
    return f"python -m conformance check --replay {scenario.to_id()}{extra}"


@dataclass
class ScenarioResult:
    """The outcomes of every check on one scenario."""

    scenario: Scenario
    outcomes: list[CheckOutcome]

    @property
    def failed(self) -> list[CheckOutcome]:
        """The outcomes that failed."""
        return [o for o in self.outcomes if not o.passed]


@dataclass
class CandidateReport:
    """Everything :func:`check_candidate` ran."""

    optimizer: str
    results: list[ScenarioResult] = field(default_factory=list)
    #: The probe scenarios run (the deterministic floor).
    probes: int = 0
    #: What the budgeted search drew and found (None: no budgeted search ran).
    search: SearchSummary | None = None

    @property
    def ok(self) -> bool:
        """Whether every check on every scenario passed."""
        return not any(r.failed for r in self.results)

    @property
    def caught_by(self) -> set[str]:
        """Names of the checks that failed somewhere."""
        return {o.check for r in self.results for o in r.failed}

    def failure_lines(self) -> list[str]:
        """One block per failing scenario: case, failing checks with verdicts, and the replay command."""
        lines = []
        for r in self.results:
            if r.failed:
                lines.append(f"{r.scenario.case} [{r.scenario.label or 'example'}]")
                lines += [f"  {o}" for o in r.failed]
                lines.append(f"  replay: {replay_command(r.scenario, self.optimizer)}")
        return lines


def check_candidate(
    optimizer: str | type,
    *,
    device: str = "cpu",
    case_filter: str = "",
    examples: int = 0,
    budget: float = 0.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    selected: Iterable[Case] | None = None,
) -> CandidateReport:
    """Run the harness against ``optimizer`` (a class or ``"package.module:Class"``).

    Parameters
    ----------
    optimizer : type or str
        The candidate class, or its import path.
    device : {"cpu", "cuda"}
        The cases to run (cuda raises :class:`~conformance.checks.DeviceUnavailableError` without a GPU).
    case_filter : str
        Only the cases this text selects (:func:`conformance.matrix.select_cases`: part of a case
        id in either spelling, or a drift case's id, whose scale is ignored).
    examples : int
        Hypothesis-drawn scenarios per case, after the probes (0: none); the same
        scenarios on every machine.
    budget : float
        Seconds of Hypothesis search across every selected case after the probes
        (0: none; :func:`conformance.search.search_budget`).  Ignored when ``examples`` is given.
    seed : int
        Seed of the probes' streams and of the Hypothesis search.
    progress : callable, optional
        Called with one line per finished case and per search round.
    selected : iterable of Case, optional
        Run exactly these cases (overrides ``device`` and ``case_filter``).
    """
    name = optimizer if isinstance(optimizer, str) else f"{optimizer.__module__}:{optimizer.__qualname__}"
    cls = load_candidate(optimizer) if isinstance(optimizer, str) else optimizer
    report = CandidateReport(name)
    chosen = list(selected) if selected is not None else select_cases(case_filter, device)

    def check(scenario: Scenario) -> list[CheckOutcome]:
        return run_checks(scenario, cls)

    for case in chosen:
        for scenario in probe_scenarios(case, seed):
            report.results.append(ScenarioResult(scenario, check(scenario)))
            report.probes += 1
        if examples:
            bad = search_case(case, check, examples=examples, seed=seed)
            if bad is not None:
                report.results.append(ScenarioResult(bad, check(bad)))
        if progress is not None:
            failed = sum(1 for r in report.results if r.scenario.case == case.id and r.failed)
            progress(f"{case.id}: {'ok' if not failed else f'{failed} scenario(s) FAIL'}")
    if budget > 0 and not examples:
        report.search = search_budget(chosen, check, budget=budget, seed=seed, progress=progress)
        report.results += [ScenarioResult(f.scenario, f.outcomes) for f in report.search.found]
    return report
