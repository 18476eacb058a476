"""Sphinx configuration for the Lucid RMSprop documentation.

Build with ``tox -e docs`` (HTML with warnings as errors, then every code
example through ``sphinx.ext.doctest``).  The figure of the RMSprop page is
measured at build time by ``scripts/textbook_vs_torch.py``; the drift page's
figures are drawn from the committed baseline in ``baselines/``.
"""

from __future__ import annotations

import doctest
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "scripts"))

import textbook_vs_torch  # noqa: E402  (needs the path above)
from sphinx.ext.napoleon.docstring import NumpyDocstring  # noqa: E402

import lucid  # noqa: E402

project = "Lucid RMSprop"
author = "The Lucid RMSprop authors"
copyright = "2026, " + author
release = lucid.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    # Ships MathJax 3 into _static, so formulas render without a network.
    "sphinx-mathjax-offline",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated/*.txt", "scripts"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_ivar = True
# "dtype" in a Parameters section means NumPy's, not one of the dtype
# properties documented here (an ambiguous reference is a warning).
napoleon_preprocess_types = True
napoleon_type_aliases = {"dtype": "numpy.dtype", "ndarray": "numpy.ndarray"}


def _attribute_docstring_whole(self: NumpyDocstring) -> list[str]:
    """Render an attribute's or property's docstring as written.

    napoleon reads the first line of such a docstring as Google style's
    ``type: description`` and splits it at the first colon.  This project
    gives types as annotations and writes sentences with colons
    ("Allowed rise ...: one ULP"), which that rule turned into a bogus "Type"
    field, so the whole docstring is kept as the description.
    """
    descs = [self._lines.next(), *self._dedent(self._consume_to_end())]
    return self._format_field("", "", self.__class__(descs, self._config).lines())


NumpyDocstring._parse_attribute_docstring = _attribute_docstring_whole

# Sphinx's default also sets IGNORE_EXCEPTION_DETAIL; without it, the error
# messages the pages show are checked too.
doctest_default_flags = doctest.ELLIPSIS | doctest.DONT_ACCEPT_TRUE_FOR_1

doctest_global_setup = """
import numpy as np
np.set_printoptions(legacy=False)
"""

html_theme = "furo"
html_title = f"Lucid RMSprop {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]

nitpicky = False


def _measure_figure(app: object) -> None:
    """Measure and draw the textbook-versus-torch figure into ``_generated/``."""
    textbook_vs_torch.main(HERE / "_generated")


#: The committed drift baseline whose figures the drift page shows.
BASELINE = HERE.parent / "baselines" / "cpu-avx512-torch2.13.0.json"


def _draw_baseline_figures(app: object) -> None:
    """Draw the drift report's figures of the committed baseline into ``_generated/``."""
    from conformance.report import figures
    from conformance.report.schema import load

    result = load(BASELINE)
    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    for name, draw in (
        ("drift-heatmaps.png", figures.heatmaps),
        ("drift-ulp.png", figures.ulp_histograms),
        ("drift-error-vs-step.png", figures.error_vs_step),
    ):
        (out / name).write_bytes(figures.to_png(draw(result)))


#: The committed comparisons the "What moved between versions" page draws: figure prefix, baseline, current.
VERSION_COMPARISONS = (
    ("versions-torch", "cpu-avx2-torch2.13.0.json", "cpu-avx2-torch2.14.1.json"),
    ("versions-numpy", "cpu-avx2-torch2.13.0.json", "numpy1.26/cpu-avx2-torch2.13.0.json"),
    ("versions-cpu", "cpu-avx512-torch2.13.0.json", "cpu-avx2-torch2.13.0.json"),
)


def _draw_version_figures(app: object) -> None:
    """Draw the diff report's figures of the committed comparisons into ``_generated/``."""
    from conformance.report import figures
    from conformance.report.drift import compare_results
    from conformance.report.schema import load

    out = HERE / "_generated"
    out.mkdir(exist_ok=True)
    for prefix, before, after in VERSION_COMPARISONS:
        baseline, current = (load(HERE.parent / "baselines" / name) for name in (before, after))
        changes = compare_results(baseline, current).changes
        for name, draw in (("heatmaps", figures.change_heatmaps), ("cases", figures.baseline_against_current)):
            (out / f"{prefix}-{name}.png").write_bytes(figures.to_png(draw(baseline, current, changes)))


def setup(app: object) -> None:
    """Regenerate the measured figures before reading the sources."""
    app.connect("builder-inited", _measure_figure)
    app.connect("builder-inited", _draw_baseline_figures)
    app.connect("builder-inited", _draw_version_figures)
