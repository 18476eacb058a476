"""Small drift runs shared by the report tests (seconds, not the default run's minutes)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from conformance.candidate import resolve
from conformance.report.cases import QUICK, Settings
from conformance.report.document import run_drift

#: Two scales (the sqrt(eps) knee and unit), short streams: 128 cases in about two seconds.
TINY = dataclasses.replace(QUICK, steps=6, size=32, scales=(1e-4, 1.0))
#: The same settings as command-line flags.
TINY_FLAGS = ["--quick", "--steps", "6", "--size", "32", "--scales", "1e-4,1", "--no-progress"]

LUCID = "lucid.optim:RMSprop"
PERTURBED = "conformance.examples.perturbed:OneUlpRMSprop"
TEXTBOOK = "conformance.examples.textbook:TextbookRMSprop"


def tiny_run(candidate: str = LUCID, settings: Settings = TINY, **kwargs: Any) -> dict[str, Any]:
    return run_drift(settings, resolve(candidate), candidate, progress=False, **kwargs)


@pytest.fixture(scope="session")
def tiny_result() -> dict[str, Any]:
    return tiny_run()
