"""The drift result: a schema-versioned JSON document, written deterministically and atomically.

Same seed, settings and versions give a byte-identical file: keys are sorted,
floats are rounded to :data:`conformance.report.measure.DIGITS` significant
digits, and the document holds no timestamps, host names or paths.  The JSON
Schema is ``drift.schema.json`` next to this module.

Schema versions:

- 3: the environment records what determines the numbers beyond the
  versions: the candidate's version, torch's build (BLAS, MKL, oneDNN,
  OpenMP, compiler, CUDA, parallel backend), NumPy's build (BLAS, SIMD
  extensions) and the thread counts (:mod:`conformance.report.environment`).
- 2: a case id is the conformance matrix's case id and the scale
  (``c0-m0-wd0-max0-float32-cpu-foreach0-cap0-tlr0-scale=1e-08``, the one
  spelling ``check --cases`` takes too).
- 1: a case id was spelled ``c0-m0-wd0-max0/float32/foreach0/cpu/scale=1e-08``.

:func:`load` reads all three and hands out version 3: an older result's ids
are respelled, its environment keeps only what it recorded, and
``upgraded_from`` says which version it was written in, so old baselines and
shards still compare and merge, and ``compare`` says what they do not record.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "READABLE_VERSIONS",
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "atomic_write",
    "dumps",
    "json_schema",
    "load",
    "upgrade",
    "validate",
]

SCHEMA_NAME = "lucid-conformance-drift"
#: Bump when a field changes meaning or spelling; :func:`load` refuses versions it cannot upgrade.
SCHEMA_VERSION = 3
#: Versions :func:`load` reads (and upgrades to :data:`SCHEMA_VERSION`).
READABLE_VERSIONS = (1, 2, 3)


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def dumps(result: dict[str, Any]) -> str:
    """Serialise ``result`` deterministically: sorted keys, one line per top-level key and per case.

    One case per line keeps the file small and a baseline update reviewable
    as a line diff.
    """
    lines = []
    for key in sorted(result):
        if key == "cases":
            cases = [f"  {_compact(case)}" for case in result["cases"]]
            lines.append(' "cases": [\n' + ",\n".join(cases) + "\n ]" if cases else ' "cases": []')
        else:
            lines.append(f" {_compact(key)}: {_compact(result[key])}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def atomic_write(path: str | os.PathLike[str], text: str | bytes) -> Path:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one.

    The data goes to a temporary file in the same directory, is flushed and
    fsynced, then renamed over ``path`` with :func:`os.replace` (atomic on
    POSIX and Windows); the directory is fsynced where the platform allows.  A
    run killed mid-write leaves at most a stray ``.tmp`` file, never a
    half-written report or baseline.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return target
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)
    return target


@cache
def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of a drift result (``drift.schema.json``)."""
    text = resources.files("conformance.report").joinpath("drift.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate(result: Any) -> None:
    """Raise ``ValueError`` naming the first problem if ``result`` is not a drift result of this version.

    Uses ``jsonschema`` (the ``report`` extra) when installed; without it,
    checks the header fields only.  Then every case id must be the one its
    fields spell (:func:`conformance.report.cases.drift_case_id`), once.
    """
    if not isinstance(result, dict):
        raise ValueError(f"not a drift result: the document is {_kind(result)}, not a JSON object")
    if result.get("schema") != SCHEMA_NAME:
        raise ValueError(f"not a drift result: schema is {result.get('schema')!r}, expected {SCHEMA_NAME!r}")
    if result.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"drift result has schema_version {result.get('schema_version')!r}; this harness writes "
            f"{SCHEMA_VERSION} and reads {', '.join(map(str, READABLE_VERSIONS))} (load() upgrades the older ones)"
        )
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the report extra installs it
        return
    try:
        jsonschema.validate(result, json_schema())
    except jsonschema.ValidationError as err:
        where = "/".join(map(str, err.absolute_path)) or "(top level)"
        raise ValueError(f"invalid drift result at {where}: {err.message}") from None
    _check_ids(result["cases"])


def _kind(value: Any) -> str:
    return "null" if value is None else f"a JSON {type(value).__name__} ({str(value)[:40]!r})"


def _spelled(case: dict[str, Any], spell: Any) -> str:
    return spell(case["config"], case["dtype"], case["device"], case["foreach"], case["scale"])


def _check_ids(cases: list[dict[str, Any]]) -> None:
    from conformance.report.cases import drift_case_id

    seen: set[str] = set()
    for i, case in enumerate(cases):
        expected = _spelled(case, drift_case_id)
        if case["id"] != expected:
            raise ValueError(
                f"invalid drift result at cases/{i}/id: {case['id']!r}, but its fields make it {expected!r}"
            )
        if case["id"] in seen:
            raise ValueError(f"invalid drift result at cases/{i}/id: {case['id']!r} appears twice")
        seen.add(case["id"])


def upgrade(result: Any) -> Any:
    """Return ``result`` in :data:`SCHEMA_VERSION` if it is a readable older version (else unchanged).

    Version 1 differs from 2 only in the spelling of case ids: each id that is
    the version 1 spelling of its case's fields is respelled; anything else is
    left for :func:`validate` to name.  Version 2 differs from 3 in what the
    environment records: the upgraded result keeps what it has, and
    ``upgraded_from`` names the version it was written in (the fields it lacks:
    :func:`conformance.report.environment.unrecorded`).
    """
    if not isinstance(result, dict) or result.get("schema") != SCHEMA_NAME:
        return result
    version = result.get("schema_version")
    if version not in (1, 2):
        return result
    if version == 1:
        from conformance.report.cases import drift_case_id, legacy_drift_case_id

        cases = result.get("cases")
        if isinstance(cases, list):
            respelled = []
            for case in cases:
                try:
                    if case["id"] == _spelled(case, legacy_drift_case_id):
                        case = {**case, "id": _spelled(case, drift_case_id)}
                except (KeyError, TypeError, ValueError):
                    pass  # malformed: validation names it
                respelled.append(case)
            result = {**result, "cases": respelled}
    return {**result, "schema_version": SCHEMA_VERSION, "upgraded_from": version}


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read, upgrade (:func:`upgrade`) and validate a drift result from ``path``.

    Raises
    ------
    OSError
        If ``path`` cannot be read.
    ValueError
        If it is not JSON, not UTF-8, nested absurdly deep, or not a drift result (the message names the file).
    """
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a drift result (JSON nested too deeply)") from None
    try:
        result = upgrade(result)
        validate(result)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return result
