"""Write a drift result and its reports into a directory, each file atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from conformance.report.markdown import markdown_report
from conformance.report.schema import atomic_write, dumps, validate

__all__ = ["REPORT_FILES", "write_reports"]

#: File names inside the output directory.
REPORT_FILES = {"json": "drift.json", "markdown": "drift.md", "html": "drift.html"}


def write_reports(result: dict[str, Any], out_dir: str | os.PathLike[str], *, html: bool = True) -> dict[str, Path]:
    """Validate ``result`` and write its JSON, Markdown and (optionally) HTML report into ``out_dir``.

    Returns the paths written, by kind.
    """
    validate(result)
    out = Path(out_dir)
    written = {
        "json": atomic_write(out / REPORT_FILES["json"], dumps(result)),
        "markdown": atomic_write(out / REPORT_FILES["markdown"], markdown_report(result)),
    }
    if html:
        from conformance.report.html import html_report  # matplotlib is imported only here

        written["html"] = atomic_write(out / REPORT_FILES["html"], html_report(result))
    return written
