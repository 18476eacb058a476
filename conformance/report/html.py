"""The self-contained HTML drift report: tables and matplotlib figures embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

import numpy as np

from conformance.compare import unit_roundoff
from conformance.report import figures
from conformance.report.markdown import (
    environment_table,
    grouped_causes,
    incomplete_notice,
    legend_table,
    scale_table,
    summary_table,
)
from conformance.report.summary import scale_curve, verdict
from conformance.rmsprop import REFERENCE

__all__ = ["STYLE", "code_spans", "figure_html", "html_report", "table_html", "verdict_paragraph"]

#: The style sheet of every HTML report (the drift report and the diff report).

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; white-space: nowrap; }
table.text td, table.text th { text-align: left; }
tr.out td { background: #fdd; } tr.better td { background: #e6f4e6; }
p.bad { background: #fdd; padding: 0.4em 0.6em; font-weight: bold; }
p.verdict { font-size: 1.15em; padding: 0.5em 0.8em; border-left: 0.4em solid; }
p.pass { background: #e6f4e6; border-color: #2a7a2a; } p.fail { background: #fdd; border-color: #b00; }
td code { font-size: 1em; }
ul.causes li { margin: 0.5em 0; } ul.causes code { word-break: break-all; font-size: 0.85em; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; max-width: 70em; }
"""


