"""Aggregate a drift result's cases into the rows the tables and figures show."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from conformance.matrix import describe_config

__all__ = ["Row", "config_legend", "group_rows", "scale_curve", "verdict", "within_bounds"]


@dataclass(frozen=True)
class Row:
    """Cases pooled over everything but the grouping key.

    ``bitwise`` pools the element counts; the maxima are the worst case's;
    ``oracle_median_*`` are the largest per-case medians.
    """

    key: tuple[Hashable, ...]
    cases: int
    bitwise: float
    ulp_max: float
    lucid_oracle_max: float
    torch_oracle_max: float
    lucid_oracle_median: float
    torch_oracle_median: float
    free_run_final: float
    within_bounds: bool


def _worst(values: list[float | None]) -> float:
    """Largest value; NaN stands for a non-finite one (None in the JSON)."""
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    return float(np.nan if np.isnan(arr).any() else arr.max(initial=0.0))


def within_bounds(case: dict[str, Any]) -> bool:
    """Whether a measured case stayed within its lockstep and free-running bounds, NaN/Inf patterns identical."""
    return all(case[k]["within_bound"] and not case[k]["nonfinite_mismatches"] for k in ("lockstep", "free_run"))


def group_rows(result: dict[str, Any], key: Callable[[dict[str, Any]], tuple[Hashable, ...]]) -> list[Row]:
    """Pool the cases of ``result`` by ``key(case)``, keeping the order of first appearance."""
    groups: dict[tuple[Hashable, ...], list[dict[str, Any]]] = {}
    for case in result["cases"]:
        groups.setdefault(key(case), []).append(case)
    rows = []
    for k, cases in groups.items():
        lock = [c["lockstep"] for c in cases]
        free = [c["free_run"] for c in cases]
        elements = sum(x["elements"] for x in lock)
        rows.append(
            Row(
                key=k,
                cases=len(cases),
                bitwise=sum(x["bitwise_equal"] for x in lock) / elements if elements else 1.0,
                ulp_max=_worst([x["ulp"]["max"] for x in lock]),
                lucid_oracle_max=_worst([x["lucid_oracle_ulp"]["max"] for x in lock]),
                torch_oracle_max=_worst([x["torch_oracle_ulp"]["max"] for x in lock]),
                lucid_oracle_median=_worst([x["lucid_oracle_ulp"]["median"] for x in lock]),
                torch_oracle_median=_worst([x["torch_oracle_ulp"]["median"] for x in lock]),
                free_run_final=_worst([x["final_relative_error"] for x in free]),
                within_bounds=all(within_bounds(c) for c in cases),
            )
        )
    return rows


def scale_curve(
    result: dict[str, Any], dtype: str, select: Callable[[dict[str, Any]], bool] = lambda case: True
) -> tuple[list[float], list[float]]:
    """Return the scales and, per scale, the worst final free-running relative error of ``dtype``'s cases."""
    rows = group_rows(
        {"cases": [c for c in result["cases"] if c["dtype"] == dtype and select(c)]}, lambda c: (c["scale"],)
    )
    rows.sort(key=lambda r: float(r.key[0]))  # type: ignore[arg-type]
    return [float(r.key[0]) for r in rows], [r.free_run_final for r in rows]  # type: ignore[arg-type]


def verdict(result: dict[str, Any]) -> tuple[bool, str]:
    """Return whether the run passed and its verdict in one sentence (for the top of every report and of ``run``).

    It passes when every measured case stayed within the derived lockstep and
    free-running bounds with identical NaN/Inf patterns, and every selected case
    was measured.
    """
    cases = result["cases"]
    out = [r.key for r in group_rows(result, lambda c: (c["config"], c["dtype"])) if not r.within_bounds]
    configs = {c["config"] for c in cases}
    failures = result.get("failures", [])
    scope = f"{len(cases)} case(s) of {len(configs)} configuration(s)"
    if result.get("shard"):
        scope += f" (shard {result['shard']['index']}/{result['shard']['count']})"
    if not out and not failures:
        return True, f"PASS: all {scope} within the derived lockstep and free-running bounds"
    parts = []
    if out:
        rows = len(group_rows(result, lambda c: (c["config"], c["dtype"])))
        listed = ", ".join(f"{config} {dtype}" for config, dtype in out[:4]) + (
            f" and {len(out) - 4} more" if len(out) > 4 else ""
        )
        where = f"{len(out)} configuration x dtype row(s): {listed}"
        if len(out) == rows > 1:
            where = f"all {rows} configuration x dtype rows"
        bad = sum(1 for c in cases if not within_bounds(c))
        parts.append(f"{bad} of {scope} out of bounds, in {where}")
    if failures:
        parts.append(f"the candidate could not run {len(failures)} case(s), not measured")
    causes = Counter(c["cause"] for c in result.get("causes", []))
    if causes:
        parts.append("causes (configurations): " + "; ".join(f"{k} ({n})" for k, n in causes.most_common()))
    return False, "FAIL: " + "; ".join(parts)


def config_legend(result: dict[str, Any]) -> list[tuple[str, str]]:
    """Return each configuration code of ``result`` with its meaning, in order of appearance."""
    return [(name, describe_config(name)) for name in dict.fromkeys(c["config"] for c in result["cases"])]
