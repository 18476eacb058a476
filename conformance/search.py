"""Hypothesis search for failing scenarios: a fixed number per case, or as many as a time budget allows.

Two ways to search, both reproducible from ``seed``:

* :func:`search_case` draws exactly ``examples`` scenarios of one case (the
  same scenarios on every machine: ``check --examples N``);
* :func:`search_budget` draws scenarios of every selected case, case and
  scenario both drawn by Hypothesis, until ``budget`` seconds have passed
  (``check --budget SECONDS``, the default).  The scenarios drawn are the
  same sequence on every machine; how far along it the search gets depends on
  the machine's speed, so a failure is replayed by its id, not by the seed.

The budgeted search runs in *rounds* of :data:`ROUND_EXAMPLES` examples, each
round a Hypothesis run seeded from ``(seed, round)``, and checks the clock
between examples.  A failing scenario is shrunk (Hypothesis's shrinker: fewer
steps, parameters and groups, simpler streams, smaller shapes) for at most
:data:`SHRINK_SECONDS`; its case then leaves the pool, so the rest of the
budget looks for failures elsewhere, one minimal failure per case.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # importing this module stays cheap: the command line reads DEFAULT_BUDGET for --help
    from conformance.checks import CheckOutcome
    from conformance.matrix import Case
    from conformance.scenario import Scenario

__all__ = [
    "DEFAULT_BUDGET",
    "ROUND_EXAMPLES",
    "SHRINK_SECONDS",
    "Found",
    "SearchSummary",
    "search_budget",
    "search_case",
]

#: Seconds of search ``check`` spends by default after the probes: about two
#: minutes on a 2-core machine, a few hundred drawn scenarios (each 10-300 ms).
DEFAULT_BUDGET = 120.0
#: Examples per Hypothesis run of the budgeted search.  Small enough that the
#: clock is read often (a round ends early when the budget is spent), large
#: enough that Hypothesis's own per-run set-up (a few ms) does not matter.
ROUND_EXAMPLES = 25
#: Longest time spent shrinking one failure.  Measured on the mutant catalogue:
#: a failing drawn scenario of 2-4 parameters shrinks to its minimal form in
#: 2-15 s (each candidate scenario costs one run of its checks, 10-300 ms);
#: past the limit the failure is reported as far as it got, still failing.
SHRINK_SECONDS = 30.0

Check = Callable[["Scenario"], "list[CheckOutcome]"]


@dataclass(frozen=True)
class Found:
    """A failing scenario the search found, shrunk, with the outcomes of its checks."""

    scenario: Scenario
    outcomes: list[CheckOutcome]


@dataclass
class SearchSummary:
    """What a search drew and found."""

    #: Distinct scenarios whose checks ran (shrinking included).
    scenarios: int = 0
    #: Hypothesis rounds run.
    rounds: int = 0
    seconds: float = 0.0
    found: list[Found] = field(default_factory=list)


class _Memo:
    """Run the checks once per distinct scenario (Hypothesis replays a failure several times)."""

    def __init__(self, check: Check) -> None:
        self._check = check
        self.seen: dict[str, list[CheckOutcome]] = {}

    def __call__(self, scenario: Scenario) -> list[CheckOutcome]:
        key = scenario.to_id()
        if key not in self.seen:
            self.seen[key] = self._check(scenario)
        return self.seen[key]

    def failing(self, scenario: Scenario) -> bool:
        return any(not o.passed for o in self(scenario))


def _hypothesis_run(strategy: Any, examples: int, seed: int, body: Callable[[Scenario], None]) -> None:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    @hypothesis_seed(seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=(Phase.generate, Phase.shrink),
        print_blob=False,
        report_multiple_bugs=False,
    )
    @given(strategy)
    def run(scenario: Scenario) -> None:
        body(scenario)

    run()


class _FailingError(AssertionError):
    """Raised inside a Hypothesis run for a failing scenario (Hypothesis then shrinks it)."""


class _Round:
    """The body of one round's Hypothesis run: run the checks, within the drawing and shrinking time."""

    def __init__(self, memo: _Memo, clock: Callable[[], float], stop_drawing: float) -> None:
        self.memo = memo
        self.clock = clock
        self.stop_drawing = stop_drawing
        self.stop_shrinking = 0.0
        self.failing: list[Scenario] = []

    def __call__(self, scenario: Scenario) -> None:
        key = scenario.to_id()
        if key not in self.memo.seen:
            now = self.clock()
            if not self.failing and now >= self.stop_drawing:
                return  # budget spent: the rest of the round passes untried
            if self.failing and now >= self.stop_shrinking:
                return  # shrinking time spent: the smallest failure so far stands
        if self.memo.failing(scenario):
            if not self.failing:
                self.stop_shrinking = self.clock() + SHRINK_SECONDS
            self.failing.append(scenario)
            raise _FailingError(key)


def search_case(case: Case, check: Check, *, examples: int, seed: int = 0) -> Scenario | None:
    """Let Hypothesis draw ``examples`` scenarios of ``case``; return the shrunk failing one, or None."""
    from conformance.strategies import scenarios

    memo = _Memo(check)
    failing: list[Scenario] = []

    def body(scenario: Scenario) -> None:
        if memo.failing(scenario):
            failing.append(scenario)
            raise _FailingError(scenario.to_id())

    try:
        _hypothesis_run(scenarios(case), examples, seed, body)
    except _FailingError:
        return failing[-1]
    return None


def search_budget(
    cases: Sequence[Case],
    check: Check,
    *,
    budget: float,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SearchSummary:
    """Draw scenarios of ``cases`` until ``budget`` seconds have passed; shrink each failure found.

    Parameters
    ----------
    cases : sequence of Case
        The pool to draw from; a case leaves it once a failure of it is found.
    check : callable
        Runs every check of one scenario (:func:`conformance.checks.run_checks` bound to a candidate).
    budget : float
        Seconds of drawing.  Shrinking a failure found before the end may take up to
        :data:`SHRINK_SECONDS` more.
    seed : int
        Seed of round ``k``'s Hypothesis run is derived from ``(seed, k)``.
    progress : callable, optional
        Called with one line per round.
    clock : callable
        The time source (a test passes a fake one).
    """
    from hypothesis import strategies as st

    from conformance.strategies import scenarios

    summary = SearchSummary()
    memo = _Memo(check)
    pool = list(cases)
    start = clock()
    stop_drawing = start + budget
    while pool and clock() < stop_drawing:
        round_ = _Round(memo, clock, stop_drawing)
        strategy = st.sampled_from(pool).flatmap(scenarios)
        try:
            _hypothesis_run(strategy, ROUND_EXAMPLES, seed * 1_000_003 + summary.rounds, round_)
        except _FailingError:
            bad = round_.failing[-1]
            summary.found.append(Found(bad, memo(bad)))
            pool = [c for c in pool if c.id != bad.case]
        summary.rounds += 1
        if progress is not None:
            progress(
                f"search round {summary.rounds}: {len(memo.seen)} scenarios in {clock() - start:.0f} s, "
                f"{len(summary.found)} failing case(s)"
            )
    summary.scenarios = len(memo.seen)
    summary.seconds = clock() - start
    return summary
