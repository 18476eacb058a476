"""The drift diff report: a drift result against its baseline, in Markdown and self-contained HTML.

``python -m conformance compare BASELINE CURRENT --out DIR`` writes
``comparison.md`` and ``comparison.html`` into ``DIR`` (as one set, like
``run``'s reports).  Both open with the verdict and the environment fields
that differ, then list every metric that moved beyond its threshold
(:mod:`conformance.report.drift`), then show per configuration and dtype the
baseline's and the current numbers side by side, the rows that moved marked.
The HTML adds figures: each case's bit-identical fraction, lockstep ULP
distance and free-running error, baseline against current; and per
configuration and gradient scale, the change of each, the cells that moved
outlined.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from conformance.report.drift import CASE_NUMBERS, Change, Comparison
from conformance.report.environment import differences, unrecorded
from conformance.report.markdown import bold_verdict
from conformance.report.summary import Row, group_rows

__all__ = [
    "COMPARISON_FILES",
    "DriftDiff",
    "comparison_html",
    "comparison_markdown",
    "environment_notes",
    "moved_cells",
]

#: File names of the diff report inside ``--out``.
COMPARISON_FILES = {"markdown": "comparison.md", "html": "comparison.html"}


@dataclass(frozen=True)
class DriftDiff:
    """A comparison with the two results it judged and how they were named."""

    baseline: dict[str, Any]
    current: dict[str, Any]
    comparison: Comparison
    baseline_label: str
    current_label: str
    #: How the baseline was chosen (:class:`conformance.report.baselines.BaselineChoice`), when it was.
    choice: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def verdict(self) -> tuple[bool, str]:
        """Return whether nothing regressed and the comparison's verdict line."""
        return not self.comparison.failed, self.comparison.verdict()


