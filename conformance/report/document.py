"""Assemble a drift result from measured cases, and merge shard results into one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conformance.candidate import Adapter, CandidateError
from conformance.report.cases import Settings, Shard, build_cases
from conformance.report.schema import SCHEMA_NAME, SCHEMA_VERSION, environment

__all__ = ["merge_results", "run_drift"]


def run_drift(
    settings: Settings,
    adapter: Adapter,
    candidate: str,
    *,
    shard: Shard | None = None,
    progress: bool = True,
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

    Raises
    ------
    CandidateError
        If measuring a case raised (the message names the case and the error; the
        original is chained).
    """
    from conformance.report.measure import ULP_BIN_EDGES, measure_case  # torch is imported here

    cases = build_cases(settings)
    if shard is not None:
        cases = shard.select(cases)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="drift", unit="case", disable=None, leave=False)
    else:
        iterator = cases
    records = []
    for case in iterator:
        try:
            records.append(measure_case(case, settings, adapter))
        except Exception as err:
            raise CandidateError(f"measuring {case.id} raised {type(err).__name__}: {err}") from err
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "candidate": candidate,
        "environment": environment(settings.devices),
        "settings": settings.as_json(),
        "shard": None if shard is None else shard.as_json(),
        "ulp_bin_edges": list(ULP_BIN_EDGES),
        "cases": records,
    }


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
    for key in ("candidate", "settings", "environment", "ulp_bin_edges"):
        for other in shards[1:]:
            if other[key] != first[key]:
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
    order = {case.id: i for i, case in enumerate(build_cases(Settings.from_json(first["settings"])))}
    unknown = [case["id"] for s in shards for case in s["cases"] if case["id"] not in order]
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise ValueError(f"shards hold cases the run's settings do not make: {', '.join(unknown[:3])}{more}")
    cases = sorted((case for s in shards for case in s["cases"]), key=lambda case: order[case["id"]])
    if [c["id"] for c in cases] != list(order):
        raise ValueError("the shards' cases are not exactly the run's cases")
    return {**first, "shard": None, "cases": cases}
