"""Matplotlib figures of a drift result, rendered off-screen (Agg) to PNG bytes.

``python -m conformance.report.figures OUT.png LABEL=RESULT.json ...`` draws
the departure-against-gradient-scale figure of several results (the README's).
"""

from __future__ import annotations

import argparse
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from conformance.compare import unit_roundoff
from conformance.report.drift import CASE_NUMBERS
from conformance.report.schema import atomic_write, load
from conformance.report.summary import Row, group_rows, scale_curve
from conformance.rmsprop import REFERENCE

__all__ = [
    "baseline_against_current",
    "bounds",
    "change_heatmaps",
    "departure_vs_scale",
    "error_vs_step",
    "heatmaps",
    "to_png",
    "ulp_histograms",
]

_DTYPES = ("float32", "float64")


def to_png(fig: Figure) -> bytes:
    """Render ``fig`` to PNG bytes (no software-version metadata) and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _dtypes(result: Mapping[str, Any]) -> list[str]:
    present = {c["dtype"] for c in result["cases"]}
    return [d for d in _DTYPES if d in present]


def _config_style(index: int) -> dict[str, Any]:
    """Return a colour and line style per configuration: 16 configurations as 8 colours, solid then dashed."""
    colors = plt.get_cmap("tab10")(np.arange(10))
    return {"color": colors[index % 8], "ls": "-" if index < 8 else "--"}


def error_vs_step(result: Mapping[str, Any]) -> Figure:
    """Free-running relative error against step, one line per configuration, one panel per dtype.

    Each line is the worst over gradient scales, torch implementations and
    devices; steps where the trajectories are bit-identical are left out (log
    axis).  The verdict's bound is not a relative error (it is in units of the
    accumulated scale): :func:`bounds` draws it.
    """
    dtypes = _dtypes(result)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 4.6), squeeze=False, layout="constrained")
    configs = list(dict.fromkeys(c["config"] for c in result["cases"]))
    for ax, dtype in zip(axes[0], dtypes):
        for index, config in enumerate(configs):
            curves = [
                [np.nan if x is None else x for x in c["free_run"]["relative_error"]]
                for c in result["cases"]
                if c["dtype"] == dtype and c["config"] == config
            ]
            worst = np.nanmax(np.array(curves, dtype=float), axis=0) if curves else np.array([])
            steps = np.arange(1, worst.size + 1)
            shown = np.where(worst > 0, worst, np.nan)
            ax.plot(steps, shown, lw=1.3, label=config, **_config_style(index))
        ax.axhline(unit_roundoff(np.dtype(dtype)), color="grey", lw=0.8, ls=":", label=f"unit roundoff u ({dtype})")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(r"max $|p - p_{torch}|$ / max $|p_{torch}|$")
        ax.set_title(f"{dtype}: free-running error against step (worst over scales)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def bounds(result: Mapping[str, Any]) -> Figure:
    """Draw the errors that decide each verdict beside the bound that decides it, per configuration and dtype.

    Per configuration: the worst (over scales, torch implementations and
    devices) lockstep error in ``u`` times the step's forward-error scale, and
    the worst free-running error in ``u`` times the accumulated scale, each
    beside its derived bound; a marker above its line left the bound.  A zero
    (bit-identical throughout) is drawn at the bottom edge.
    """
    from conformance.compare import LOCKSTEP_BOUND
    from conformance.freerun import FREE_RUN_BOUND

    dtypes = _dtypes(result)
    configs = list(dict.fromkeys(c["config"] for c in result["cases"]))
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 4.4), squeeze=False, layout="constrained")
    floor = 1e-3
    x = np.arange(len(configs))
    for ax, dtype in zip(axes[0], dtypes):
        for key, bound, marker, offset, label in (
            ("lockstep", LOCKSTEP_BOUND, "o", -0.15, "lockstep (u * step scale)"),
            ("free_run", FREE_RUN_BOUND, "s", 0.15, "free run (u * accumulated scale)"),
        ):
            worst = []
            for config in configs:
                values = [
                    c[key]["max_normalised_error"]
                    for c in result["cases"]
                    if c["dtype"] == dtype and c["config"] == config
                ]
                worst.append(np.inf if any(v is None for v in values) else max(values, default=0.0))
            worst_arr = np.array(worst, dtype=float)
            top = max(bound * 100, float(np.nanmax(np.where(np.isfinite(worst_arr), worst_arr, 0), initial=1)) * 2)
            shown = np.clip(np.where(np.isfinite(worst_arr), worst_arr, top), floor, top)
            out = ~(worst_arr <= bound)
            if (~out).any():
                color = "tab:blue" if key == "lockstep" else "tab:green"
                ax.scatter(x[~out] + offset, shown[~out], marker=marker, color=color, label=f"{label}, within")
            if out.any():
                ax.scatter(x[out] + offset, shown[out], marker=marker, color="tab:red", label=f"{label}, OUT")
            ax.axhline(bound, color="k", lw=0.9, ls="--" if key == "lockstep" else ":", label=f"{key} bound {bound:g}")
        ax.set_yscale("log")
        ax.set_ylim(floor / 1.5, None)
        ax.set_xticks(x, configs, rotation=60, fontsize=8)
        ax.set_ylabel("worst error in units of u * scale")
        ax.set_title(f"{dtype}: the errors that decide the verdict, and their bounds")
        ax.grid(True, axis="y", which="major", alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def _bin_labels(edges: Sequence[float], used: int) -> list[str]:
    labels = ["0"]
    for edge in edges:
        labels.append(f"≤2^{round(math.log2(edge))}")
    labels.append(f">2^{round(math.log2(edges[-1]))}")
    return labels[:used]


def ulp_histograms(result: Mapping[str, Any]) -> Figure:
    """Histograms of lockstep ULP distances pooled over all cases, one panel per dtype.

    Bars: the candidate vs torch, the candidate vs the exact (oracle) step, torch vs the exact step.
    """
    dtypes = _dtypes(result)
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6.5 * len(dtypes), 4.2), squeeze=False, layout="constrained")
    series = (
        ("ulp", "candidate vs torch"),
        ("lucid_oracle_ulp", "candidate vs exact"),
        ("torch_oracle_ulp", "torch vs exact"),
    )
    for ax, dtype in zip(axes[0], dtypes):
        cases = [c for c in result["cases"] if c["dtype"] == dtype]
        counts = {k: np.sum([c["lockstep"]["histograms"][k] for c in cases], axis=0) for k, _ in series}
        nonzero = np.flatnonzero(np.any([v > 0 for v in counts.values()], axis=0))
        used = int(nonzero.max()) + 1 if nonzero.size else 1
        labels = _bin_labels(result["ulp_bin_edges"], len(next(iter(counts.values()))))[:used]
        x = np.arange(used)
        for i, (key, label) in enumerate(series):
            ax.bar(x + (i - 1) * 0.27, counts[key][:used], width=0.27, label=label)
        ax.set_xticks(x, labels, rotation=60, fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("distance in ULPs at the terms' magnitude (bin upper edge)")
        ax.set_ylabel("element-steps")
        ax.set_title(f"{dtype}: lockstep ULP distances")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    return fig


def _ink(image: Any, value: float) -> str:
    """Black or white, whichever reads better on ``value``'s cell colour."""
    if not np.isfinite(value):
        return "grey"
    red, green, blue, _ = image.cmap(image.norm(value))
    return "k" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "w"


