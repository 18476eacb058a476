"""The budgeted search (``check --budget``): reproducible, bounded in time, shrinks, one failure per case.

The checks here are stand-ins that fail on a stated property of the scenario, and the
clock is a counter, so every assertion is exact: no timing, no real optimizer.
"""

from __future__ import annotations

import pytest

from conformance.checks import CheckOutcome
from conformance.commands import check as check_command
from conformance.matrix import cases
from conformance.scenario import Scenario
from conformance.search import ROUND_EXAMPLES, SHRINK_SECONDS, search_budget, search_case

POOL = [c for c in cases("cpu") if "foreach0" in c.id][:4]


class Ticks:
    """A clock that advances ``step`` seconds each time it is read."""

    def __init__(self, step: float = 0.01) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def recorder(fails=lambda s: False):
    seen: list[str] = []

    def check(scenario: Scenario) -> list[CheckOutcome]:
        seen.append(scenario.to_id())
        return [CheckOutcome("stand-in", not fails(scenario), "")]

    return check, seen


def test_same_seed_same_scenarios_other_seed_others() -> None:
    runs = []
    for seed in (3, 3, 4):
        check, seen = recorder()
        summary = search_budget(POOL, check, budget=0.6, seed=seed, clock=Ticks())
        assert summary.found == [] and summary.scenarios == len(seen) > ROUND_EXAMPLES
        runs.append(seen)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_drawing_stops_at_the_budget() -> None:
    clock = Ticks(step=0.5)
    check, seen = recorder()
    summary = search_budget(POOL, check, budget=10.0, clock=clock)
    # The clock is read once per example; drawing stops once 10 s have passed, mid-round.
    assert 0 < len(seen) <= 10.0 / 0.5
    assert summary.rounds == 1


def test_failure_is_shrunk_and_its_case_leaves_the_pool() -> None:
    target = POOL[1].id

    def fails(s: Scenario) -> bool:
        return s.case == target and s.steps >= 5 and len(s.params) >= 2

    check, seen = recorder(fails)
    summary = search_budget(POOL, check, budget=3.0, seed=1, clock=Ticks())
    assert [f.scenario.case for f in summary.found] == [target]
    bad = summary.found[0]
    assert not bad.outcomes[0].passed
    # Minimal: the smallest step count and parameter count that still fail.
    assert bad.scenario.steps == 5 and len(bad.scenario.params) == 2
    # After the failure, the search kept drawing, from the other cases only.
    after = seen[seen.index(bad.scenario.to_id()) + 1 :]
    later = [Scenario.from_id(i).case for i in after]
    assert later and target not in later[-ROUND_EXAMPLES:]


def test_shrinking_stops_after_its_limit_and_keeps_a_failing_scenario() -> None:
    def fails(s: Scenario) -> bool:
        return s.steps >= 3

    check, _ = recorder(fails)
    # Each clock read is a tenth of the shrink limit: shrinking is cut off after ~10 runs.
    summary = search_budget(POOL[:1], check, budget=100.0, clock=Ticks(step=SHRINK_SECONDS / 10))
    assert len(summary.found) == 1
    assert summary.found[0].scenario.steps >= 3 and not summary.found[0].outcomes[0].passed
    assert summary.scenarios <= 12


def test_zero_budget_draws_nothing() -> None:
    check, seen = recorder()
    summary = search_budget(POOL, check, budget=0.0, clock=Ticks())
    assert seen == [] and summary.scenarios == 0 and summary.rounds == 0


def test_search_case_draws_exactly_the_examples_and_shrinks() -> None:
    check, seen = recorder()
    assert search_case(POOL[0], check, examples=7, seed=2) is None
    assert len(seen) == 7

    bad = search_case(POOL[0], recorder(lambda s: s.steps >= 4)[0], examples=50, seed=2)
    assert bad is not None and bad.steps == 4


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1e9", "soon"])
def test_bad_budget_is_a_usage_error_naming_it(value: str, capsys) -> None:
    from conformance.cli import main

    assert main(["check", "--budget", value]) == 2
    assert repr(value) in capsys.readouterr().err


def test_default_budget_is_the_documented_two_minutes() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    check_command.register(parser.add_subparsers())
    assert parser.parse_args(["check"]).budget == 120.0
