"""Shared fixtures, Hypothesis profiles, and the bitwise-equality summary."""

from __future__ import annotations

import os
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=50, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

_bitwise: dict[str, list[int]] = defaultdict(lambda: [0, 0])


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the bitwise counts tests record (also from xdist workers)."""
    for name, value in report.user_properties:
        if name == "bitwise":
            dtype, equal, total = value
            _bitwise[dtype][0] += equal
            _bitwise[dtype][1] += total


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _bitwise:
        return
    terminalreporter.section("lockstep: Lucid parameters bit-identical to torch")
    for dtype, (equal, total) in sorted(_bitwise.items()):
        terminalreporter.write_line(f"{dtype}: {equal}/{total} elements = {equal / total:.4%}")