def _span(data: Any, default: float) -> tuple[float, float]:
    """Return the colour scale's ends: the finite data's range, at least one unit wide (``default`` with none)."""
    finite = np.asarray(data)[np.isfinite(data)]
    if not finite.size:
        return default, default + 1
    low, high = float(np.floor(finite.min())), float(np.ceil(finite.max()))
    return low, max(high, low + 1)


def heatmaps(result: Mapping[str, Any]) -> Figure:
    """Draw configuration x scale heatmaps per dtype: bitwise-equal fraction and log10 free-run error."""
    dtypes = _dtypes(result)
    configs = list(dict.fromkeys(c["config"] for c in result["cases"]))
    scales = sorted({float(c["scale"]) for c in result["cases"]})
    fig, axes = plt.subplots(
        len(dtypes), 2, figsize=(13, 0.32 * len(configs) * len(dtypes) + 2.2), squeeze=False, layout="constrained"
    )
    rows = {r.key: r for r in group_rows(dict(result), lambda c: (c["dtype"], c["config"], float(c["scale"])))}
    for row_axes, dtype in zip(axes, dtypes):
        bitwise = np.array([[rows[dtype, cfg, s].bitwise * 100 for s in scales] for cfg in configs])
        with np.errstate(divide="ignore"):
            err = np.log10([[rows[dtype, cfg, s].free_run_final for s in scales] for cfg in configs])
        # The colour scale spans the data (94.6-100 % on a 0-100 scale would be one colour).
        low = float(np.floor(np.nanmin(bitwise))) if np.isfinite(bitwise).any() else 0.0
        low = min(low, 99.0)
        panels = (
            (bitwise, f"{dtype}: lockstep bit-identical elements (%)", "viridis", low, 100, "{:.1f}"),
            (
                err,
                f"{dtype}: log10 free-run relative error after {result['settings']['steps']} steps",
                "magma_r",
                *_span(err, math.log10(unit_roundoff(np.dtype(dtype)))),
                "{:.1f}",
            ),
        )
        for ax, (data, title, cmap, vmin, vmax, fmt) in zip(row_axes, panels):
            shown = np.where(np.isfinite(data), data, np.nan)
            image = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            for (i, j), value in np.ndenumerate(data):
                text = "exact" if value == -np.inf else ("n/a" if not np.isfinite(value) else fmt.format(value))
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=_ink(image, value))
            ax.set_xticks(range(len(scales)), [f"{s:g}" for s in scales], fontsize=8)
            ax.set_yticks(range(len(configs)), configs, fontsize=8)
            ax.set_xlabel("gradient scale")
            ax.set_title(title, fontsize=10)
            fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


