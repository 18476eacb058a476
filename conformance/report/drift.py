r"""Compare a drift result with a baseline: what moved, by how much, and whether it may.

The run is deterministic, so on an unchanged stack every number repeats
exactly.  The thresholds below decide which moves, after a change of Lucid,
NumPy, torch or the CPU, are beyond what a legitimate change of rounding can
explain.  Each states its reason; a move beyond it in the bad direction is a
*regression* (``compare`` exits 1), in the good direction an *improvement*
(reported, exit 0).

Bitwise-equal fraction (a measured binomial proportion)
    Each case compares ``n = steps x size`` parameter elements in lockstep
    (16 384 in the default run).  With the state re-synced from torch before
    every step, each element-step is close to an independent Bernoulli trial
    "bit-identical or not", so the fraction is a binomial proportion and two
    runs differ by sampling noise of standard error
    :math:`\sqrt{\tilde p_0(1-\tilde p_0)/(n_0+2) + \tilde p_1(1-\tilde p_1)/(n_1+2)}`,
    with the Agresti-Caffo adjustment :math:`\tilde p = (x+1)/(n+2)` so that a
    fraction of exactly 0 or 1 still has a nonzero error.  A drop larger than
    :math:`z` standard errors is a regression, with :math:`z` the one-sided
    normal quantile for a family-wise false-alarm rate of
    :data:`FAMILY_ALPHA` = 1% spread over all compared cases (Bonferroni):
    about 4.3 for the 512 cases of the default run, i.e. a drop of about
    0.3 percentage points from a baseline near 99%.

Lockstep ULP distance, Lucid vs torch, maximum
    In ULPs at the magnitude of the terms that form the parameter.  A
    library that changes the rounding of one operation (MKL taking another
    square-root path moves 20% of float32 roots by one ULP, docs/rounding.md) moves
    that side's result by at most one such ULP; one per side gives
    :data:`ULP_MAX_SLACK` = 2.  More means more than one rounding changed on
    a side, or the formula changed.

Distance from the oracle, maximum, per side
    As above for one side: :data:`ORACLE_MAX_SLACK` = 1 ULP.

Distance from the oracle, median, per side
    For an honest side the per-element distance is spread over about
    [0, 1/2] ULP (median about 1/4; a correctly rounded result has density
    2 per ULP there), so the sample median of ``n`` distances has standard
    error :math:`1/(2 f \sqrt n) = 1/(4\sqrt n)` ULP.  The allowed rise is
    :math:`z \sqrt 2 / (4 \sqrt n)` (two runs, same ``z`` as above): about
    0.012 ULP for n = 16 384.  A side that stops rounding correctly moves
    it by about 1/4 ULP.

Free-running relative error after N steps
    Honest rounding noise is a random walk of at most one ULP (relative 2u)
    per step, about :math:`2u\sqrt N` after N steps.  Measured over 12 seeds
    x 16 configurations x 4 scales x 2 dtypes of Lucid against torch (N = 64),
    the largest final relative error was 1.01 times that floor.  A regression
    is a final error above :data:`FREE_RUN_FACTOR` = 4 times
    ``max(baseline, 2u sqrt(N))``: 4 standard deviations of a Gaussian
    random walk.  A systematic bias of one ULP per step grows like
    :math:`2uN` instead and crosses that line once N > 16.

Bounds and NaN/Inf patterns (no slack)
    The lockstep and free-running bounds are derived in
    :mod:`conformance.compare` and :mod:`conformance.freerun`; a case that
    stayed within one and leaves it regresses.  Non-finite mismatches are
    exact counts from deterministic inputs: any increase regresses.

A NaN or an infinity where the baseline has a number (the harness writes
neither; another writer, or a hand edit, may) is a regression of that metric,
never "no drift": every comparison with a NaN is false, so a threshold test
alone would let it pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from conformance.report.environment import differences

__all__ = [
    "CASE_NUMBERS",
    "FAMILY_ALPHA",
    "FREE_RUN_FACTOR",
    "ORACLE_MAX_SLACK",
    "ULP_MAX_SLACK",
    "Change",
    "Comparison",
    "NotComparableError",
    "bitwise_fraction",
    "compare_results",
]

#: Family-wise false-alarm rate of the statistical thresholds over all compared cases.
FAMILY_ALPHA = 0.01
#: Allowed rise of the max Lucid-torch lockstep ULP distance: one ULP per side.
ULP_MAX_SLACK = 2.0
#: Allowed rise of one side's max distance from the oracle: one ULP.
ORACLE_MAX_SLACK = 1.0
#: Allowed growth factor of the final free-running relative error over max(baseline, 2u sqrt(N)).
FREE_RUN_FACTOR = 4.0


class NotComparableError(ValueError):
    """The two results measured different things (settings differ)."""


@dataclass(frozen=True)
class Change:
    """One metric of one case that moved beyond its threshold."""

    case: str
    config: str
    metric: str
    baseline: float | None
    current: float | None
    limit: str
    regression: bool

    def __str__(self) -> str:
        return f"{self.case}: {self.metric} {_fmt(self.baseline)} -> {_fmt(self.current)} ({self.limit})"


@dataclass
class Comparison:
    """Everything :func:`compare_results` found."""

    changes: list[Change]
    missing: list[str]
    added: list[str]
    environment: list[str]
    compared: int
    #: Compared cases whose every measured number (lockstep and free run) equals the baseline's.
    identical: int = 0

    @property
    def regressions(self) -> list[Change]:
        """Moves in the bad direction."""
        return [c for c in self.changes if c.regression]

    @property
    def improvements(self) -> list[Change]:
        """Moves in the good direction."""
        return [c for c in self.changes if not c.regression]

    @property
    def failed(self) -> bool:
        """Whether CI should fail: a regression or a baseline case that was not measured."""
        return bool(self.regressions or self.missing)

    def moved_configs(self) -> list[str]:
        """Return the configurations with at least one regression, sorted."""
        return sorted({c.config for c in self.regressions})

    def render(self) -> str:
        """Return a plain-text report, regressions grouped by configuration."""
        lines = [f"compared {self.compared} cases; {self.identical} identical to the baseline in every number"]
        lines += [f"note: environment differs: {e}" for e in self.environment]
        for title, changes in (("REGRESSION", self.regressions), ("improvement", self.improvements)):
            by_config: dict[str, list[Change]] = {}
            for change in changes:
                by_config.setdefault(change.config, []).append(change)
            for config, items in by_config.items():
                lines.append(f"{title} in {config} ({len(items)} change(s)):")
                lines += [f"  {item}" for item in items]
        lines += [f"MISSING from current: {case}" for case in self.missing]
        lines += [f"new case (not in baseline): {case}" for case in self.added]
        lines.append(self.verdict())
        return "\n".join(lines)

    def verdict(self) -> str:
        """Return the verdict in one line, ``OK: ...`` or ``FAIL: ...`` (the last line of :meth:`render`)."""
        if self.failed:
            moved = ", ".join(self.moved_configs()) or "(none; cases missing)"
            return f"FAIL: {len(self.regressions)} regression(s), {len(self.missing)} missing case(s); moved: {moved}"
        return f"OK: no drift beyond the thresholds ({len(self.improvements)} improvement(s))"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.6g}"


def _z(cases: int) -> float:
    return NormalDist().inv_cdf(1 - FAMILY_ALPHA / max(cases, 1))


def bitwise_fraction(lockstep: dict[str, Any]) -> float:
    """Return a case's bit-identical fraction of lockstep element-steps (1 where it compared none)."""
    return lockstep["bitwise_equal"] / lockstep["elements"] if lockstep["elements"] else 1.0


