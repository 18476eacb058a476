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

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context

from conformance.candidate import DEFAULT_CANDIDATE, Adapter, CandidateError, candidate_options, resolve
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

    @property
    def failed(self) -> list[CheckOutcome]:
        """The outcomes that failed (disagreed, or the candidate raised)."""
        return [o for o in self.outcomes if not o.passed]

    @property
    def unsupported(self) -> list[CheckOutcome]:
        """The outcomes not judged because the candidate lacks a feature the scenario needs."""
        return [o for o in self.outcomes if o.unsupported]


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

    def failure_lines(self) -> list[str]:
        """One block per failing scenario: case, failing checks with verdicts, and the replay command."""
        lines = []
        for r in self.results:
            if r.failed:
                lines.append(f"{r.scenario.case} [{r.scenario.label or 'example'}]")
                lines += [f"  {o}" for o in r.failed]
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


def case_results(cls: Adapter, case: Case, seed: int, examples: int) -> list[ScenarioResult]:
    """Run ``case``'s probes and, with ``examples``, that many drawn scenarios; return the results."""
    results = [ScenarioResult(scenario, run_checks(scenario, cls)) for scenario in probe_scenarios(case, seed)]
    if examples:
        bad = search_case(case, lambda s: run_checks(s, cls), examples=examples, seed=seed)
        if bad is not None:
            results.append(ScenarioResult(bad, run_checks(bad, cls), drawn=True))
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
        per_case = (case_results(cls, case, seed, examples) for case in chosen)
        _absorb(report, chosen, per_case, progress)
        if search:
            report.search = search_budget(
                chosen, lambda s: run_checks(s, cls), budget=budget, seed=seed, progress=progress
            )
    else:
        # spawn, not fork: a forked child of a process whose OpenMP runtime (torch's) has run can hang.
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_worker_init)
        try:
            futures = [pool.submit(case_results, cls, case, seed, examples) for case in chosen]
            _absorb(report, chosen, (_gather(f, case.id) for f, case in zip(futures, chosen)), progress)
            if search:
                shares = [
                    pool.submit(search_share, cls, chosen[i::jobs], budget, seed * 65_537 + i) for i in range(jobs)
                ]
                report.search = _merge([_gather(f, "the search") for f in shares])  # type: ignore[misc]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    if report.search is not None:
        report.results += [ScenarioResult(f.scenario, f.outcomes, drawn=True) for f in report.search.found]
    return report


def _absorb(
    report: CandidateReport,
    chosen: list[Case],
    per_case: Iterable[list[ScenarioResult]],
    progress: Callable[[str], None] | None,
) -> None:
    for case, results in zip(chosen, per_case):
        report.results += results
        report.probes += sum(1 for r in results if not r.drawn)
        if progress is not None:
            failed = sum(1 for r in results if r.failed)
            progress(f"{case.id}: {'ok' if not failed else f'{failed} scenario(s) FAIL'}")