#: The numbers the diff report's scatter draws: title, and the name of the number (:data:`drift.CASE_NUMBERS`).
_DIFF_METRICS = (
    ("lockstep bit-identical (%)", "bitwise fraction"),
    ("lockstep ULP max (candidate - torch)", "lockstep ULP max"),
    ("free-run rel. error after the last step", "free-run rel. error"),
)


def _moved_by_case(changes: Sequence[Any]) -> dict[str, bool]:
    """Per case id that moved: whether it regressed (else it improved)."""
    moved: dict[str, bool] = {}
    for change in changes:
        moved[change.case] = moved.get(change.case, False) or change.regression
    return moved


def baseline_against_current(baseline: Mapping[str, Any], current: Mapping[str, Any], changes: Sequence[Any]) -> Figure:
    """Draw each case's bitwise fraction, ULP max and free-run error: baseline (x) against current (y).

    ``changes`` are the comparison's :class:`conformance.report.drift.Change` s;
    the cases they name are ringed, red where one regressed, green where they
    only improved.
    """
    base = {c["id"]: c for c in baseline["cases"]}
    pairs = [(base[c["id"]], c) for c in current["cases"] if c["id"] in base]
    moved = _moved_by_case(changes)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
    for ax, (title, number) in zip(axes, _DIFF_METRICS):
        read = CASE_NUMBERS[number]
        scale = 100 if number == "bitwise fraction" else 1

        def value(case: Mapping[str, Any], read: Any = read, scale: float = scale) -> float | None:
            x = read(case)
            return None if x is None else scale * x

        for dtype, marker in (("float32", "o"), ("float64", "s")):
            chosen = [(value(b), value(c), c["id"]) for b, c in pairs if c["dtype"] == dtype]
            chosen = [(x, y, i) for x, y, i in chosen if x is not None and y is not None]
            if not chosen:
                continue
            xs, ys, _ = zip(*chosen)
            ax.scatter(
                xs,
                ys,
                s=14,
                marker=marker,
                facecolors="none" if dtype == "float32" else "C0",
                edgecolors="C0" if dtype == "float32" else "none",
                alpha=0.7,
                label=dtype,
            )
            for colour, regression in (("red", True), ("green", False)):
                ring = [(x, y) for x, y, i in chosen if moved.get(i) is regression]
                if ring:
                    rx, ry = zip(*ring)
                    label = f"{'regression' if regression else 'improvement'} ({dtype})"
                    ax.scatter(rx, ry, s=90, facecolors="none", edgecolors=colour, linewidths=1.4, label=label)
        if "error" in title:
            ax.set_xscale("symlog", linthresh=1e-18)
            ax.set_yscale("symlog", linthresh=1e-18)
        elif "ULP" in title:
            ax.set_xscale("symlog", linthresh=1)
            ax.set_yscale("symlog", linthresh=1)
        low, high = (min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1]))
        ax.plot([low, high], [low, high], color="grey", lw=0.8, ls=":", zorder=0)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_xlabel("baseline")
        ax.set_ylabel("current")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    return fig


