"""Assemble a drift result from measured cases, and merge shard results into one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance.candidate import Adapter, CandidateError
from conformance.report.cases import DriftCase, Settings, Shard, build_cases
from conformance.report.environment import environment
from conformance.report.schema import SCHEMA_NAME, SCHEMA_VERSION
from conformance.report.summary import within_bounds

__all__ = ["diagnose_out_of_bounds", "merge_results", "run_drift", "select_drift_cases"]


def run_drift(
    settings: Settings,
    adapter: Adapter,
    candidate: str,
    *,
    shard: Shard | None = None,
    progress: bool = True,
    case_filter: str = "",
    diagnosis: bool = True,
) -> dict[str, Any]:
    """Measure every case of ``settings`` (or one shard of them) and return the result document.

    Parameters
    ----------
    settings : Settings
        What to measure.
    adapter : Adapter
        The candidate under test (:func:`conformance.candidate.resolve`).
    candidate : str
        Its ``module:attr`` spelling, recorded in the result.
    shard : Shard, optional
        Measure only this deterministic slice of the cases.
    progress : bool
        Show a progress bar (tqdm, on stderr, only when it is a terminal).
    case_filter : str
        Measure only the cases whose id contains this text (recorded in the
        result as ``selection``; the empty text: every case).
    diagnosis : bool, default True
        Where cases left their bounds, name why, per configuration
        (:func:`diagnose_out_of_bounds`, recorded as ``causes``).

    A case whose measurement raised (the candidate failed on it) is not
    measured: it is listed in the result's ``failures`` (its id and the
    error), the other cases are measured, and the report says it is incomplete.
    """
    from conformance.report.measure import ULP_BIN_EDGES, measure_case  # torch is imported here

    cases = select_drift_cases(settings, shard, case_filter)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="drift", unit="case", disable=None, leave=False)
    else:
        iterator = cases
    records, failures = [], []
    for case in iterator:
        try:
            records.append(measure_case(case, settings, adapter))
        except Exception as err:  # the candidate's failure on this case: recorded, and the run goes on
            # A CandidateError's message names the candidate, its exception and the parameters already.
            error = str(err) if isinstance(err, CandidateError) else f"{type(err).__name__}: {err}"
            failures.append({"id": case.id, "error": error})
    extra: dict[str, Any] = {}
    if case_filter:
        extra["selection"] = {"cases": case_filter}
    if failures:
        extra["failures"] = failures
    causes = diagnose_out_of_bounds(records, adapter, candidate) if diagnosis else []
    if causes:
        extra["causes"] = causes
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "candidate": candidate,
        "environment": environment(settings.devices, adapter.version),
        "settings": settings.as_json(),
        "shard": None if shard is None else shard.as_json(),
        "ulp_bin_edges": list(ULP_BIN_EDGES),
        "cases": records,
        **extra,
    }


def diagnose_out_of_bounds(
    records: Sequence[dict[str, Any]], adapter: Adapter, candidate: str | None = None
) -> list[dict[str, str]]:
    """Name why each configuration that left its bounds disagrees (empty: every case within them).

    Per configuration out of bounds, the first such case's matrix
    case is checked as ``check --cases`` checks it (its fixed probes), and each
    failing probe diagnosed (:mod:`conformance.diagnosis`); the record holds the
    causes found, the diagnosis of the smallest failing probe and the command
    that replays it (against ``candidate``, a ``module:attr``).
    """
    from conformance.harness import FailureGroup, case_results, combined_cause, replay_command  # imports torch
    from conformance.matrix import case_by_id

    out = []
    seen: set[str] = set()
    for record in records:
        key = record["config"]
        if within_bounds(record) or key in seen:
            continue
        seen.add(key)
        case_id = record["id"].rsplit("-scale=", 1)[0]
        try:
            results = [r for r in case_results(adapter, case_by_id(case_id), seed=0, examples=0) if r.failed]
        except CandidateError:
            results = []
        if not results:
            out.append(
                {"config": key, "dtype": record["dtype"], "case": case_id, "cause": "no probe of the case fails"}
            )
            continue
        group = FailureGroup(combined_cause(results), results)
        shown = group.representative
        out.append(
            {
                "config": key,
                "dtype": record["dtype"],
                "case": case_id,
                "cause": group.cause,
                "diagnosis": str(shown.diagnosis) if shown.diagnosis is not None else str(shown.failed[0]),
                "replay": replay_command(shown.scenario, candidate, getattr(adapter, "python", None)),
            }
        )
    return out


def select_drift_cases(settings: Settings, shard: Shard | None = None, case_filter: str = "") -> list[DriftCase]:
    """Return the cases a run measures: those of ``settings``, in ``shard``, whose id contains ``case_filter``.

    The filter is matched against the drift id (``...-tlr0-scale=1e-08``), which begins
    with the id of the matrix case it measures, so a matrix case id selects all its scales.
    """
    cases = build_cases(settings)
    if shard is not None:
        cases = shard.select(cases)
    if case_filter:
        cases = [c for c in cases if case_filter in c.id]
    return cases


def merge_results(shards: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Join shard results into the result the unsharded run writes.

    Raises
    ------
    ValueError
        If the shards are not the complete, non-overlapping set ``1/N .. N/N`` of
        one run (same candidate, settings and environment).
    """
    if not shards:
        raise ValueError("merge needs at least one shard result")
    first = shards[0]
    for key in ("candidate", "settings", "environment", "ulp_bin_edges", "selection"):
        for other in shards[1:]:
            if other.get(key) != first.get(key):
                raise ValueError(f"shards differ in {key!r}: {first[key]!r} != {other[key]!r}")
    specs = [s["shard"] for s in shards]
    if any(spec is None for spec in specs):
        raise ValueError("a result without a shard field is already complete; merge takes shards only")
    counts = {spec["count"] for spec in specs}
    if len(counts) != 1:
        raise ValueError(f"shards come from different splits: counts {sorted(counts)}")
    (count,) = counts
    indices = sorted(spec["index"] for spec in specs)
    if indices != list(range(1, count + 1)):
        raise ValueError(f"need shards 1..{count} once each, got {indices}")
    selection = (first.get("selection") or {}).get("cases", "")
    run_cases = select_drift_cases(Settings.from_json(first["settings"]), None, selection)
    order = {case.id: i for i, case in enumerate(run_cases)}
    failures = [f for s in shards for f in s.get("failures", [])]
    unknown = [item["id"] for s in shards for item in s["cases"] + s.get("failures", []) if item["id"] not in order]
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise ValueError(f"shards hold cases the run's settings do not make: {', '.join(unknown[:3])}{more}")
    cases = sorted((case for s in shards for case in s["cases"]), key=lambda case: order[case["id"]])
    if sorted([c["id"] for c in cases] + [f["id"] for f in failures], key=order.__getitem__) != list(order):
        raise ValueError("the shards' cases are not exactly the run's cases")
    merged = {**first, "shard": None, "cases": cases}
    merged.pop("failures", None)
    merged.pop("causes", None)
    if failures:
        merged["failures"] = sorted(failures, key=lambda f: order[f["id"]])
    causes: dict[str, dict[str, str]] = {}
    for shard in shards:  # one per configuration: the first shard's (in shard order) where several have one
        for c in shard.get("causes", []):
            causes.setdefault(c["config"], c)
    if causes:
        merged["causes"] = [causes[k] for k in sorted(causes)]
    return merged
