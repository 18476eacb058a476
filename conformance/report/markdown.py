"""The Markdown summary of a drift result (also what ``run`` prints)."""

from __future__ import annotations

from typing import Any

from conformance.report.environment import flatten, unrecorded
from conformance.report.summary import Row, config_legend, group_rows, verdict
from conformance.rmsprop import REFERENCE

__all__ = [
    "bold_verdict",
    "causes_section",
    "environment_table",
    "grouped_causes",
    "legend_table",
    "markdown_report",
    "scale_table",
    "summary_table",
    "verdict_line",
]


def _header(candidate: str) -> str:
    """Return the summary table's header, the candidate named in its columns."""
    return (
        f"| configuration | dtype | cases | bitwise equal | ULP max ({candidate} - torch) "
        f"| {candidate} vs exact: max / median ULP | torch vs exact: max / median ULP | free-run rel. error | bounds |"
    )


def _num(x: float, fmt: str = ".3g") -> str:
    return "n/a" if x != x else format(x, fmt)  # NaN: a non-finite value was measured


def _row(row: Row) -> str:
    config, dtype = row.key
    return (
        f"| {config} | {dtype} | {row.cases} | {row.bitwise:.2%} | {_num(row.ulp_max)} "
        f"| {_num(row.lucid_oracle_max)} / {_num(row.lucid_oracle_median, '.2g')} "
        f"| {_num(row.torch_oracle_max)} / {_num(row.torch_oracle_median, '.2g')} "
        f"| {_num(row.free_run_final, '.2e')} | {'ok' if row.within_bounds else 'OUT'} |"
    )


def summary_table(result: dict[str, Any]) -> str:
    """Agreement per configuration and dtype, pooled over scales, torch implementations and devices."""
    rows = group_rows(result, lambda c: (c["config"], c["dtype"]))
    header = _header(result["candidate"])
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def scale_table(result: dict[str, Any]) -> str:
    """Worst final free-running relative error per gradient scale and dtype (pooled over configurations)."""
    rows = group_rows(result, lambda c: (c["dtype"], c["scale"]))
    scales = sorted({float(r.key[1]) for r in rows})  # type: ignore[arg-type]
    dtypes = list(dict.fromkeys(r.key[0] for r in rows))
    cell = {(r.key[0], float(r.key[1])): r for r in rows}  # type: ignore[arg-type]
    lines = ["| dtype | " + " | ".join(f"{s:g}" for s in scales) + " |", "|---|" + "---|" * len(scales)]
    for dtype in dtypes:
        lines.append(f"| {dtype} | " + " | ".join(_num(cell[dtype, s].free_run_final, ".2e") for s in scales) + " |")
    return "\n".join(lines)


def environment_table(result: dict[str, Any]) -> str:
    """Return the metadata that explains the numbers, as a two-column table."""
    env, settings = result["environment"], result["settings"]
    items = [("candidate", result["candidate"])]
    items += [(k, v) for k, v in flatten({k: v for k, v in env.items() if k != "device_names"}).items()]
    items += [(f"device {k}", v) for k, v in env["device_names"].items()]
    if "upgraded_from" in result:
        missing = ", ".join(unrecorded(env)) or "nothing"
        items.append(("schema", f"written in version {result['upgraded_from']}: {missing} not recorded"))
    items += [
        (f"setting {k}", ", ".join(f"{x:g}" for x in v) if k == "scales" else str(v)) for k, v in settings.items()
    ]
    if result["shard"]:
        items.append(("shard", f"{result['shard']['index']}/{result['shard']['count']}"))
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in items)])


def incomplete_notice(result: dict[str, Any]) -> str | None:
    """Return the Markdown that says the run is partial (a ``--cases`` selection, failed cases), or None."""
    lines = []
    if result.get("selection"):
        lines.append(f"Only the cases whose id contains `{result['selection']['cases']}` were measured (`--cases`).")
    failures = result.get("failures", [])
    if failures:
        lines.append(f"**Incomplete: the candidate failed on {len(failures)} case(s), which were not measured:**\n")
        lines += [f"- `{f['id']}`: {f['error']}" for f in failures]
    return "\n".join(lines) or None


def bold_verdict(text: str) -> str:
    """Return a verdict sentence ``WORD: the rest`` as ``**Verdict: WORD.** The rest.``."""
    word, rest = text.split(": ", 1)
    return f"**Verdict: {word}.** {rest[0].upper()}{rest[1:]}."


def verdict_line(result: dict[str, Any]) -> str:
    """Return the report's verdict, bold (:func:`conformance.report.summary.verdict`)."""
    return bold_verdict(verdict(result)[1])


def grouped_causes(result: dict[str, Any]) -> list[tuple[str, list[str], dict[str, str]]]:
    """Return each cause of ``result`` with its configurations and the first configuration's record."""
    groups: dict[str, tuple[list[str], dict[str, str]]] = {}
    for c in result.get("causes", []):
        groups.setdefault(c["cause"], ([], c))[0].append(c["config"])
    return [(cause, configs, first) for cause, (configs, first) in groups.items()]


def causes_section(result: dict[str, Any]) -> str | None:
    """Return why the configurations that left their bounds disagree, by cause, as Markdown (None: none did)."""
    groups = grouped_causes(result)
    if not groups:
        return None
    lines = [
        "## Why it disagrees\n\nPer configuration out of bounds, the matrix case of its first case out of "
        "bounds checked (its probes) and each failing one diagnosed against the known departures from torch's "
        "formula (`python -m conformance check --cases CASE` does the same), grouped by cause:\n"
    ]
    for cause, configs, first in groups:
        lines.append(f"- **{cause}**: {len(configs)} configuration(s), " + ", ".join(f"`{c}`" for c in configs))
        if first.get("diagnosis"):
            lines.append(f"  - `{first['case']}`: {first['diagnosis']}")
        if first.get("replay"):
            lines.append(f"  - replay: `{first['replay']}`")
    return "\n".join(lines)


def legend_table(result: dict[str, Any]) -> str:
    """Return what each configuration code means, as a two-column table."""
    rows = [f"| `{code}` | {meaning} |" for code, meaning in config_legend(result)]
    return "\n".join(["| configuration | meaning |", "|---|---|", *rows])


def markdown_report(result: dict[str, Any]) -> str:
    """Return the whole Markdown summary."""
    return (
        "\n\n".join(
            [
                f"# Drift report: {result['candidate']} against {REFERENCE}",
                verdict_line(result),
                *filter(None, [incomplete_notice(result), causes_section(result)]),
                environment_table(result),
                "## Configuration codes\n\n`cC-mM-wdW-maxX`: centered (C), momentum (M), weight decay (W) and "
                "maximize (X) off (0) or on (1), at the values the matrix uses.",
                legend_table(result),
                "## Agreement per configuration\n\n"
                "Lockstep (state copied from torch before every step): fraction of parameter elements "
                "bit-identical to torch, and distances in ULPs at the magnitude of the terms that form the "
                "parameter. Free run: largest relative error max|p_candidate - p_torch| / max|p_torch| after "
                f"{result['settings']['steps']} steps. Bounds: within the derived lockstep and free-running "
                "bounds, with identical NaN/Inf patterns.",
                summary_table(result),
                "## Free-running relative error by gradient scale (worst configuration)",
                scale_table(result),
            ]
        )
        + "\n"
    )
