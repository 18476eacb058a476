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

import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context

from conformance.candidate import DEFAULT_CANDIDATE, Adapter, CandidateError, candidate_options, resolve
from conformance.checks import CheckOutcome, run_checks
from conformance.diagnosis import NUMERICAL_CHECKS, Diagnosis, cause_text, diagnose
from conformance.matrix import Case, select_cases
from conformance.probes import probe_scenarios
from conformance.scenario import Scenario
from conformance.search import SearchSummary, search_budget, search_case

__all__ = [
    "DEFAULT_CANDIDATE",
    "CandidateReport",
    "FailureGroup",
    "ScenarioResult",
    "check_candidate",
    "combined_cause",
    "probe_scenarios",
    "replay_command",
    "usable_cpus",
]


def replay_command(scenario: Scenario, optimizer: str | None = None, python: str | None = None) -> str:
    """Return the shell command that runs exactly ``scenario`` again.

    Against ``optimizer`` (a ``module:attr``; None: the default candidate), in a
    worker under ``python`` where one is given.
    """
    return " ".join(["python -m conformance check --replay", scenario.to_id(), *candidate_options(optimizer, python)])


@dataclass
class ScenarioResult:
    """The outcomes of every check on one scenario."""

    scenario: Scenario
    outcomes: list[CheckOutcome]
    #: Drawn by the Hypothesis search (False: one of the fixed probes).
    drawn: bool = False
    #: Why it disagrees, where a check compared and failed (:func:`conformance.diagnosis.diagnose`).
    diagnosis: Diagnosis | None = None

    @property
    def failed(self) -> list[CheckOutcome]:
        """The outcomes that failed (disagreed, or the candidate raised)."""
        return [o for o in self.outcomes if not o.passed]

    @property
    def unsupported(self) -> list[CheckOutcome]:
        """The outcomes not judged because the candidate lacks a feature the scenario needs."""
        return [o for o in self.outcomes if o.unsupported]


def combined_cause(results: Sequence[ScenarioResult]) -> str:
    """Return the cause that ``results`` show together: every departure and observation any of them names.

    Each scenario may reveal part of a candidate's departures (eps's place
    hides where eps is 0, lr inside the momentum buffer where lr is constant),
    so one configuration's scenarios are read together.  "no known departure"
    where none is named.
    """
    names: dict[str, None] = {}
    observed: dict[str, None] = {}
    for r in results:
        if r.diagnosis is not None:
            names |= dict.fromkeys(r.diagnosis.causes)
            observed |= dict.fromkeys(r.diagnosis.observed)
    return cause_text(names, observed)


@dataclass
class FailureGroup:
    """Failing scenarios with one cause (:func:`combined_cause`, or what the candidate raised)."""

    cause: str
    results: list[ScenarioResult] = field(default_factory=list)

    @property
    def configurations(self) -> set[str]:
        """The flag configurations (``c1-m0-wd1-max0``) the group's scenarios belong to."""
        return {r.scenario.matrix_case.flags.name for r in self.results}

    @property
    def checks(self) -> Counter[str]:
        """How many of the group's scenarios each check failed on."""
        return Counter(o.check for r in self.results for o in r.failed)

    @property
    def representative(self) -> ScenarioResult:
        """The scenario to replay: of those whose diagnosis names the most, the smallest (fewest element-steps)."""

        def rank(r: ScenarioResult) -> tuple[int, int]:
            named = len(r.diagnosis.causes) + len(r.diagnosis.observed) if r.diagnosis is not None else 0
            return -named, r.scenario.steps * sum(math.prod(p.shape) for p in r.scenario.params)

        return min(self.results, key=rank)

    @property
    def detail(self) -> str:
        """The representative's diagnosis or first failure, in full (empty: nothing beyond the cause)."""
        r = self.representative
        if r.diagnosis is not None:
            return f"diagnosis: {r.diagnosis}"
        return str(r.failed[0]) if r.failed else ""


