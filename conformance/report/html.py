"""The self-contained HTML drift report: tables and matplotlib figures embedded as base64 PNG."""

from __future__ import annotations

import base64
import html
import re
from typing import Any

from conformance.report import figures
from conformance.report.markdown import environment_table, incomplete_notice, scale_table, summary_table
from conformance.rmsprop import REFERENCE

__all__ = ["html_report"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td:first-child, th:first-child { text-align: left; }
tr.out td { background: #fdd; }
p.bad { background: #fdd; padding: 0.4em 0.6em; font-weight: bold; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
figcaption { font-size: 0.9em; color: #444; max-width: 70em; }
"""


def _table(markdown: str) -> str:
    """Turn one of :mod:`conformance.report.markdown`'s pipe tables into an HTML table."""
    lines = [line.strip().strip("|").split("|") for line in markdown.splitlines()]
    header, body = lines[0], lines[2:]
    out = ["<table><thead><tr>", *(f"<th>{html.escape(c.strip())}</th>" for c in header), "</tr></thead><tbody>"]
    for cells in body:
        cls = ' class="out"' if cells[-1].strip() == "OUT" else ""
        out += [f"<tr{cls}>", *(f"<td>{html.escape(c.strip())}</td>" for c in cells), "</tr>"]
    out.append("</tbody></table>")
    return "".join(out)


def _figure(png: bytes, alt: str, caption: str) -> str:
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
        text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
        if line.startswith("- "):
            items.append(f"<li>{text[2:]}</li>")
        elif text:
            out.append(f"<p class='bad'>{text}</p>")
    return "".join(out) + (f"<ul>{''.join(items)}</ul>" if items else "")


def html_report(result: dict[str, Any]) -> str:
    """Return the report of ``result`` as one HTML document with no external resources."""
    steps = result["settings"]["steps"]
    title = f"Drift report: {result['candidate']} against {REFERENCE}"
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        *([_notice(notice)] if (notice := incomplete_notice(result)) else []),
        "<h2>What produced these numbers</h2>",
        _table(environment_table(result)),
        "<h2>Departure by gradient scale</h2>",
        _figure(
            figures.to_png(figures.departure_vs_scale({result["candidate"]: result})),
            "relative error against gradient scale",
            f"Worst (over configurations, torch implementations and devices) relative error of the parameter "
            f"against torch after {steps} free-running steps, per gradient scale. Dotted lines: the unit roundoff "
            "of each dtype; honest rounding noise stays within a few of it. Exact agreement is drawn at 1/100 of "
            "2u·sqrt(N).",
        ),
        _table(scale_table(result)),
        "<h2>Agreement per configuration</h2>",
        "<p>Lockstep: torch's state is copied into the candidate before every step, so each step's error is seen "
        "alone. ULP distances are in ULPs of the dtype at the magnitude of the terms that form the new parameter. "
        "Rows marked red left a derived bound or disagree in NaN/Inf pattern.</p>",
        _table(summary_table(result)),
        _figure(
            figures.to_png(figures.heatmaps(result)),
            "configuration by scale heatmaps",
            "Per configuration and gradient scale (pooled over torch implementations): left, percentage of "
            "lockstep parameter elements bit-identical to torch; right, log10 of the final free-running relative "
            "error ('exact': identical trajectories). The colour scale starts at the unit roundoff.",
        ),
        _figure(
            figures.to_png(figures.error_vs_step(result)),
            "free-running error against step",
            "Free-running relative error against step, one line per configuration (worst over scales and "
            "implementations). Dashed: 2u·sqrt(t), the size of honest rounding noise after t steps; a line that "
            "grows parallel to it is noise, one that starts far above it is a different formula.",
        ),
        _figure(
            figures.to_png(figures.ulp_histograms(result)),
            "ULP histograms",
            "Lockstep ULP distances pooled over all cases: candidate vs torch, and each side vs the exact step "
            "(float64 oracle for float32, long double for float64). A correctly rounded side stays within 1/2 ULP "
            "of exact in the absence of cancellation.",
        ),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