def environment_notes(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Say which environment fields a result written by an older schema version does not record."""
    notes = []
    for name, result in (("baseline", baseline), ("current", current)):
        if "upgraded_from" in result and (missing := unrecorded(result["environment"])):
            notes.append(
                f"the {name} was written in schema version {result['upgraded_from']}, which does not record "
                f"{', '.join(missing)}: those are not compared"
            )
    return notes


def _case_keys(result: dict[str, Any]) -> dict[str, tuple[str, str, float]]:
    return {c["id"]: (c["config"], c["dtype"], float(c["scale"])) for c in result["cases"]}


def moved_cells(diff: DriftDiff) -> dict[tuple[str, str, float], list[Change]]:
    """Return the changes per (configuration, dtype, scale) cell."""
    keys = _case_keys(diff.current)
    cells: dict[tuple[str, str, float], list[Change]] = {}
    for change in diff.comparison.changes:
        cells.setdefault(keys[change.case], []).append(change)
    return cells


def _moved_text(changes: list[Change]) -> str:
    """``REGRESSION: bitwise fraction (2); improvement: ...``, or empty, for a row's last cell (regressions first)."""
    parts = []
    for word, regression in (("REGRESSION", True), ("improvement", False)):
        counts = Counter(c.metric for c in changes if c.regression is regression)
        if counts:
            parts.append(f"{word}: " + ", ".join(f"{metric} ({n})" for metric, n in counts.most_common()))
    return "; ".join(parts)


def _pct(row: Row | None) -> str:
    return "-" if row is None else f"{row.bitwise:.2%}"


def _num(x: float | None, fmt: str = ".3g") -> str:
    return "-" if x is None else ("n/a" if x != x else format(x, fmt))


def environment_table(diff: DriftDiff) -> str:
    """Return the environment fields that differ (candidate included) as a Markdown table; empty when none do."""
    rows = [("candidate", diff.baseline["candidate"], diff.current["candidate"])]
    rows = [r for r in rows if r[1] != r[2]]
    rows += differences(diff.baseline["environment"], diff.current["environment"])
    if not rows:
        return ""
    lines = ["| field | baseline | current |", "|---|---|---|"]
    lines += [f"| {k} | {'-' if a is None else a} | {'-' if b is None else b} |" for k, a, b in rows]
    return "\n".join(lines)


#: Rows of the full list of changes the Markdown shows (the HTML shows all, folded; ``compare`` prints all).
LISTED_CHANGES = 40


def _value(change: Change, x: float | None) -> str:
    if x is not None and change.metric == "bitwise fraction":
        return f"{x:.2%}"
    return _num(x, ".6g")


def _ordered(diff: DriftDiff) -> list[Change]:
    return diff.comparison.regressions + diff.comparison.improvements


def moved_summary_table(diff: DriftDiff) -> str:
    """Return one row per configuration, metric and direction that moved, with its largest move; empty when none."""
    groups: dict[tuple[str, str, bool], list[Change]] = {}
    for change in _ordered(diff):
        groups.setdefault((change.config, change.metric, change.regression), []).append(change)
    if not groups:
        return ""
    lines = [
        "| configuration | metric | cases | largest move: case, baseline → current | moved |",
        "|---|---|---|---|---|",
    ]
    for (config, metric, regression), changes in groups.items():

        def size(c: Change) -> float:
            if c.baseline is None or c.current is None:
                return float("inf")
            return abs(c.current - c.baseline)

        worst = max(changes, key=size)
        lines.append(
            f"| {config} | {metric} | {len(changes)} | `{worst.case}`: {_value(worst, worst.baseline)} → "
            f"{_value(worst, worst.current)} ({worst.limit}) | {'REGRESSION' if regression else 'improvement'} |"
        )
    return "\n".join(lines)


def changes_table(diff: DriftDiff, limit: int | None = None) -> str:
    """Return every metric that moved beyond its threshold, regressions first, as a Markdown table (``limit`` rows).

    Empty when nothing moved.
    """
    changes = _ordered(diff)
    if not changes:
        return ""
    lines = [
        "| configuration | case | metric | baseline | current | threshold | moved |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in changes[:limit]:
        word = "REGRESSION" if c.regression else "improvement"
        lines.append(
            f"| {c.config} | `{c.case}` | {c.metric} | {_value(c, c.baseline)} | {_value(c, c.current)} "
            f"| {c.limit} | {word} |"
        )
    return "\n".join(lines)


def changed_numbers_table(diff: DriftDiff) -> str:
    """Return, per number of a case, how many cases it changed in at all and the largest change; empty if none.

    This counts every change, within the thresholds too: "did anything move?"
    has an answer even when the verdict is OK.
    """
    base = {c["id"]: c for c in diff.baseline["cases"]}
    beyond = Counter((c.metric, c.case) for c in diff.comparison.changes)
    shown_ids: set[str] = set()
    lines = [
        "| number | cases changed | beyond its threshold | largest change: case, baseline → current |",
        "|---|---|---|---|",
    ]
    for name, read in CASE_NUMBERS.items():
        moved = []
        for case in diff.current["cases"]:
            if case["id"] in base:
                before, after = read(base[case["id"]]), read(case)
                if before != after:
                    size = math.inf if before is None or after is None else abs(after - before)
                    moved.append((size, case["id"], before, after))
        if not moved:
            continue
        size, case_id, before, after = max(moved, key=lambda m: m[0])
        shown = (lambda x: "-" if x is None else f"{x:.4%}") if name == "bitwise fraction" else _num
        flagged = sum(1 for _, cid, _, _ in moved if (name, cid) in beyond)
        shown_ids.update(cid for _, cid, _, _ in moved)
        lines.append(f"| {name} | {len(moved)} | {flagged} | `{case_id}`: {shown(before)} → {shown(after)} |")
    # Cases that differ only in numbers no row above reads (histograms, medians of the Lucid-torch distance,
    # the free run's per-step curve and growth exponent): counted, so the table never hides a difference.
    rest = diff.comparison.compared - diff.comparison.identical - len(shown_ids)
    if rest > 0:
        lines.append(f"| other recorded numbers only (histograms, per-step errors, medians) | {rest} | - | - |")
    return "\n".join(lines) if len(lines) > 2 else ""


def side_by_side_table(diff: DriftDiff) -> str:
    """Per configuration and dtype: baseline -> current of the pooled numbers, the rows that moved marked."""

    def by_row(result: dict[str, Any]) -> dict[Any, Row]:
        return {r.key: r for r in group_rows(result, lambda c: (c["config"], c["dtype"]))}

    base, cur = by_row(diff.baseline), by_row(diff.current)
    moved: dict[tuple[str, str], list[Change]] = {}
    for (config, dtype, _), changes in moved_cells(diff).items():
        moved.setdefault((config, dtype), []).extend(changes)
    lines = [
        "| configuration | dtype | bitwise equal | ULP max (candidate - torch) | candidate vs exact: max ULP "
        "| free-run rel. error | moved |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in dict.fromkeys([*cur, *base]):
        b, c = base.get(key), cur.get(key)
        lines.append(
            f"| {key[0]} | {key[1]} | {_pct(b)} → {_pct(c)} "
            f"| {_num(b and b.ulp_max)} → {_num(c and c.ulp_max)} "
            f"| {_num(b and b.lucid_oracle_max)} → {_num(c and c.lucid_oracle_max)} "
            f"| {_num(b and b.free_run_final, '.2e')} → {_num(c and c.free_run_final, '.2e')} "
            f"| {_moved_text(moved.get(key, []))} |"  # type: ignore[arg-type]
        )
    return "\n".join(lines)


def _sections(diff: DriftDiff) -> list[tuple[str, str, str]]:
    """Return the report's sections as (title, introduction, Markdown table or text)."""
    comparison = diff.comparison
    env = environment_table(diff)
    sections = [
        (
            "What differs between the environments",
            "Fields of the environment record (versions, builds, thread counts, CPU) whose values differ:",
            env or "The environments are the same in every recorded field.",
        ),
        (
            "What moved",
            "The metrics that moved beyond their thresholds (the thresholds and their reasons: "
            "`conformance.report.drift`), per configuration, with the largest move of each; a regression fails "
            "the comparison, an improvement is listed:",
            moved_summary_table(diff) or "Nothing moved beyond its threshold.",
        ),
    ]
    sections.append(
        (
            "Every number that changed",
            "Whether beyond its threshold or not: per number a case records, the cases in which it changed and "
            "the largest change:",
            changed_numbers_table(diff)
            or f"None: all {comparison.compared} cases are identical to the baseline in every recorded number.",
        )
    )
    lists = []
    if comparison.missing:
        lists.append("Cases of the baseline missing from the current result: " + ", ".join(comparison.missing))
    if comparison.added:
        lists.append("Cases not in the baseline (not compared): " + ", ".join(comparison.added))
    if lists:
        sections.append(("Cases", "", "\n\n".join(lists)))
    sections.append(
        (
            "Per configuration, baseline → current",
            "Pooled over gradient scales, torch implementations and devices (bitwise: the element counts pooled; "
            "the others: the worst case). The last column names the metrics that moved, with their case counts:",
            side_by_side_table(diff),
        )
    )
    return sections


def _heading(diff: DriftDiff) -> list[str]:
    comparison = diff.comparison
    lines = [
        f"Baseline: `{diff.baseline_label}`; current: `{diff.current_label}`; {comparison.compared} cases compared, "
        f"{comparison.identical} of them identical to the baseline in every measured number."
    ]
    if diff.choice:
        lines.append(f"Baseline chosen: {diff.choice}.")
    lines += [f"Note: {note}." for note in (*diff.notes, *environment_notes(diff.baseline, diff.current))]
    return lines


def _title(diff: DriftDiff) -> str:
    return f"Drift comparison: {diff.current['candidate']}, current against baseline"


def comparison_markdown(diff: DriftDiff) -> str:
    """Return the diff report as Markdown."""
    parts = [
        f"# {_title(diff)}",
        bold_verdict(diff.verdict()[1]),
        *_heading(diff),
    ]
    for title, intro, body in _sections(diff):
        parts += [f"## {title}", *([intro] if intro else []), body]
    changes = _ordered(diff)
    if changes:
        more = len(changes) - LISTED_CHANGES
        parts += [
            "## Every change",
            changes_table(diff, LISTED_CHANGES),
            *([f"... and {more} more (`compare` prints them all; the HTML report lists them)."] if more > 0 else []),
        ]
    return "\n\n".join(parts) + "\n"


def comparison_html(diff: DriftDiff) -> str:
    """Return the diff report as one HTML document with its figures embedded."""
    from conformance.report import figures
    from conformance.report.html import STYLE, code_spans, figure_html, table_html, verdict_paragraph

    title = _title(diff)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        verdict_paragraph(*diff.verdict()),
        *(f"<p>{code_spans(html.escape(text))}</p>" for text in _heading(diff)),
    ]
    for title_text, intro, body in _sections(diff):
        parts.append(f"<h2>{html.escape(title_text)}</h2>")
        if intro:
            parts.append(f"<p>{code_spans(html.escape(intro))}</p>")
        if body.startswith("|"):
            parts.append(table_html(body, text=not title_text.startswith("Per configuration")))
        else:
            parts += [f"<p>{code_spans(html.escape(p))}</p>" for p in body.split("\n\n")]
        if title_text == "What moved":
            changes = diff.comparison.changes
            parts += [
                figure_html(
                    figures.to_png(figures.baseline_against_current(diff.baseline, diff.current, changes)),
                    "each case's numbers, baseline against current",
                    "Each case (configuration x scale x dtype x torch implementation): its bit-identical fraction, "
                    "largest lockstep ULP distance from torch and final free-running relative error, baseline on "
                    "the x axis, current on the y axis. On the diagonal nothing moved; red rings: a regression "
                    "beyond its threshold, green rings: an improvement.",
                ),
                figure_html(
                    figures.to_png(figures.change_heatmaps(diff.baseline, diff.current, changes)),
                    "per configuration and gradient scale, the change of each metric",
                    "Per configuration and gradient scale (pooled over torch implementations), current minus "
                    "baseline: bit-identical percentage points, lockstep ULP max, and log10 of the free-running "
                    "error's ratio, each side floored at honest rounding noise 2u sqrt(N). Red is worse, blue "
                    "better, white unchanged; outlined cells hold a case that moved beyond its threshold (black: "
                    "a regression, green: an improvement).",
                ),
            ]
    if diff.comparison.changes:
        parts += [
            "<h2>Every change</h2>",
            f"<details><summary>{len(diff.comparison.changes)} metric(s) of cases beyond their thresholds</summary>",
            table_html(changes_table(diff), text=True),
            "</details>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
