"""The blind set: wrong and honest RMSprops written without reading the harness, against its probes.

``blind_candidates.py`` was written as an independent validation set, from real
optimizers' shipped bugs and the optimizer API, by someone who did not read
``conformance/`` or this catalogue; each wrong class was shown to differ from
torch 2.13 by a direct comparison, each honest one to stay within a few
roundings of it.  Run first against the default ``check`` (probes only), 18 of
its 20 wrong classes were caught; the probe for many parameters then grew from
14 to 40 (``ManyParamsStateCopy`` broke only past 16 parameters).

``NaiveLerpGradAvg`` is not asserted caught: its ``ga + (1 - alpha)(g - ga)`` is
the lerp of the legitimate ``mutants.Unfused``, within the forward-error bound of
``grad_avg`` (a few u times ``|ga| + (1 - alpha)|g|``) wherever it differs from
torch's two-branch lerp; it departs visibly only at alpha = 0 with centered,
where the exact variance ``v - ga^2`` is 0 and the parameter's error bound is
unbounded (kappa = infinity), so no rounding-based bound can judge it.
"""

from __future__ import annotations

import blind_candidates as blind
import pytest

from conformance.harness import check_candidate
from conformance.matrix import cases

#: Not asserted caught, and why: the module docstring.
WITHIN_THE_CONTRACT = (blind.NaiveLerpGradAvg,)
#: The case each wrong class is run on: the first case of the matrix where it shows
#: (float32 unless the bug lives in another dtype).
CASE_OF = {blind.ComplexAbsSquare: "c0-m0-wd0-max0-complex64", blind.Float32Hyperparams: "c0-m0-wd0-max0-float64"}
#: The honest classes' cases: every flag off and every flag on, in every dtype (the whole
#: CPU matrix took 3-6 minutes per class on the 2-core machine, run once: all passed).
HONEST_CASES = [
    c for c in cases("cpu") if c.impl.foreach is False and c.flags.name in ("c0-m0-wd0-max0", "c1-m1-wd1-max1")
]


@pytest.mark.parametrize("wrong", [w for w in blind.WRONG if w not in WITHIN_THE_CONTRACT], ids=lambda c: c.__name__)
def test_wrong_class_is_caught_by_the_probes(wrong: type) -> None:
    where = CASE_OF.get(wrong, "c0-m0-wd0-max0-float32")
    selected = [c for c in cases("cpu") if c.id.startswith(where) and c.impl.foreach is False]
    report = check_candidate(wrong, selected=selected, diagnosis=False)
    assert not report.ok, f"{wrong.__name__} survived the probes of {[c.id for c in selected]}"


@pytest.mark.parametrize("honest", blind.HONEST, ids=lambda c: c.__name__)
def test_honest_class_passes(honest: type) -> None:
    report = check_candidate(honest, selected=HONEST_CASES)
    assert report.ok, "\n".join(report.failure_lines()[:20])
