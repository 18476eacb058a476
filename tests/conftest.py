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

#: tests/external reruns the table of real implementations (jax, optax, a lucid-dl interpreter): only
#: ``tox -e external`` collects it, by setting CONFORMANCE_EXTERNAL=1.
collect_ignore = [] if os.environ.get("CONFORMANCE_EXTERNAL") == "1" else ["external"]

_bitwise: dict[str, list[int]] = defaultdict(lambda: [0, 0])
_examples: dict[str, int] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-cuda",
        action="store_true",
        help="fail, instead of skip, the conformance cases that need a CUDA device when none is present "
        "(also LUCID_REQUIRE_CUDA=1)",
    )
    parser.addoption(
        "--require-numba",
        action="store_true",
        help="fail, instead of skip, the tests of the compiled step where numba cannot run it "
        "(also LUCID_REQUIRE_NUMBA=1)",
    )


@pytest.fixture
def numba_kernel(request: pytest.FixtureRequest) -> str:
    """Require the compiled step: skip, with numba's reason printed, where numba cannot run it.

    numba comes with the ``fast`` extra; ``--require-numba`` or
    ``LUCID_REQUIRE_NUMBA=1`` (set by tox's envs that install the extra) makes
    the skip a failure.  Returns the backend's description.
    """
    from lucid.optim._kernel import resolve_accelerator

    backend = resolve_accelerator("auto")
    if backend.name != "numba":
        message = f"the numba kernel cannot run: {backend.reason}"
        if request.config.getoption("--require-numba") or os.environ.get("LUCID_REQUIRE_NUMBA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return str(backend)


@pytest.fixture
def kernel_threads_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Share the compiled kernel's steps among threads from NumPy's threshold on (``_fast.PARALLEL_MIN``).

    By default the kernel steps in one thread below 2 MiB per array, where a
    pool thread's hand-over costs more than it saves; the tests' parameters
    that are to cross a thread boundary (one of ``PARALLEL_MIN + 4099``
    elements, or 100,003) are smaller, and must cross it on both accelerators.
    """
    from lucid.optim import _fast

    monkeypatch.setattr(_fast, "KERNEL_PARALLEL_MIN_BYTES", _fast.PARALLEL_MIN * 4)  # float32's bytes


@pytest.fixture(params=["numpy", "numba"])
def accelerator(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each of the step's accelerators (``RMSprop.accelerator``).

    The numba runs require the kernel as :func:`numba_kernel` does, and share
    their large parameters among threads as the NumPy runs do
    (:func:`kernel_threads_early`).
    """
    from lucid.optim import RMSprop

    if request.param == "numba":
        request.getfixturevalue("numba_kernel")
        request.getfixturevalue("kernel_threads_early")
    monkeypatch.setattr(RMSprop, "accelerator", request.param)
    return request.param


def pytest_report_header(config: pytest.Config) -> str:
    """Say which accelerator Lucid's step takes in this run (``RMSprop.accelerator`` left as it is)."""
    from lucid.optim._kernel import resolve_accelerator

    try:
        return f"lucid step accelerator: {resolve_accelerator(None)}"
    except (ValueError, RuntimeError) as err:  # a bad LUCID_ACCELERATOR: the tests will say so too
        return f"lucid step accelerator: {err}"


_bad_inputs = [0, 0]  # tried, handled as required (tests/reliability)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Collect the counts tests record (also from xdist workers).

    Every phase's report carries the item's properties; only the teardown
    report, which comes once per test and after the test body, is counted.
    """
    if report.when != "teardown":
        return
    for name, value in report.user_properties:
        if name == "bad_inputs":
            _bad_inputs[0] += value[0]
            _bad_inputs[1] += value[1]
        if name == "conformance_examples":
            _examples[report.nodeid] = value
        if name == "bitwise":
            dtype, equal, total = value
            _bitwise[dtype][0] += equal
            _bitwise[dtype][1] += total


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _examples:
        ran = [n for n in _examples.values() if n]
        terminalreporter.section("conformance: cases and examples")
        terminalreporter.write_line(
            f"{len(ran)} Hypothesis-driven case tests ran {sum(ran)} examples "
            f"(Hypothesis profile {os.environ.get('HYPOTHESIS_PROFILE', 'ci')})"
        )
    if _bad_inputs[0]:
        terminalreporter.section("reliability: bad inputs handled as required")
        tried, handled = _bad_inputs
        terminalreporter.write_line(f"{handled}/{tried} bad inputs (table rows + fuzz examples) handled as required")
    if not _bitwise:
        return
    terminalreporter.section("lockstep: Lucid parameters bit-identical to torch")
    for dtype, (equal, total) in sorted(_bitwise.items()):
        terminalreporter.write_line(f"{dtype}: {equal}/{total} elements = {equal / total:.4%}")