def change_heatmaps(baseline: Mapping[str, Any], current: Mapping[str, Any], changes: Sequence[Any]) -> Figure:
    """Draw configuration x scale heatmaps of current minus baseline per dtype, moved cells outlined.

    Columns: bit-identical percentage points, lockstep ULP max, and log10 of
    the ratio of the final free-running errors, each side floored at honest
    rounding noise, 2u sqrt(N) (0 where both are below it).
    Colours are red for worse and blue for better, symmetric about no change.
    """
    from matplotlib.patches import Rectangle

    key = lambda c: (c["dtype"], c["config"], float(c["scale"]))  # noqa: E731
    common = {c["id"] for c in baseline["cases"]} & {c["id"] for c in current["cases"]}
    rows = [
        {r.key: r for r in group_rows({"cases": [c for c in result["cases"] if c["id"] in common]}, key)}
        for result in (baseline, current)
    ]
    dtypes = _dtypes(current)
    configs = list(dict.fromkeys(c["config"] for c in current["cases"] if c["id"] in common))
    scales = sorted({float(c["scale"]) for c in current["cases"] if c["id"] in common})
    cell_of = {c["id"]: key(c) for c in current["cases"]}
    moved: dict[tuple[Any, ...], bool] = {}
    for case, regression in _moved_by_case(changes).items():
        moved[cell_of[case]] = moved.get(cell_of[case], False) or regression

    steps = int(current["settings"]["steps"])

    def ratio(b: Row, c: Row, dtype: str) -> float:
        x, y = b.free_run_final, c.free_run_final
        if x != x or y != y:
            return math.nan
        # Below honest rounding noise, 2u sqrt(N), a change is no change (the free-run threshold's floor):
        # an exact (0) trajectory that becomes 1e-16 apart is not 284 orders of magnitude worse.
        floor = float(np.finfo(dtype).eps) * math.sqrt(steps)
        return math.log10(max(y, floor) / max(x, floor))

    # Each panel: title, the change (positive: worse), and the text of a cell from it.
    panels = (
        ("bit-identical, points (current - baseline)", lambda b, c, d: 100 * (b.bitwise - c.bitwise), "points"),
        ("lockstep ULP max (current - baseline)", lambda b, c, d: c.ulp_max - b.ulp_max, "{:+.2g}"),
        ("log10 free-run error (current / baseline)", ratio, "{:+.2f}"),
    )
    fig, axes = plt.subplots(
        len(dtypes), 3, figsize=(17, 0.32 * len(configs) * len(dtypes) + 2.4), squeeze=False, layout="constrained"
    )
    for row_axes, dtype in zip(axes, dtypes):
        for ax, (title, delta, fmt) in zip(row_axes, panels):
            data = np.array(
                [
                    [
                        delta(rows[0][dtype, cfg, s], rows[1][dtype, cfg, s], dtype)
                        if (dtype, cfg, s) in rows[0] and (dtype, cfg, s) in rows[1]
                        else np.nan
                        for s in scales
                    ]
                    for cfg in configs
                ]
            )
            finite = np.abs(data[np.isfinite(data)])
            span = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
            # Drawn as "worse is positive" (red); the bitwise panel's data is baseline - current, so its
            # cells and colour-bar ticks are labelled with the negation, current - baseline.
            sign = -1.0 if fmt == "points" else 1.0
            fmt = "{:+.2f}" if fmt == "points" else fmt
            image = ax.imshow(
                np.where(np.isfinite(data), data, np.nan), cmap="RdBu_r", vmin=-span, vmax=span, aspect="auto"
            )
            for (i, j), value in np.ndenumerate(data):
                text = "n/a" if not np.isfinite(value) else ("0" if value == 0 else fmt.format(sign * value))
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=_ink(image, value))
                if moved.get((dtype, configs[i], scales[j])) is not None:
                    colour = "k" if moved[dtype, configs[i], scales[j]] else "green"
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=colour, lw=2))
            ax.set_xticks(range(len(scales)), [f"{s:g}" for s in scales], fontsize=8)
            ax.set_yticks(range(len(configs)), configs, fontsize=8)
            ax.set_xlabel("gradient scale")
            ax.set_title(f"{dtype}: {title}", fontsize=10)
            bar = fig.colorbar(image, ax=ax, shrink=0.8)
            bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, sign=sign: f"{sign * v + 0.0:+.3g}"))
            bar.set_label("red: worse, blue: better", fontsize=8)
    return fig