def table_html(markdown: str, text: bool = False) -> str:
    """Turn a Markdown pipe table of the reports into an HTML table (``text``: left-aligned).

    A row whose last cell is ``OUT`` or starts with ``REGRESSION`` is marked
    red (class ``out``), one that starts with ``improvement`` green.
    """
    lines = [line.strip().strip("|").split("|") for line in markdown.splitlines()]
    header, body = lines[0], lines[2:]
    out = [
        f"<table{' class=text' if text else ''}><thead><tr>",
        *(f"<th>{html.escape(c.strip())}</th>" for c in header),
        "</tr></thead><tbody>",
    ]
    for cells in body:
        last = cells[-1].strip()
        cls = ' class="out"' if last == "OUT" or last.startswith("REGRESSION") else ""
        cls = ' class="better"' if last.startswith("improvement") else cls
        out += [f"<tr{cls}>", *(f"<td>{code_spans(html.escape(c.strip()))}</td>" for c in cells), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def code_spans(text: str) -> str:
    """Return ``text`` with Markdown's `code` spans as HTML code elements."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", text)


def verdict_paragraph(passed: bool, text: str) -> str:
    """Return a verdict sentence ``WORD: the rest`` as the report's coloured verdict paragraph."""
    word, rest = text.split(": ", 1)
    return (
        f"<p class='verdict {'pass' if passed else 'fail'}'><b>Verdict: {word}.</b> "
        f"{html.escape(rest[0].upper() + rest[1:])}.</p>"
    )


def figure_html(png: bytes, alt: str, caption: str) -> str:
    """Return a figure element with ``png`` embedded as base64."""
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _notice(markdown: str) -> str:
    """Return the partial-run notice (:func:`.markdown.incomplete_notice`) as HTML paragraphs and a list."""
    out, items = [], []
    for line in markdown.splitlines():
        text = html.escape(line.strip()).replace("**", "")
        text = code_spans(text)
        if line.startswith("- "):
            items.append(f"<li>{text[2:]}</li>")
        elif text:
            out.append(f"<p class='bad'>{text}</p>")
    return "".join(out) + (f"<ul>{''.join(items)}</ul>" if items else "")


def _causes(result: dict[str, Any]) -> list[str]:
    """Return the "why it disagrees" section (:func:`.markdown.causes_section`) as HTML, or nothing."""
    groups = grouped_causes(result)
    if not groups:
        return []
    items = []
    for cause, configs, first in groups:
        names = ", ".join(f"<code>{html.escape(c)}</code>" for c in configs)
        item = f"<li><b>{html.escape(cause)}</b>: {len(configs)} configuration(s), {names}"
        if first.get("diagnosis"):
            item += f"<br><code>{html.escape(first['case'])}</code>: {html.escape(first['diagnosis'])}"
        if first.get("replay"):
            item += f"<br>replay: <code>{html.escape(first['replay'])}</code>"
        items.append(item + "</li>")
    return [
        "<h2>Why it disagrees</h2>",
        "<p>Per configuration out of bounds, the matrix case of its first case out of bounds checked (its probes) "
        "and each failing one diagnosed against the known departures from torch's formula "
        "(<code>python -m conformance check --cases CASE</code> does the same), grouped by cause:</p>",
        f"<ul class='causes'>{''.join(items)}</ul>",
    ]


def _worst_in_u(result: dict[str, Any]) -> str:
    """Return the largest final free-running relative error per dtype, in units of its unit roundoff."""
    parts = []
    for dtype in ("float32", "float64"):
        _, errors = scale_curve(result, dtype)
        finite = [e for e in errors if e == e]
        if finite:
            parts.append(f"{dtype} {max(finite) / unit_roundoff(np.dtype(dtype)):.3g} u")
    return ", ".join(parts) or "none measured"


def html_report(result: dict[str, Any]) -> str:
    """Return the report of ``result`` as one HTML document with no external resources."""
    steps = result["settings"]["steps"]
    title = f"Drift report: {result['candidate']} against {REFERENCE}"
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        verdict_paragraph(*verdict(result)),
        *([_notice(notice)] if (notice := incomplete_notice(result)) else []),
        *_causes(result),
        "<h2>What produced these numbers</h2>",
        table_html(environment_table(result)),
        "<h2>Configuration codes</h2>",
        "<p><code>cC-mM-wdW-maxX</code>: centered (C), momentum (M), weight decay (W) and maximize (X) off (0) "
        "or on (1), at the values the matrix uses.</p>",
        table_html(legend_table(result), text=True),
        "<h2>The verdict's bounds</h2>",
        figure_html(
            figures.to_png(figures.bounds(result)),
            "worst errors against their bounds",
            "Per configuration, the worst lockstep error (in u times that step's forward-error scale) and the "
            "worst free-running error (in u times the scale accumulated over the run), each beside the derived "
            "bound that decides the verdict; red markers left it. Bit-identical throughout is drawn at the "
            "bottom edge.",
        ),
        "<h2>Departure by gradient scale</h2>",
        figure_html(
            figures.to_png(figures.departure_vs_scale({result["candidate"]: result})),
            "relative error against gradient scale",
            f"Worst (over configurations, torch implementations and devices) relative error of the parameter "
            f"against torch after {steps} free-running steps, per gradient scale (float32 hollow, on top; "
            f"float64 filled). Dotted lines: the unit roundoff u of each dtype. The largest here: "
            f"{_worst_in_u(result)}; the verdict does not judge this relative error but the error in units of the "
            "accumulated scale (the bounds figure above). Exact agreement is drawn at 1/100 of 2u·sqrt(N).",
        ),
        table_html(scale_table(result)),
        "<h2>Agreement per configuration</h2>",
        "<p>Lockstep: torch's state is copied into the candidate before every step, so each step's error is seen "
        "alone. ULP distances are in ULPs of the dtype at the magnitude of the terms that form the new parameter. "
        "Rows marked red left a derived bound or disagree in NaN/Inf pattern.</p>",
        table_html(summary_table(result)),
        figure_html(
            figures.to_png(figures.heatmaps(result)),
            "configuration by scale heatmaps",
            "Per configuration and gradient scale (pooled over torch implementations): left, percentage of "
            "lockstep parameter elements bit-identical to torch; right, log10 of the final free-running relative "
            "error ('exact': identical trajectories). Each colour scale spans the measured range.",
        ),
        figure_html(
            figures.to_png(figures.error_vs_step(result)),
            "free-running error against step",
            "Free-running relative error against step, one line per configuration (worst over scales and "
            "implementations; configurations 9-16 dashed). Dotted: the unit roundoff. Honest rounding noise "
            "grows like sqrt(t), a bias like t; a line that starts far above u is a different formula. The "
            "verdict is judged in units of the accumulated scale, against the bound in the figure above.",
        ),
        figure_html(
            figures.to_png(figures.ulp_histograms(result)),
            "ULP histograms",
            "Lockstep ULP distances pooled over all cases: candidate vs torch, and each side vs the exact step "
            "(float64 oracle for float32, long double for float64). A correctly rounded side stays within 1/2 ULP "
            "of exact in the absence of cancellation.",
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