def _bitwise(base: dict[str, Any], cur: dict[str, Any], z: float) -> tuple[float, float, float]:
    """Return the baseline and current fractions and the allowed move (z standard errors)."""
    x0, n0 = base["bitwise_equal"], base["elements"]
    x1, n1 = cur["bitwise_equal"], cur["elements"]
    p0, p1 = (x0 + 1) / (n0 + 2), (x1 + 1) / (n1 + 2)
    se = math.sqrt(p0 * (1 - p0) / (n0 + 2) + p1 * (1 - p1) / (n1 + 2))
    return bitwise_fraction(base), bitwise_fraction(cur), z * se


#: The numbers of a case a comparison reports, by the name its changes carry, and how to read each.
CASE_NUMBERS: dict[str, Any] = {
    "bitwise fraction": lambda c: bitwise_fraction(c["lockstep"]),
    "lockstep ULP max": lambda c: c["lockstep"]["ulp"]["max"],
    "lucid oracle ULP max": lambda c: c["lockstep"]["lucid_oracle_ulp"]["max"],
    "lucid oracle ULP median": lambda c: c["lockstep"]["lucid_oracle_ulp"]["median"],
    "torch oracle ULP max": lambda c: c["lockstep"]["torch_oracle_ulp"]["max"],
    "torch oracle ULP median": lambda c: c["lockstep"]["torch_oracle_ulp"]["median"],
    "lockstep error / bound scale": lambda c: c["lockstep"]["max_normalised_error"],
    "lockstep NaN/Inf mismatches": lambda c: c["lockstep"]["nonfinite_mismatches"],
    "free-run rel. error": lambda c: c["free_run"]["final_relative_error"],
    "free-run error / bound scale": lambda c: c["free_run"]["max_normalised_error"],
    "free-run NaN/Inf mismatches": lambda c: c["free_run"]["nonfinite_mismatches"],
}