def departure_vs_scale(results: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Worst final free-running relative error against gradient scale, per labelled result and dtype."""
    fig, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    markers = "os^Dv<>"
    colors = plt.get_cmap("tab10")(np.arange(10))
    for index, ((label, result), marker) in enumerate(zip(results.items(), markers)):
        # float64 first, small and filled; float32 on top, large and hollow: where the two curves
        # coincide (both exact, at the floor) both stay visible.
        for k, dtype in enumerate(("float64", "float32")):
            scales, errors = scale_curve(dict(result), dtype)
            if not scales:
                continue
            floor = (
                2 * unit_roundoff(np.dtype(dtype)) * math.sqrt(result["settings"]["steps"]) / 100
            )  # shows exact zeros on a log axis
            shown = [max(e, floor) if e == e else np.nan for e in errors]
            color = colors[(2 * index + k) % 10]
            style = {"ls": "--", "ms": 5} if dtype == "float64" else {"ls": "-", "ms": 9, "mfc": "none", "mew": 1.5}
            ax.plot(scales, shown, marker=marker, color=color, zorder=2 + k, label=f"{label}, {dtype}", **style)
    for dtype, color in zip(_DTYPES, ("tab:grey", "k")):
        ax.axhline(unit_roundoff(np.dtype(dtype)), color=color, lw=0.8, ls=":", label=f"unit roundoff {dtype}")
    eps = next(iter(results.values()))["settings"]["eps"]
    ax.axvline(math.sqrt(eps), color="tab:red", lw=0.8, ls="-.", label=r"$\sqrt{\epsilon}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient scale (standard deviation of the stream)")
    ax.set_ylabel("relative error vs torch after the run (worst configuration)")
    steps = sorted({r["settings"]["steps"] for r in results.values()})
    ax.set_title(f"Departure from {REFERENCE} after {'/'.join(map(str, steps))} free-running steps")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    """Draw :func:`departure_vs_scale` of ``LABEL=RESULT.json`` arguments into a PNG."""
    parser = argparse.ArgumentParser(prog="python -m conformance.report.figures", description=main.__doc__)
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("results", nargs="+", metavar="LABEL=RESULT.json")
    args = parser.parse_args(argv)
    results = {}
    for item in args.results:
        label, sep, path = item.partition("=")
        if not sep:
            parser.error(f"expected LABEL=RESULT.json, got {item!r}")
        results[label] = load(path)
    atomic_write(args.out, to_png(departure_vs_scale(results)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
