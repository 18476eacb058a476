"""The table of real implementations (docs/implementations.md), rerun: each row's verdict must not change.

Run by ``tox -e external`` (not in the default list: jax and optax are about
600 MB, lucid-dl needs its own Python 3.12 environment, which that env builds
and names in ``LUCID_DL_PYTHON``).  A row is its ``check`` command, the exit
status it gives, and the line that states the verdict (the failing checks or
"all ... passed"); a change in either is a failure to explain, and the table
is updated with it.  Probes only (``--budget 0``): the same scenarios on every
machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPTAX_EPS_OUTSIDE = "conformance.adapters.optax:rmsprop_eps_outside"


@dataclass(frozen=True)
class Row:
    """One row of the table: the ``check`` arguments, the exit status and the verdict line they give."""

    name: str
    args: tuple[str, ...]
    status: int
    verdict: str
    #: The causes the verdict line names, as printed ("" where it passes).
    causes: str = ""


ROWS = [
    Row("lucid", ("--cases", "max0-float64-cpu-foreach0"), 0, "all 312 judged checks passed on 40 probe scenario(s)"),
    Row(
        "torch-for-loop",
        ("--optimizer", "torch.optim:RMSprop", "--cases", "max0-float64-cpu-foreach0"),
        0,
        "all 312 judged checks passed on 40 probe scenario(s)",
    ),
    Row(
        "torch-foreach",
        ("--optimizer", "torch.optim:RMSprop", "--cases", "max0-float64-cpu-foreach1"),
        0,
        "all 312 judged checks passed on 40 probe scenario(s)",
    ),
    Row(
        "optax-default",
        ("--optimizer", "optax:rmsprop", "--cases", "m0-wd0-max0-float64-cpu-foreach0"),
        1,
        "10 of 10 scenario(s) DISAGREE; failing checks: candidate_to_torch, freerun, lockstep, magnitude, "
        "nonfinite, reordered_load, torch_to_candidate",
        "causes (configurations): eps inside the square root (2)",
    ),
    Row(
        "optax-eps-outside",
        ("--optimizer", OPTAX_EPS_OUTSIDE, "--cases", "m0-wd0-max0-float64-cpu-foreach0"),
        1,
        "2 of 10 scenario(s) DISAGREE; failing checks: candidate_to_torch, lockstep, nonfinite, reordered_load, "
        "torch_to_candidate",
        "causes (configurations): subnormal results flushed to zero (flush-to-zero arithmetic) (2)",
    ),
    Row(
        "optax-eps-outside-momentum",
        ("--optimizer", OPTAX_EPS_OUTSIDE, "--cases", "m1-wd0-max0-float64-cpu-foreach0"),
        1,
        "8 of 10 scenario(s) DISAGREE; failing checks: candidate_roundtrip, candidate_to_torch, freerun, lockstep, "
        "nonfinite, reordered_load, torch_to_candidate",
        "causes (configurations): lr inside the momentum buffer (2)",
    ),
    Row(
        "lucid-dl",
        ("--optimizer", "conformance.adapters.lucid_dl:rmsprop", "--cases", "m0-wd0-max0-float64-cpu-foreach0"),
        1,
        "4 of 10 scenario(s) DISAGREE; failing checks: freerun, lockstep, magnitude, state_dict",
        "causes (configurations): eps inside the square root (2); could not run (it raised IndexError) (2)",
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.name)
def test_verdict_unchanged(row: Row) -> None:
    args = [sys.executable, "-m", "conformance", "check", "--budget", "0", *row.args]
    if row.name == "lucid-dl":
        python = os.environ.get("LUCID_DL_PYTHON")
        assert python, "LUCID_DL_PYTHON must name an interpreter with lucid-dl 2.9.0 (tox -e external builds one)"
        args += ["--candidate-python", python]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    shown = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == row.status, shown
    assert row.verdict in done.stdout, shown
    assert row.causes in done.stdout, shown  # the diagnosis's causes, as docs/implementations.md quotes them
