"""Choosing the step's accelerator: numba where it runs, NumPy otherwise, said and switchable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from lucid.nn import Parameter
from lucid.optim import RMSprop
from lucid.optim._kernel import ACCELERATOR_ENV, resolve_accelerator

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in ``cwd`` (first on its path, then this checkout)."""
    environ = {k: v for k, v in os.environ.items() if k != ACCELERATOR_ENV} | {"PYTHONPATH": str(ROOT)} | env
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environ, cwd=cwd, timeout=120
    )


def test_import_lucid_and_a_numpy_step_never_import_numba() -> None:
    result = _python(
        """
        import sys, numpy as np, lucid
        from lucid.optim import RMSprop
        assert "numba" not in sys.modules, "import lucid imported numba"
        p = lucid.nn.Parameter(np.ones(3)); opt = RMSprop([p]); opt.accelerator = "numpy"
        p.grad = np.ones(3); opt.step()
        print("numba" in sys.modules, opt.backend)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False numpy (accelerator='numpy')"


_WITHOUT_NUMBA = """
import sys
sys.modules["numba"] = None  # as if numba were not installed
import numpy as np
from lucid.nn import Parameter
from lucid.optim import RMSprop
p = Parameter(np.ones(4)); opt = RMSprop([p]); p.grad = np.full(4, 0.5)
"""


def test_without_numba_auto_takes_numpy_and_says_how_to_get_the_kernel() -> None:
    result = _python(_WITHOUT_NUMBA + "\nopt.step(); print(opt.backend); print(p.data[0])\n")
    assert result.returncode == 0, result.stderr
    backend, value = result.stdout.strip().splitlines()
    assert backend.startswith("numpy (LUCID_ACCELERATOR='auto' and numba is not installed")
    assert "pip install 'lucid-rmsprop[fast]'" in backend
    assert float(value) < 1.0  # the NumPy step ran


def test_without_numba_insisting_on_it_refuses_the_step_and_changes_nothing() -> None:
    code = (
        _WITHOUT_NUMBA
        + """
opt.accelerator = "numba"
try:
    opt.step()
except RuntimeError as err:
    print(err)
print(p.data.tolist(), dict(opt.state))
"""
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    message, after = result.stdout.strip().splitlines()
    assert message.startswith("accelerator='numba', but the numba kernel cannot run: numba is not installed")
    assert after == "[1.0, 1.0, 1.0, 1.0] {}"


@pytest.mark.parametrize("where", ["attribute", "environment"])
def test_unknown_accelerator_is_refused_by_name_and_changes_nothing(where: str, monkeypatch) -> None:
    p = Parameter(np.ones(3, np.float32))
    opt = RMSprop([p])
    p.grad = np.ones(3, np.float32)
    if where == "attribute":
        opt.accelerator = "cuda"
        expected = "accelerator must be one of 'auto', 'numba', 'numpy', got 'cuda'"
    else:
        monkeypatch.setenv(ACCELERATOR_ENV, "fast")
        expected = "LUCID_ACCELERATOR must be one of 'auto', 'numba', 'numpy', got 'fast'"
    with pytest.raises(ValueError, match=expected):
        opt.step()
    assert p.data.tolist() == [1.0, 1.0, 1.0] and opt.state == {}


def test_environment_chooses_when_the_attribute_does_not(monkeypatch) -> None:
    monkeypatch.setenv(ACCELERATOR_ENV, "numpy")
    assert str(resolve_accelerator(None)) == "numpy (LUCID_ACCELERATOR='numpy')"
    assert resolve_accelerator("numpy").reason == "accelerator='numpy'"


def test_the_kernel_runs_and_says_so(accelerator: str) -> None:
    p = Parameter(np.ones(5, np.float32))
    opt = RMSprop([p])
    assert opt.backend.name == accelerator
    assert (opt.backend.kernel is not None) == (accelerator == "numba")
    if accelerator == "numba":
        assert str(opt.backend).startswith("numba (numba ")


@pytest.mark.usefixtures("numba_kernel")
def test_without_a_writable_cache_the_kernel_compiles_in_process(tmp_path: Path) -> None:
    """No writable ``__pycache__`` beside the module and no user cache: compiled per process, and said."""
    copy = tmp_path / "site"
    (copy / "lucid").mkdir(parents=True)
    for source in (ROOT / "lucid").rglob("*.py"):
        target = copy / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    (copy / "lucid" / "optim" / "__pycache__").write_text("a file where numba's cache directory would be")
    code = f"""
        import numpy as np, lucid
        from lucid.optim import RMSprop
        assert lucid.__file__.startswith({str(copy)!r}), lucid.__file__
        p = lucid.nn.Parameter(np.ones(3)); opt = RMSprop([p]); p.grad = np.ones(3); opt.step()
        print(opt.backend)
    """
    result = _python(
        code,
        copy,
        PYTHONPATH=str(copy),
        NUMBA_CACHE_DIR="/dev/null/numba",
        HOME="/dev/null",
        PYTHONDONTWRITEBYTECODE="1",
    )
    assert result.returncode == 0, result.stderr
    assert "numba" in result.stdout and "not cached" in result.stdout


@pytest.mark.usefixtures("numba_kernel")
@pytest.mark.parametrize(
    ("dtype", "shapes", "threads"),
    [
        (np.float32, [(100,)] * 1000, 1),  # 400 KB: a pool thread's hand-over would cost more than it saves
        (np.float64, [((1 << 18) - 1,)], 1),  # one element short of 2 MiB
        (np.float64, [(1 << 18,)], 2),  # 2 MiB
        (np.float32, [(1 << 19,)], 2),
    ],
    ids=["1000x100-float32", "2MiB-less-one-float64", "2MiB-float64", "2MiB-float32"],
)
def test_the_kernel_shares_a_step_among_threads_from_2_mib_on(dtype, shapes, threads, monkeypatch) -> None:
    """The kernel's default thread threshold, counted by the shares it runs (first and replayed steps)."""
    from lucid.optim import _fast

    shares: list[int] = []
    run = _fast._run_kernel
    monkeypatch.setattr(_fast, "_run_kernel", lambda kernel, segments: (shares.append(1), run(kernel, segments)))
    params = [Parameter(np.ones(s, dtype)) for s in shapes]
    opt = RMSprop(params, momentum=0.9)
    opt.accelerator, opt.num_threads = "numba", 2
    for step in range(2):
        for p in params:
            p.grad = np.full(p.data.shape, 0.5, dtype)
        shares.clear()
        opt.step()
        assert len(shares) == threads, f"step {step}"
