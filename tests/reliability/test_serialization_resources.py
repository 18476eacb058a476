"""lucid.serialization streams: memory beyond the state is bounded, time is proportional to bytes."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import same

from lucid import serialization

MiB = 1 << 20
#: The state saved and loaded in the memory tests: 32 MiB of float64.
STATE_BYTES = 32 * MiB
#: Peak traced memory allowed beyond the state itself, as a fraction of it.
OVERHEAD = 0.2
SMALL_ARRAYS = 20_000
#: CPU time allowed per small array, saving and loading.  Before streaming: about 60 and 200 us (on a shared
#: 2-core machine); after: about 20 and 30 us.
SAVE_PER_ARRAY_S = 40e-6
LOAD_PER_ARRAY_S = 60e-6


def _state(buffer: np.ndarray) -> dict[str, Any]:
    return {"state": {0: {"step": 1.0, "square_avg": buffer}}, "param_groups": [{"lr": 0.1, "params": [0]}]}


def _peak(action: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``action`` under tracemalloc; return its result and the peak traced bytes."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


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
    _, saving = _peak(lambda: serialization.save_state_dict(_state(buffer), path))
    loaded, loading = _peak(lambda: serialization.load_state_dict(path))
    assert same(loaded["state"][0]["square_avg"], np.array(buffer, order="K"))
    assert saving < OVERHEAD * STATE_BYTES, f"saving peaked at {saving / MiB:.1f} MiB"
    assert loading < (1 + OVERHEAD) * STATE_BYTES, f"loading peaked at {loading / MiB:.1f} MiB"


def test_small_arrays_cost_time_in_proportion_to_their_bytes(tmp_path: Path) -> None:
    """20 000 arrays of 10 float64: each saved in under 40 us of CPU time, and loaded in under 60 us."""
    state = {
        "state": {i: {"step": float(i), "square_avg": np.full(10, float(i))} for i in range(SMALL_ARRAYS)},
        "param_groups": [{"lr": 0.1, "params": list(range(SMALL_ARRAYS))}],
    }
    path = tmp_path / "many.npz"
    start = time.process_time()
    serialization.save_state_dict(state, path)
    saving = time.process_time() - start
    start = time.process_time()
    loaded = serialization.load_state_dict(path)
    loading = time.process_time() - start
    assert same(loaded, state)
    assert saving < SAVE_PER_ARRAY_S * SMALL_ARRAYS, f"saving took {saving / SMALL_ARRAYS * 1e6:.0f} us per array"
    assert loading < LOAD_PER_ARRAY_S * SMALL_ARRAYS, f"loading took {loading / SMALL_ARRAYS * 1e6:.0f} us per array"
