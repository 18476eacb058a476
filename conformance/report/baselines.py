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
(its square root in particular) are chosen per capability and round some
elements differently on AVX2 and AVX-512 (between the two committed baselines
of torch 2.13.0, 406 of 512 cases differ, none beyond a threshold), so such a
file describes other roundings, and a regression of this stack would hide
among the moves the CPU makes.  Name such a file explicitly to compare anyway.

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

__all__ = [
    "BaselineChoice",
    "NoBaselineError",
    "baseline_name",
    "baseline_problems",
    "choose_baseline",
    "foreign_stack",
]


class NoBaselineError(LookupError):
    """No baseline in the directory can be compared with the result; the message says what is there.

    ``unreadable`` names the files of the directory that could not be read as
    drift results (one of them might have been the baseline).
    """

    def __init__(self, message: str, unreadable: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.unreadable = unreadable


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


def _stack_prefix(result: dict[str, Any]) -> str:
    """``cpu-avx2-torch``: the devices and CPU capability part of a baseline's file name."""
    return f"{'-'.join(result['settings']['devices'])}-{result['environment']['cpu_capability'].lower()}-torch"


def baseline_name(result: dict[str, Any], torch: str | None = None) -> str:
    """File name of the baseline for ``result``'s stack, e.g. ``cpu-avx512-torch2.13.0.json``.

    ``torch`` names another torch release for the same devices and CPU capability.
    """
    return f"{_stack_prefix(result)}{_public(torch or result['environment']['torch'])}.json"


def _padded(a: str, b: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    x, y = _release(a), _release(b)
    width = max(len(x), len(y))
    return x + (0,) * (width - len(x)), y + (0,) * (width - len(y))


def _distance(a: str, b: str) -> tuple[int, ...]:
    """How far apart two releases are: the first differing component decides, then the next."""
    x, y = _padded(a, b)
    return tuple(abs(p - q) for p, q in zip(x, y, strict=True))


def _why_not(path: Path, result: dict[str, Any], current: dict[str, Any]) -> str | None:
    """Say why ``result`` (read from ``path``) cannot stand in for ``current``'s baseline; None if it can."""
    env, other = current["environment"], result["environment"]
    if other["cpu_capability"] != env["cpu_capability"]:
        return f"{path.name} (CPU capability {other['cpu_capability']})"
    if result["settings"]["devices"] != current["settings"]["devices"]:
        return f"{path.name} (devices {', '.join(result['settings']['devices'])})"
    if result["settings"] != current["settings"]:
        return f"{path.name} (other settings)"
    if not path.name.startswith(_stack_prefix(current)):
        return f"{path.name} (named for another stack)"
    return None


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
        If no file there is one ``current`` can be compared with (the message
        lists what the directory holds, files that could not be read included).
    ValueError, OSError
        If the file named for the stack (or for ``torch``) exists but cannot be
        read as a drift result.
    """
    from conformance.report.schema import load

    wanted = directory / baseline_name(current, torch)
    if wanted.exists():
        what = "the baseline for this stack" if torch is None else f"the baseline of torch {torch} for this stack"
        return BaselineChoice(wanted, load(wanted), True, f"{what}, {wanted.name}")
    if torch is not None:
        listed = ", ".join(sorted(p.name for p in directory.glob("*.json"))) or "none"
        raise NoBaselineError(f"no baseline {wanted} for torch {torch}; the directory holds: {listed}")
    env = current["environment"]
    comparable, skipped, others = [], [], []
    for path in sorted(directory.glob("*.json")):
        try:
            result = load(path)
        except (OSError, ValueError) as err:
            skipped.append(f"{path.name}: {err}")
            continue
        why = _why_not(path, result, current)
        if why:
            others.append(why)
        else:
            comparable.append((path, result))
    if not comparable:
        listed = "; ".join(others + [f"unreadable {s}" for s in skipped]) or "no baseline files"
        raise NoBaselineError(
            f"no baseline {wanted} for this stack, and none in {directory} of the same devices, CPU capability "
            f"({env['cpu_capability']}) and settings to compare with instead (it holds: {listed}); a baseline of "
            "another CPU capability describes other roundings: name its file to compare anyway",
            tuple(skipped),
        )

    def nearness(item: tuple[Path, dict[str, Any]]) -> tuple[Any, ...]:
        other = item[1]["environment"]["torch"]
        mine, theirs = _padded(env["torch"], other)
        return (_distance(other, env["torch"]), theirs > mine, len(differences(item[1]["environment"], env)))

    path, result = min(comparable, key=nearness)
    reason = (
        f"no baseline {wanted.name} for this stack; the nearest is {path.name}: same devices, CPU capability "
        f"({env['cpu_capability']}) and settings, torch {_public(result['environment']['torch'])} instead of "
        f"{_public(env['torch'])}"
    )
    return BaselineChoice(path, result, False, reason, tuple(skipped))


def foreign_stack(path: Path, result: dict[str, Any]) -> str | None:
    """Return why the file ``path`` must not take ``result`` as its baseline, or None if it may.

    A file named like a baseline (``<devices>-<capability>-torch<version>.json``)
    describes that stack, so it takes only a result of that stack; any other
    name is the user's choice.
    """
    if re.fullmatch(r"[a-z0-9:-]+-[a-z0-9_]+-torch[0-9][\w.]*\.json", path.name) and path.name != baseline_name(result):
        return f"{path.name} is named for another stack than this result's, {baseline_name(result)}"
    return None


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
