import base64
import dataclasses
import re

import numpy as np
import pytest

from conformance.cli import main
from conformance.matrix import flag_configs
from conformance.report import figures
from conformance.report.html import html_report
from conformance.report.markdown import markdown_report, summary_table
from conformance.report.measure import ULP_BIN_EDGES, ulp_histogram
from conformance.report.schema import dumps

from .conftest import TEXTBOOK, TINY, TINY_FLAGS, tiny_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_ulp_histogram_bins():
    counts = ulp_histogram(np.array([0.0, 0.0, 2.0**-7, 0.3, 1.0, 1.5, 3e6, np.nan]))
    assert len(counts) == len(ULP_BIN_EDGES) + 2
    assert counts[0] == 2  # exact zeros
    assert counts[1] == 1  # (0, 2^-6]
    assert counts[1 + ULP_BIN_EDGES.index(0.5)] == 1  # 0.3 in (0.25, 0.5]
    assert counts[1 + ULP_BIN_EDGES.index(1.0)] == 1  # 1.0 in (0.5, 1]
    assert counts[1 + ULP_BIN_EDGES.index(2.0)] == 1  # 1.5 in (1, 2]
    assert counts[-1] == 1  # beyond 2^20
    assert sum(counts) == 7  # NaN is not counted


def test_markdown_names_every_configuration_and_the_metadata(tiny_result):
    text = markdown_report(tiny_result)
    for config in flag_configs():
        assert f"| {config.name} | float32 |" in text and f"| {config.name} | float64 |" in text
    for key in ("lucid", "numpy", "torch", "python", "cpu_capability", "cpu_model", "device cpu"):
        assert f"| {key} |" in text
    assert "OUT" not in summary_table(tiny_result)  # Lucid stays within the derived bounds


def test_html_is_self_contained_with_five_figures(tiny_result):
    page = html_report(tiny_result)
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 5
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    assert tiny_result["environment"]["cpu_capability"] in page


