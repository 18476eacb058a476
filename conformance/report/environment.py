"""The environment record of a drift result: what determines the numbers, and how to tell two apart.

A result records the versions (harness, candidate, NumPy, torch, Python),
the CPU and the device names, and since schema version 3 what inside them
decides how a step rounds:

``torch_build``
    From ``torch.__config__.show()`` and ``parallel_info()``: the BLAS and
    LAPACK torch was built with, the MKL and oneDNN (MKL-DNN) versions, the
    OpenMP version, the compiler, the CUDA version of the build, the commit,
    the ATen parallel backend, and whether MKL and oneDNN are usable
    (``torch.backends.mkl``, ``torch.backends.mkldnn``).  MKL's vectorised
    square root is the operation whose rounding differs between builds and
    CPUs.
``numpy_build``
    From ``numpy.show_config(mode="dicts")``: the BLAS and LAPACK NumPy was
    built with, and its SIMD extensions (the baseline compiled in, those
    found on this CPU and dispatched to, those not found).
``threads``
    torch's intra- and inter-op thread counts, OpenMP's and MKL's (from
    ``parallel_info()``), the BLAS libraries loaded in the process with their
    versions and thread counts (``threadpoolctl``), and the environment
    variables that set thread counts or MKL's reproducibility mode, where set.

Nothing is a path or a host name: the same stack gives the same record, so a
result stays byte-identical across runs.  :func:`flatten` spells a record as
dotted keys (``torch_build.mkl``) and :func:`differences` lists the keys in
which two records differ; keys a record written by an older schema version
does not hold are reported once, together, by :func:`unrecorded`.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import numpy as np

__all__ = ["NEW_IN_VERSION_3", "THREAD_VARIABLES", "differences", "environment", "flatten", "unrecorded"]

#: Environment variables that change thread counts or MKL's code paths (recorded where set).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "ATEN_CPU_CAPABILITY",
    "NPY_DISABLE_CPU_FEATURES",
    "NUMBA_NUM_THREADS",
    "LUCID_NUM_THREADS",
)

#: Environment fields schema version 3 added (absent from results written by versions 1 and 2).
NEW_IN_VERSION_3 = ("candidate_version", "torch_build", "numpy_build", "threads")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _search(pattern: str, text: str) -> str:
    match = re.search(pattern, text, flags=re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def _torch_build(torch: Any, parallel: str) -> dict[str, Any]:
    show = torch.__config__.show()
    settings = dict(re.findall(r"(\w+)=([^,]*)", _search(r"Build settings: (.*)$", show)))
    return {
        "blas": settings.get("BLAS_INFO", "unknown"),
        "lapack": settings.get("LAPACK_INFO", "unknown"),
        "mkl": _search(r"Math Kernel Library Version (.+?) for ", show),
        "mkl_available": bool(torch.backends.mkl.is_available()),
        "onednn": _search(r"MKL-DNN (v[\d.]+)", show),
        "onednn_available": bool(torch.backends.mkldnn.is_available()),
        "openmp": _search(r"OpenMP (\d+)", show),
        "compiler": _search(r"^\s*- (GCC [\d.]+|clang [\d.]+|MSVC \S+)", show),
        "cuda": str(torch.version.cuda or "none"),
        "commit": settings.get("COMMIT_SHA", "unknown"),
        "parallel_backend": _search(r"ATen parallel backend: (.*)$", parallel),
    }


def _numpy_build() -> dict[str, Any]:
    try:
        config = np.show_config(mode="dicts")
    except (TypeError, ValueError, AttributeError):  # a NumPy without mode="dicts"
        return {"blas": "unknown", "lapack": "unknown", "simd_baseline": [], "simd_found": [], "simd_not_found": []}
    deps = config.get("Build Dependencies", {})
    simd = config.get("SIMD Extensions", {})

    def library(kind: str) -> str:
        entry = deps.get(kind, {})
        name = str(entry.get("name", "unknown"))
        # NumPy 1.26's build names some dependencies by a Python object id ("dep140213194937296"),
        # which differs from run to run: not a name.
        # (its version is then NumPy's own, not the library's: left out too)
        if re.fullmatch(r"dep\d+", name):
            return "unnamed"
        return f"{name} {entry.get('version', '')}".strip()

    return {
        "blas": library("blas"),
        "lapack": library("lapack"),
        "simd_baseline": [str(x) for x in simd.get("baseline", [])],
        "simd_found": [str(x) for x in simd.get("found", [])],
        "simd_not_found": [str(x) for x in simd.get("not found", [])],
    }


def _threads(torch: Any, parallel: str) -> dict[str, Any]:
    record: dict[str, Any] = {
        "torch": int(torch.get_num_threads()),
        "torch_interop": int(torch.get_num_interop_threads()),
        "openmp": _search(r"omp_get_max_threads\(\) : (\d+)", parallel),
        "mkl": _search(r"mkl_get_max_threads\(\) : (\d+)", parallel),
    }
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - the report extra installs it
        record["libraries"] = ["unknown (threadpoolctl is not installed)"]
    else:
        record["libraries"] = _libraries(threadpool_info(), (np, torch))
    record["variables"] = {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}
    return record


def _libraries(infos: list[dict[str, Any]], packages: tuple[Any, ...]) -> list[str]:
    """Describe the thread-pool libraries NumPy and torch loaded, one line each, sorted.

    Those inside the packages' own directories (``numpy.libs``, ``torch/lib``):
    another package that happens to be imported (SciPy ships an OpenBLAS of its
    own) takes no part in the numbers.  Where none of those is a BLAS (a NumPy
    linked to the system's or conda's BLAS), every BLAS loaded is described too.
    """
    roots = []
    for package in packages:
        root = os.path.dirname(os.path.abspath(package.__file__))
        roots += [root + os.sep, root + ".libs" + os.sep]
    own = [info for info in infos if any(str(info.get("filepath", "")).startswith(r) for r in roots)]
    if not any(info.get("user_api") == "blas" for info in own):
        own += [info for info in infos if info.get("user_api") == "blas" and info not in own]
    lines = []
    for info in own:
        details = [f"{info.get('internal_api', '?')} {info.get('version') or ''}".strip(), str(info.get("user_api"))]
        details += [f"{info['num_threads']} threads"] if "num_threads" in info else []
        details += [str(info[k]) for k in ("threading_layer", "architecture") if info.get(k)]
        lines.append(f"{info.get('prefix', '?')}: {', '.join(details)}")
    return sorted(lines)


def environment(devices: tuple[str, ...] = ("cpu",), candidate_version: str = "unknown") -> dict[str, Any]:
    """Return what explains a number: versions, builds, threads, CPU model and SIMD capability, devices.

    Parameters
    ----------
    devices : tuple of str
        The torch devices of the run (each gets its name in ``device_names``).
    candidate_version : str
        The version of the distribution that provides the candidate.
    """
    import torch

    from conformance.candidate import distribution_version

    names = {}
    for device in devices:
        names[device] = torch.cuda.get_device_name(device) if device.startswith("cuda") else _cpu_model()
    parallel = torch.__config__.parallel_info()  # thread counts and the parallel backend, read once
    return {
        # The harness's own version, from its distribution's metadata (a module named ``lucid`` may be another's).
        "lucid": distribution_version("conformance"),
        "candidate_version": candidate_version,
        "numpy": np.__version__,
        "numpy_build": _numpy_build(),
        "torch": torch.__version__,
        "torch_build": _torch_build(torch, parallel),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": _threads(torch, parallel),
        "device_names": names,
    }


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Spell a record as ``{dotted key: text}``, a list as its items joined by ``"; "``.

    >>> from conformance.report.environment import flatten
    >>> flatten({"torch": "2.13.0", "threads": {"torch": 2, "variables": {}}, "simd": ["X86_V2", "X86_V3"]})
    {'torch': '2.13.0', 'threads.torch': '2', 'simd': 'X86_V2; X86_V3'}
    """
    flat: dict[str, str] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = "; ".join(map(str, value))
        else:
            flat[name] = str(value)
    return flat


def unrecorded(record: dict[str, Any]) -> list[str]:
    """Return the version 3 fields ``record`` lacks (a result written by schema version 1 or 2)."""
    return [key for key in NEW_IN_VERSION_3 if key not in record]


def differences(baseline: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    """Return ``(key, baseline value, current value)`` for each dotted key whose values differ.

    Keys under a field that one record does not hold at all (:func:`unrecorded`)
    are left out: that field was not recorded, not changed.

    >>> from conformance.report.environment import differences
    >>> differences({"torch": "2.13.0", "numpy": "2.4.6"}, {"torch": "2.14.1", "numpy": "2.4.6", "threads": {}})
    [('torch', '2.13.0', '2.14.1')]
    """
    skip = {key for key in NEW_IN_VERSION_3 if (key in baseline) != (key in current)}
    a = {k: v for k, v in flatten(baseline).items() if k.split(".")[0] not in skip}
    b = {k: v for k, v in flatten(current).items() if k.split(".")[0] not in skip}
    return [(key, a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
