"""lucid.serialization streams: memory beyond the state is bounded, and arrays are packed, not a zip member each.

Speed is shown by ``python -m benchmarks.serialization``, which prints the
figures (time per array for 1e5 arrays, memory for a 512 MiB state); these
tests check what makes them so, deterministically.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from archives import opened_members, traced_peak
from support import same

from lucid import serialization

MiB = 1 << 20
#: The state saved and loaded in the memory tests: 32 MiB of float64.
STATE_BYTES = 32 * MiB
#: Peak traced memory allowed beyond the state itself, as a fraction of it.
OVERHEAD = 0.2
SMALL_ARRAYS = 20_000


def _state(buffer: np.ndarray) -> dict[str, Any]:
    return {"state": {0: {"step": 1.0, "square_avg": buffer}}, "param_groups": [{"lr": 0.1, "params": [0]}]}


@pytest.mark.parametrize(
    "layout",
    ["contiguous", "fortran", "strided"],
)
def test_saving_and_loading_need_little_memory_beyond_the_state(layout, tmp_path: Path) -> None:
    """Peak traced memory: saving under 0.2x the state, loading under the state plus 0.2x (was about 3x and 2x)."""
    n = STATE_BYTES // 8
    base = np.arange(2 * n, dtype=np.float64)
    buffer = {
        "contiguous": base[:n],
        "fortran": base[:n].reshape(1024, -1).T,
        "strided": base[::2],
    }[layout]
    assert buffer.nbytes == STATE_BYTES
    path = tmp_path / "big.npz"
    _, saving = traced_peak(lambda: serialization.save_state_dict(_state(buffer), path))
    loaded, loading = traced_peak(lambda: serialization.load_state_dict(path))
    assert same(loaded["state"][0]["square_avg"], np.array(buffer, order="K"))
    assert saving < OVERHEAD * STATE_BYTES, f"saving peaked at {saving / MiB:.1f} MiB"
    assert loading < (1 + OVERHEAD) * STATE_BYTES, f"loading peaked at {loading / MiB:.1f} MiB"


def test_small_arrays_cost_no_zip_member_each(tmp_path: Path, monkeypatch) -> None:
    """20 000 small arrays of three dtypes: four zip members, each opened at most twice on loading.

    What costs time in proportion to the arrays, rather than to their bytes, is
    per-member zip work (about 35 us a member in zipfile).  Packed, the arrays
    take one member per dtype; the figures are in ``python -m benchmarks.serialization``.
    """
    dtypes = (np.float64, np.float32, np.complex128)
    state = {
        "state": {
            i: {"step": float(i), "square_avg": np.full(10, float(i), dtypes[i % 3])} for i in range(SMALL_ARRAYS)
        },
        "param_groups": [{"lr": 0.1, "params": list(range(SMALL_ARRAYS))}],
    }
    path = tmp_path / "many.npz"
    serialization.save_state_dict(state, path)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["header.json", "packed/0.npy", "packed/1.npy", "packed/2.npy"]
        header_bytes = zf.getinfo("header.json").file_size
    data_bytes = sum(entry["square_avg"].nbytes for entry in state["state"].values())
    assert path.stat().st_size - header_bytes - data_bytes < 4096  # the zip and .npy headers: nothing per array
    opened = opened_members(monkeypatch)
    loaded = serialization.load_state_dict(path)
    assert same(loaded, state)
    assert sorted(opened) == ["header.json", *sorted(["packed/0.npy", "packed/1.npy", "packed/2.npy"] * 2)]