def test_run_writes_all_three_reports_and_prints_the_table(tmp_path, capsys):
    assert main(["run", *TINY_FLAGS, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| c1-m1-wd1-max1 | float64 |" in out and "every case within the derived" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift.html", "drift.json", "drift.md"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [("no_such_module:X", "cannot import candidate module 'no_such_module'"), ("lucid.optim", "module:attr")],
)
def test_run_refuses_a_bad_candidate_by_name(tmp_path, capsys, spec, message):
    assert main(["run", *TINY_FLAGS, "--out", str(tmp_path), "--optimizer", spec]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_textbook_departure_grows_as_gradients_approach_sqrt_eps(tmp_path):
    # eps inside the root changes the update by a relative eps / (2 E[g^2]):
    # about 1e-8 / (2 * 0.01 * 1e4) = 5e-11 in the first step at scale 1e2
    # (E[g^2] starts at (1 - alpha) g^2, then grows), and by a factor of order
    # one at scale 1e-4 = sqrt(eps).  The free-running error is relative to the
    # parameters, which RMSprop moves by about lr per step whatever the scale;
    # weight decay adds 0.01 * |p| ~ 1e-2 to the gradient and so hides the scale.
    result = tiny_run(TEXTBOOK, dataclasses.replace(TINY, scales=(1e-4, 1e2)), diagnosis=False)
    error = {
        (c["config"], c["scale"]): c["free_run"]["final_relative_error"]
        for c in result["cases"]
        if c["dtype"] == "float64" and not c["foreach"]
    }
    for config in flag_configs():
        near_sqrt_eps, large = error[config.name, 1e-4], error[config.name, 1e2]
        assert large < 1e-8  # measured: at most 9.2e-10 over the 16 configurations
        assert near_sqrt_eps > 1e6 * large  # measured: at least 2e7 times larger
        if config.weight_decay == 0:
            assert near_sqrt_eps > 0.1  # measured: 0.11 to 0.52 after 6 steps
    path = tmp_path / "fig.png"
    lucid_path, text_path = tmp_path / "l.json", tmp_path / "t.json"
    lucid_path.write_text(dumps(tiny_run()))
    text_path.write_text(dumps(result))
    assert figures.main([str(path), f"Lucid={lucid_path}", f"textbook={text_path}"]) == 0
    assert path.read_bytes().startswith(PNG_MAGIC)


def _out_of_bounds(result, config="c0-m1-wd0-max0", dtype="float32"):
    """A copy of ``result`` whose cases of one configuration and dtype left the free-running bound."""
    import copy

    bad = copy.deepcopy(result)
    for case in bad["cases"]:
        if case["config"] == config and case["dtype"] == dtype:
            case["free_run"]["within_bound"] = False
            case["free_run"]["max_normalised_error"] = 1e4
    return bad


def test_every_report_opens_with_its_verdict(tiny_result):
    text = markdown_report(tiny_result)
    assert text.splitlines()[2].startswith("**Verdict: PASS.** All ")
    page = html_report(tiny_result)
    assert "<p class='verdict pass'><b>Verdict: PASS.</b>" in page
    assert page.index("Verdict: PASS") < page.index("What produced these numbers")
    bad = _out_of_bounds(tiny_result)
    text = markdown_report(bad)
    assert text.splitlines()[2].startswith("**Verdict: FAIL.** ")
    assert "c0-m1-wd0-max0 float32" in text.splitlines()[2]  # names the configuration that left its bound
    assert "<p class='verdict fail'><b>Verdict: FAIL.</b>" in html_report(bad)


def test_reports_explain_every_configuration_code(tiny_result):
    text = markdown_report(tiny_result)
    assert "| `c1-m0-wd1-max0` | centered, no momentum, weight decay 0.01, minimise |" in text
    assert "| `c0-m1-wd0-max1` | not centered, momentum 0.9, no weight decay, maximise |" in text
    assert "<code>c1-m0-wd1-max0</code>" in html_report(tiny_result)


def test_bounds_figure_marks_what_left_its_bound(tiny_result):
    """The bounds figure draws both bounds, and a red marker exactly where a configuration left one."""
    fig = figures.bounds(_out_of_bounds(tiny_result))
    ax = fig.axes[0]  # float32
    red = [
        c
        for c in ax.collections
        if any(np.allclose(f[:3], (0.839, 0.153, 0.157), atol=0.01) for f in c.get_facecolor())
    ]
    assert len(red) == 1 and len(red[0].get_offsets()) == 1
    assert sorted(line.get_ydata()[0] for line in ax.get_lines()) == [16, 16]
    assert not any(
        any(np.allclose(f[:3], (0.839, 0.153, 0.157), atol=0.01) for f in c.get_facecolor())
        for c in figures.bounds(tiny_result).axes[0].collections
    )
    figures.plt.close("all")


def test_heatmap_colour_scales_span_the_data(tiny_result):
    fig = figures.heatmaps(tiny_result)
    bitwise = fig.axes[0].images[0]
    data = bitwise.get_array()
    low, high = bitwise.get_clim()
    assert high == 100 and low <= float(np.nanmin(data)) and low > float(np.nanmin(data)) - 1.5
    figures.plt.close("all")


@pytest.mark.parametrize(
    ("config", "cause"),
    [
        ("c0-m0-wd0-max0", "eps inside the square root"),
        ("c0-m1-wd0-max0", "eps inside the square root and lr inside the momentum buffer"),
    ],
)
def test_reports_name_why_a_configuration_left_its_bounds(config, cause):
    result = tiny_run(TEXTBOOK, case_filter=f"{config}-float32")
    assert [c["config"] for c in result["causes"]] == [config]
    assert result["causes"][0]["cause"] == cause
    assert result["causes"][0]["replay"].startswith("python -m conformance check --replay v1-")
    assert f"--optimizer {TEXTBOOK}" in result["causes"][0]["replay"]
    verdict_text = markdown_report(result).splitlines()[2]
    assert verdict_text.startswith("**Verdict: FAIL.**") and f"causes (configurations): {cause} (1)" in verdict_text
    assert f"- **{cause}**: 1 configuration(s), `{config}`" in markdown_report(result)
    assert f"<b>{cause}</b>" in html_report(result)
    dumps(result)  # valid against the schema


def test_a_run_within_bounds_names_no_cause(tiny_result):
    assert "causes" not in tiny_result
    assert "Why it disagrees" not in markdown_report(tiny_result)
