"""Which committed baseline a drift result is compared with, and which results may become one.

A baselines directory holds one file per stack, named
``<devices>-<cpu capability>-torch<version>.json`` (:func:`baseline_name`).
For a result, :func:`choose_baseline` takes, in this order:

1. the file named for the result's stack (same devices, CPU capability and
   torch release), whatever NumPy, Python or harness version made it;
2. otherwise the *nearest*: among the files of the same devices and CPU
   capability whose settings are the result's, the one whose torch release is
   closest to the result's (a tie between an older and a newer release goes to
   the older one: the version being upgraded from).

A file of another CPU capability is never taken: torch's vectorised kernels
(MKL's square root in particular) round differently on AVX2 and AVX-512, so
the bit-identical fractions move by design and a comparison would report a
regression nobody made.  Name such a file explicitly to compare anyway.

:func:`baseline_problems` says why a result must not become a baseline: a
``--quick`` smoke run or other non-default settings (unless allowed), one
shard of a run not yet merged, a ``--cases`` selection, or cases the
candidate failed on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.report.environment import differences

__all__ = ["BaselineChoice", "NoBaselineError", "baseline_name", "baseline_problems", "choose_baseline"]


class NoBaselineError(LookupError):
    """No baseline in the directory can be compared with the result; the message says what is there."""


@dataclass(frozen=True)
class BaselineChoice:
    """The baseline :func:`choose_baseline` took, and why."""

    path: Path
    result: dict[str, Any]
    #: Whether it is the file named for the result's stack.
    exact: bool
    #: One sentence: which file, and how its stack differs from the result's.
    reason: str
    #: Files of the directory that could not be read, with why (they took no part in the choice).
    skipped: tuple[str, ...] = ()


def _release(version: str) -> tuple[int, ...]:
    """``"2.14.1+cu130"`` -> ``(2, 14, 1)``; the leading numeric part of a version."""
    match = re.match(r"(\d+(?:\.\d+)*)", version)
    return tuple(int(x) for x in match.group(1).split(".")) if match else ()


def _public(version: str) -> str:
    return version.split("+")[0]


def baseline_name(result: dict[str, Any], torch: str | None = None) -> str:
    """File name of the baseline for ``result``'s stack, e.g. ``cpu-avx512-torch2.13.0.json``.

    ``torch`` names another torch release for the same devices and CPU capability.
    """
    env = result["environment"]
    devices = "-".join(result["settings"]["devices"])
    return f"{devices}-{env['cpu_capability'].lower()}-torch{_public(torch or env['torch'])}.json"


def _distance(a: str, b: str) -> tuple[int, ...]:
    """How far apart two releases are: the first differing component decides, then the next."""
    x, y = _release(a), _release(b)
    width = max(len(x), len(y))
    x, y = x + (0,) * (width - len(x)), y + (0,) * (width - len(y))
    return tuple(abs(p - q) for p, q in zip(x, y, strict=True))


def choose_baseline(directory: Path, current: dict[str, Any], *, torch: str | None = None) -> BaselineChoice:
    """Return the baseline in ``directory`` to compare ``current`` with (the order is the module's).

    Parameters
    ----------
    directory : Path
        A directory of baselines.
    current : dict
        The result to judge (:func:`conformance.report.schema.load`).
    torch : str, optional
        Take the file of this torch release for ``current``'s devices and CPU
        capability (the upgrade question: what moved since that release).

    Raises
    ------
    NoBaselineError
        If no file there is one ``current`` can be compared with.
    ValueError, OSError
        If the file named for the stack exists but cannot be read as a drift result.
    """
    from conformance.report.schema import load

    wanted = directory / baseline_name(current, torch)
    if wanted.exists() or torch is not None:
        if not wanted.exists():
            listed = ", ".join(sorted(p.name for p in directory.glob("*.json"))) or "none"
            raise NoBaselineError(f"no baseline {wanted} for torch {torch}; the directory holds: {listed}")
        return BaselineChoice(wanted, load(wanted), True, f"the baseline for this stack, {wanted.name}")
    env = current["environment"]
    prefix = f"{'-'.join(current['settings']['devices'])}-{env['cpu_capability'].lower()}-torch"
    comparable, skipped, others = [], [], []
    for path in sorted(directory.glob("*.json")):
        try:
            result = load(path)
        except (OSError, ValueError) as err:
            skipped.append(f"{path.name}: {err}")
            continue
        if not path.name.startswith(prefix) or result["environment"]["cpu_capability"] != env["cpu_capability"]:
            others.append(f"{path.name} (CPU capability {result['environment']['cpu_capability']})")
        elif result["settings"] != current["settings"]:
            others.append(f"{path.name} (other settings)")
        else:
            comparable.append((path, result))
    if not comparable:
        listed = "; ".join(others) or "no baseline files"
        raise NoBaselineError(
            f"no baseline {wanted} for this stack, and none in {directory} of the same devices, CPU capability "
            f"({env['cpu_capability']}) and settings to compare with instead (it holds: {listed}); a baseline of "
            "another CPU capability moves by design: name its file to compare anyway"
        )

    def nearness(item: tuple[Path, dict[str, Any]]) -> tuple[Any, ...]:
        other = item[1]["environment"]["torch"]
        older = _release(other) <= _release(env["torch"])
        return (_distance(other, env["torch"]), not older, len(differences(item[1]["environment"], env)))

    path, result = min(comparable, key=nearness)
    reason = (
        f"no baseline {wanted.name} for this stack; the nearest is {path.name}: same devices, CPU capability "
        f"({env['cpu_capability']}) and settings, torch {_public(result['environment']['torch'])} instead of "
        f"{_public(env['torch'])}"
    )
    return BaselineChoice(path, result, False, reason, tuple(skipped))


def baseline_problems(result: dict[str, Any], *, any_settings: bool = False) -> list[str]:
    """Return why ``result`` must not become a baseline (empty when it may).

    ``any_settings`` accepts settings other than the default run's (a baseline
    kept deliberately for a run of other settings).
    """
    from conformance.report.cases import FULL, QUICK

    problems = []
    if result["settings"] == {**QUICK.as_json(), "devices": result["settings"]["devices"]}:
        problems.append("it is a --quick smoke run")
    elif not any_settings:
        default = {**FULL.as_json(), "devices": result["settings"]["devices"]}
        moved = [k for k in default if default[k] != result["settings"].get(k)]
        if moved:
            shown = ", ".join(f"{k} {result['settings'][k]!r} (default {default[k]!r})" for k in moved)
            problems.append(f"its settings are not the default run's: {shown}; pass --any-settings if that is meant")
    if result.get("shard"):
        shard = result["shard"]
        problems.append(f"it is shard {shard['index']}/{shard['count']} of a run: merge the shards first")
    if result.get("selection"):
        problems.append(f"it measured only the cases matching --cases {result['selection']['cases']!r}")
    if result.get("failures"):
        problems.append(f"the candidate could not run on {len(result['failures'])} case(s): it is incomplete")
    return problems