@dataclass
class CandidateReport:
    """Everything :func:`check_candidate` ran."""

    #: The candidate's name (:attr:`~conformance.candidate.Adapter.name`).
    optimizer: str
    results: list[ScenarioResult] = field(default_factory=list)
    #: The probe scenarios run (the deterministic floor).
    probes: int = 0
    #: What the budgeted search drew and found (None: no budgeted search ran).
    search: SearchSummary | None = None

    #: The ``module:attr`` the candidate was given as (for the replay commands; None: given as an object).
    spec: str | None = None
    #: The interpreter of the worker the candidate ran in (None: this process).
    python: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every check on every scenario passed (unsupported cases are not failures here)."""
        return not any(r.failed for r in self.results)

    @property
    def caught_by(self) -> set[str]:
        """Names of the checks that failed somewhere."""
        return {o.check for r in self.results for o in r.failed}

    @property
    def disagreements(self) -> list[ScenarioResult]:
        """The scenarios where a check compared and disagreed (not only raised)."""
        return [r for r in self.results if any(not o.raised for o in r.failed)]

    @property
    def crashes(self) -> list[ScenarioResult]:
        """The scenarios where the candidate raised."""
        return [r for r in self.results if any(o.raised for o in r.failed)]

    def unsupported_lines(self) -> list[str]:
        """One line per distinct lack: what the candidate does not support, and how many cases need it."""
        by_reason: dict[str, set[str]] = {}
        for r in self.results:
            for o in r.unsupported:
                by_reason.setdefault(o.unsupported, set()).add(r.scenario.case)
        return [f"{reason}: {len(cases)} case(s)" for reason, cases in sorted(by_reason.items())]

    def failure_groups(self) -> list[FailureGroup]:
        """Return the failing scenarios grouped by cause, the most configurations first.

        A configuration's cause joins what its failing scenarios show
        (:func:`combined_cause`: each probe may reveal part of it); the
        configurations with one cause form a group.  Scenarios where the
        candidate only raised form groups of their own, by exception.
        """
        by_config: dict[str, list[ScenarioResult]] = {}
        groups: dict[str, FailureGroup] = {}
        for r in self.results:
            if not r.failed:
                continue
            if r.diagnosis is None and any(o.raised for o in r.failed):
                kind = re.search(r"raised (\w+)", " ".join(o.detail for o in r.failed if o.raised))
                cause = f"could not run (it raised {kind.group(1)})" if kind else "could not run"
                groups.setdefault(cause, FailureGroup(cause)).results.append(r)
            else:
                by_config.setdefault(r.scenario.matrix_case.flags.name, []).append(r)
        for results in by_config.values():
            cause = combined_cause(results)
            groups.setdefault(cause, FailureGroup(cause)).results.extend(results)
        # Disagreements first (most configurations first), then what could not run.
        return sorted(
            groups.values(), key=lambda g: (g.cause.startswith("could not run"), -len(g.configurations), g.cause)
        )

    def summary_lines(self) -> list[str]:
        """Return the failures grouped by cause: per group its configurations, failing checks and one replay command."""
        total = len({r.scenario.matrix_case.flags.name for r in self.results})
        lines = []
        for g in self.failure_groups():
            configs = sorted(g.configurations)
            shown = ", ".join(configs[:4]) + (f", ... ({len(configs) - 4} more)" if len(configs) > 4 else "")
            checks = ", ".join(f"{name} ({n})" for name, n in g.checks.most_common())
            lines.append(f"cause: {g.cause}")
            lines.append(
                f"  in {len(configs)} of {total} configurations ({shown}); {len(g.results)} scenario(s); "
                f"failing: {checks}"
            )
            if g.detail:
                lines.append(f"  {g.detail}")
            lines.append(f"  replay: {replay_command(g.representative.scenario, self.spec, self.python)}")
        return lines

    def failure_lines(self) -> list[str]:
        """One block per failing scenario: case, failing checks with verdicts, and the replay command."""
        lines = []
        for r in self.results:
            if r.failed:
                lines.append(f"{r.scenario.case} [{r.scenario.label or 'example'}]")
                lines += [f"  {o}" for o in r.failed]
                if r.diagnosis is not None:
                    lines.append(f"  diagnosis: {r.diagnosis}")
                lines.append(f"  replay: {replay_command(r.scenario, self.spec, self.python)}")
        return lines


def usable_cpus() -> int:
    """Return how many CPUs this process may run on (its affinity mask, where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _import_path(adapter: Adapter) -> str | None:
    """Return ``module:Class`` of an adapter's class, for a replay command (None: no class, or a local one)."""
    cls = adapter.optimizer_class
    if cls is None or cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def shippable(adapter: Adapter) -> bool:
    """Whether a worker process can rebuild ``adapter`` (its class not in ``__main__``, not a local class)."""
    cls = getattr(adapter, "optimizer_class", None) or type(adapter)
    return cls.__module__ != "__main__" and "<locals>" not in cls.__qualname__


def judge(
    scenario: Scenario,
    cls: Adapter,
    drawn: bool = False,
    outcomes: list[CheckOutcome] | None = None,
    diagnosis: bool = True,
) -> ScenarioResult:
    """Run every check of ``scenario`` (unless ``outcomes`` are given) and, with ``diagnosis``, diagnose a failure."""
    outcomes = run_checks(scenario, cls) if outcomes is None else outcomes
    result = ScenarioResult(scenario, outcomes, drawn=drawn)
    if diagnosis and any(o.check in NUMERICAL_CHECKS | {"dtype"} and not o.raised for o in result.failed):
        try:
            result.diagnosis = diagnose(scenario, cls, outcomes)
        except Exception as err:  # a fault of the diagnosis itself: said, never taken for the candidate's
            result.diagnosis = Diagnosis(first_difference=f"(the diagnosis raised {type(err).__name__}: {err})")
    return result


def case_results(cls: Adapter, case: Case, seed: int, examples: int, diagnosis: bool = True) -> list[ScenarioResult]:
    """Run ``case``'s probes and, with ``examples``, that many drawn scenarios; return the results (diagnosed)."""
    results = [judge(scenario, cls, diagnosis=diagnosis) for scenario in probe_scenarios(case, seed)]
    if examples:
        bad = search_case(case, lambda s: run_checks(s, cls), examples=examples, seed=seed)
        if bad is not None:
            results.append(judge(bad, cls, drawn=True, diagnosis=diagnosis))
    return results


def search_share(cls: Adapter, cases: list[Case], budget: float, seed: int) -> SearchSummary:
    """Run the budgeted search over ``cases`` (one worker's share)."""
    return search_budget(cases, lambda s: run_checks(s, cls), budget=budget, seed=seed)


def _worker_init() -> None:
    import torch

    # One thread per worker: the workers already use every CPU, and torch's
    # elementwise kernels give the same results on any thread count.
    torch.set_num_threads(1)


def _merge(shares: list[SearchSummary]) -> SearchSummary:
    return SearchSummary(
        scenarios=sum(s.scenarios for s in shares),
        rounds=sum(s.rounds for s in shares),
        seconds=max((s.seconds for s in shares), default=0.0),
        found=[f for s in shares for f in s.found],
    )


def _gather(future: Future, what: str) -> object:  # type: ignore[type-arg]
    try:
        return future.result()
    except BrokenProcessPool:
        raise CandidateError(
            f"a worker process died while running the candidate on {what} (a crash in native code, or killed); "
            "rerun with --jobs 1 to see where"
        ) from None


def check_candidate(
    optimizer: str | type | Adapter,
    *,
    device: str = "cpu",
    case_filter: str = "",
    examples: int = 0,
    budget: float = 0.0,
    seed: int = 0,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
    selected: Iterable[Case] | None = None,
    advance: Callable[[], None] | None = None,
    diagnosis: bool = True,
) -> CandidateReport:
    """Run the harness against ``optimizer`` (a class or ``"package.module:Class"``).

    Parameters
    ----------
    optimizer : Adapter, type or str
        The candidate: its import path ``module:attr``, a class, or an adapter
        (:func:`conformance.candidate.resolve`).
    device : {"cpu", "cuda"}
        The cases to run (cuda raises :class:`~conformance.checks.DeviceUnavailableError` without a GPU).
    case_filter : str
        Only the cases this text selects (:func:`conformance.matrix.select_cases`: part of a case
        id in either spelling, or a drift case's id, whose scale is ignored).
    examples : int
        Hypothesis-drawn scenarios per case, after the probes (0: none); the same
        scenarios on every machine.
    budget : float
        Seconds of Hypothesis search after the probes (0: none;
        :func:`conformance.search.search_budget`).  Ignored when ``examples`` is given.
        With several ``jobs`` each worker searches its share of the cases (every
        ``jobs``-th case) for the whole budget, seeded from ``seed`` and its share.
    seed : int
        Seed of the probes' streams and of the Hypothesis search.
    jobs : int
        Worker processes (1: everything in this process).  The probes' verdicts
        do not depend on it; the drawn scenarios do (each share has its own seed).
        A class that a worker cannot import (defined in ``__main__`` or in a
        function) runs in this process.
    progress : callable, optional
        Called with one line per finished case (and, with one job, per search round).
    selected : iterable of Case, optional
        Run exactly these cases (overrides ``device`` and ``case_filter``).
    advance : callable, optional
        Called once per finished case (its probes and drawn scenarios), for a progress bar.
    diagnosis : bool, default True
        Diagnose each scenario where a numerical check failed
        (:func:`conformance.diagnosis.diagnose`: about as long again as its checks).

    Raises
    ------
    CandidateError
        If a worker process died while running the candidate.
    """
    cls = resolve(optimizer)
    report = CandidateReport(
        cls.name,
        spec=optimizer if isinstance(optimizer, str) else _import_path(cls),
        python=getattr(cls, "python", None),
    )
    chosen = list(selected) if selected is not None else select_cases(case_filter, device)
    search = budget > 0 and not examples
    jobs = max(1, min(jobs, len(chosen)))
    if jobs == 1 or not shippable(cls):
        per_case = (case_results(cls, case, seed, examples, diagnosis) for case in chosen)
        _absorb(report, chosen, per_case, progress, advance)
        if search:
            report.search = search_budget(
                chosen, lambda s: run_checks(s, cls), budget=budget, seed=seed, progress=progress
            )
    else:
        # spawn, not fork: a forked child of a process whose OpenMP runtime (torch's) has run can hang.
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_worker_init)
        try:
            futures = [pool.submit(case_results, cls, case, seed, examples, diagnosis) for case in chosen]
            _absorb(report, chosen, (_gather(f, case.id) for f, case in zip(futures, chosen)), progress, advance)
            if search:
                shares = [
                    pool.submit(search_share, cls, chosen[i::jobs], budget, seed * 65_537 + i) for i in range(jobs)
                ]
                report.search = _merge([_gather(f, "the search") for f in shares])  # type: ignore[misc]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if report.search is not None:
        report.results += [judge(f.scenario, cls, True, f.outcomes, diagnosis) for f in report.search.found]
    return report


def _absorb(
    report: CandidateReport,
    chosen: list[Case],
    per_case: Iterable[list[ScenarioResult]],
    progress: Callable[[str], None] | None,
    advance: Callable[[], None] | None = None,
) -> None:
    for case, results in zip(chosen, per_case):
        report.results += results
        report.probes += sum(1 for r in results if not r.drawn)
        if advance is not None:
            advance()
        if progress is not None:
            failed = sum(1 for r in results if r.failed)
            progress(f"{case.id}: {'ok' if not failed else f'{failed} scenario(s) FAIL'}")