#: Names of the metrics the thresholds judge, by their path in a case (others are named by path).
_METRIC_NAMES = {
    ("lockstep", "ulp", "max"): "lockstep ULP max",
    ("lockstep", "lucid_oracle_ulp", "max"): "lucid oracle ULP max",
    ("lockstep", "lucid_oracle_ulp", "median"): "lucid oracle ULP median",
    ("lockstep", "torch_oracle_ulp", "max"): "torch oracle ULP max",
    ("lockstep", "torch_oracle_ulp", "median"): "torch oracle ULP median",
    ("free_run", "final_relative_error"): "free-run rel. error",
}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _nonfinite(x: Any) -> bool:
    return isinstance(x, float) and not math.isfinite(x)


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], Any]:
    """Every number of a case's ``lockstep`` / ``free_run`` records (and lists), by path."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _leaves(item, (*path, key)).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _leaves(item, (*path, i)).items()}
    return {path: value} if _is_number(value) else {}


def _metric_name(path: tuple[Any, ...]) -> str:
    if path in _METRIC_NAMES:
        return _METRIC_NAMES[path]
    mode = "lockstep" if path[0] == "lockstep" else "free run"
    rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[1:]).lstrip(".")
    return f"{mode} {rest}"


def _compare_case(base: dict[str, Any], cur: dict[str, Any], z: float, steps: int) -> list[Change]:
    changes: list[Change] = []

    def add(metric: str, b: float | None, c: float | None, limit: str, regression: bool) -> None:
        changes.append(Change(cur["id"], cur["config"], metric, b, c, limit, regression))

    # Non-finite numbers first: the thresholds below skip them.
    base_leaves = {**_leaves(base["lockstep"], ("lockstep",)), **_leaves(base["free_run"], ("free_run",))}
    cur_leaves = {**_leaves(cur["lockstep"], ("lockstep",)), **_leaves(cur["free_run"], ("free_run",))}
    for path, c in cur_leaves.items():
        b = base_leaves.get(path)
        if _nonfinite(c) and b is not None and not _nonfinite(b):
            add(_metric_name(path), b, c, "became NaN" if math.isnan(c) else "became infinite", True)
        elif b is not None and _nonfinite(b) and not _nonfinite(c):
            add(_metric_name(path), b, c, "became finite", False)

    def higher_is_worse(metric: str, b: float | None, c: float | None, slack: float, reason: str) -> None:
        if _nonfinite(b) or _nonfinite(c):
            return  # judged above
        if b is None or c is None:
            if (b is None) != (c is None):
                add(metric, b, c, "became unavailable" if c is None else "became finite", c is None)
            return
        if c > b + slack:
            add(metric, b, c, f"+{c - b:.3g}, allowed +{slack:.3g} {reason}", True)
        elif c < b - slack:
            add(metric, b, c, f"{c - b:.3g}, beyond -{slack:.3g} {reason}", False)

    bl, cl = base["lockstep"], cur["lockstep"]
    f0, f1, allowed = _bitwise(bl, cl, z)
    if f0 - f1 > allowed:
        add("bitwise fraction", f0, f1, f"{(f1 - f0) * 100:.3g} points, allowed -{allowed * 100:.2g}", True)
    elif f1 - f0 > allowed:
        add("bitwise fraction", f0, f1, f"+{(f1 - f0) * 100:.3g} points, beyond {allowed * 100:.2g}", False)
    higher_is_worse("lockstep ULP max", bl["ulp"]["max"], cl["ulp"]["max"], ULP_MAX_SLACK, "(1 ULP per side)")
    median_slack = z * math.sqrt(2) / (4 * math.sqrt(max(cl["elements"], 1)))
    for side in ("lucid", "torch"):
        key = f"{side}_oracle_ulp"
        higher_is_worse(f"{side} oracle ULP max", bl[key]["max"], cl[key]["max"], ORACLE_MAX_SLACK, "(1 ULP)")
        higher_is_worse(
            f"{side} oracle ULP median", bl[key]["median"], cl[key]["median"], median_slack, "(median's std. error)"
        )
    for mode, b, c in (("lockstep", bl, cl), ("free run", base["free_run"], cur["free_run"])):
        if b["within_bound"] and not c["within_bound"]:
            add(f"{mode} bound", b["max_normalised_error"], c["max_normalised_error"], "left the derived bound", True)
        elif c["within_bound"] and not b["within_bound"]:
            add(f"{mode} bound", b["max_normalised_error"], c["max_normalised_error"], "back within the bound", False)
        if c["nonfinite_mismatches"] > b["nonfinite_mismatches"]:
            add(f"{mode} NaN/Inf mismatches", b["nonfinite_mismatches"], c["nonfinite_mismatches"], "any rise", True)
    fb, fc = base["free_run"]["final_relative_error"], cur["free_run"]["final_relative_error"]
    if _nonfinite(fb) or _nonfinite(fc):
        pass  # judged above
    elif fb is not None and fc is not None:
        floor = float(np.finfo(cur["dtype"]).eps) * math.sqrt(steps)  # 2u sqrt(N)
        if fc > FREE_RUN_FACTOR * max(fb, floor):
            add("free-run rel. error", fb, fc, f"x{fc / max(fb, floor):.3g} of max(baseline, 2u sqrt N)", True)
        elif fb > FREE_RUN_FACTOR * max(fc, floor):
            add("free-run rel. error", fb, fc, f"/{fb / max(fc, floor):.3g}", False)
    elif (fb is None) != (fc is None):
        add("free-run rel. error", fb, fc, "became non-finite" if fc is None else "became finite", fc is None)
    return changes


def compare_results(baseline: dict[str, Any], current: dict[str, Any]) -> Comparison:
    """Compare ``current`` with ``baseline``, case by case.

    Raises
    ------
    NotComparableError
        If the two results were measured with different settings.
    """
    if baseline["settings"] != current["settings"]:
        keys = sorted(k for k in current["settings"] if baseline["settings"].get(k) != current["settings"][k])
        raise NotComparableError(
            f"results measured different things (settings differ in {', '.join(keys)}); "
            "rerun with the baseline's settings (a --quick result compares only with a --quick baseline)"
        )
    env = [
        f"{key}: {'(absent)' if a is None else repr(a)} -> {'(absent)' if b is None else repr(b)}"
        for key, a, b in differences(baseline["environment"], current["environment"])
    ]
    if baseline["candidate"] != current["candidate"]:
        env.insert(0, f"candidate: {baseline['candidate']} -> {current['candidate']}")
    base_cases = {c["id"]: c for c in baseline["cases"]}
    cur_cases = {c["id"]: c for c in current["cases"]}
    common = [cid for cid in cur_cases if cid in base_cases]
    z = _z(len(common))
    steps = int(current["settings"]["steps"])
    changes = [change for cid in common for change in _compare_case(base_cases[cid], cur_cases[cid], z, steps)]
    return Comparison(
        changes=changes,
        missing=[cid for cid in base_cases if cid not in cur_cases],
        added=[cid for cid in cur_cases if cid not in base_cases],
        environment=env,
        compared=len(common),
        identical=sum(
            base_cases[cid]["lockstep"] == cur_cases[cid]["lockstep"]
            and base_cases[cid]["free_run"] == cur_cases[cid]["free_run"]
            for cid in common
        ),
    )
