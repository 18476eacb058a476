"""Measure how far the textbook RMSprop update is from torch's, against gradient scale.

For each gradient scale ``s`` in 1e-12..1e4 and each dtype, draw gradients of
magnitude ``s`` to ``2s`` with random signs, start from the steady state of a
constant stream (mean square ``v = g**2``, parameter 0) and take one step with
the default hyperparameters on three sides:

* torch: ``torch.optim.RMSprop`` (``eps`` outside the root),
* Lucid: :func:`lucid.optim.functional.rmsprop_update`,
* textbook: ``lr * g / sqrt(v + eps)`` on torch's updated ``v``.

The figure plots the mean relative difference of the textbook update from
torch's, the largest relative difference of Lucid's from torch's, the
difference the algebra predicts, and the unit roundoff of each dtype.

Run ``python docs/scripts/textbook_vs_torch.py [OUTDIR]``; the docs build runs
it into ``docs/_generated/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

from lucid.optim.functional import rmsprop_update

LR, ALPHA, EPS = 1e-2, 0.99, 1e-8  # torch's and Lucid's defaults
SCALES = np.logspace(-12, 4, 33)
SIZE = 1000
FLOOR = 1e-19  # where a difference of exactly 0 is drawn on the log axis


def predicted(g: np.ndarray) -> np.ndarray:
    """Exact relative difference |(r + eps) / sqrt(r^2 + eps) - 1| with r = |g|, in float64."""
    r = np.abs(g.astype(np.float64))
    return np.abs(np.expm1(np.log1p(EPS / r) - 0.5 * np.log1p(EPS / (r * r))))


def measure(dtype: type, scale: float, seed: int) -> tuple[float, float, float]:
    """Return (textbook vs torch mean, Lucid vs torch max, predicted mean) relative differences."""
    rng = np.random.default_rng(seed)
    g = (scale * (1 + rng.random(SIZE)) * rng.choice([-1.0, 1.0], SIZE)).astype(dtype)
    v0 = g * g

    p = torch.nn.Parameter(torch.zeros(SIZE, dtype=torch.from_numpy(g).dtype))
    opt = torch.optim.RMSprop([p], lr=LR, alpha=ALPHA, eps=EPS, foreach=False)
    opt.state[p] = {"step": torch.tensor(0.0), "square_avg": torch.from_numpy(v0.copy())}
    p.grad = torch.from_numpy(g.copy())
    opt.step()
    torch_update = -p.detach().numpy().astype(np.float64)  # exact: the parameter started at 0
    v1 = opt.state[p]["square_avg"].numpy()

    candidate_param, lucid_v = np.zeros(SIZE, dtype), v0.copy()
    rmsprop_update(
        candidate_param, g, lucid_v, None, None,
        lr=LR, alpha=ALPHA, eps=EPS, weight_decay=0.0, momentum=0.0, centered=False, maximize=False,
    )  # fmt: skip
    lucid_update = -candidate_param.astype(np.float64)

    textbook = (dtype(LR) * g / np.sqrt(v1 + dtype(EPS))).astype(np.float64)
    return (
        float(np.mean(np.abs(textbook - torch_update) / np.abs(torch_update))),
        float(np.max(np.abs(lucid_update - torch_update) / np.abs(torch_update))),
        float(np.mean(predicted(g))),
    )


def main(outdir: Path) -> Path:
    """Measure, draw ``textbook_vs_torch.png`` into ``outdir`` and return its path."""
    outdir.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8, 4.8), layout="constrained")
    ax = fig.subplots()
    for dtype, colour, marker in ((np.float32, "tab:blue", "o"), (np.float64, "tab:orange", "s")):
        name = np.dtype(dtype).name
        rows = np.array([measure(dtype, s, i) for i, s in enumerate(SCALES)])
        ax.plot(SCALES, np.maximum(rows[:, 0], FLOOR), marker, color=colour, ms=5,
                label=f"textbook vs torch, {name} (mean)")  # fmt: skip
        ax.plot(SCALES, np.maximum(rows[:, 1], FLOOR), "x", color=colour, ms=6,
                label=f"Lucid vs torch, {name} (max)")  # fmt: skip
        ax.axhline(np.finfo(dtype).eps / 2, color=colour, ls=":", lw=1, label=f"unit roundoff {name}")
        if dtype is np.float64:
            ax.plot(SCALES, rows[:, 2], "-", color="black", lw=1, label="predicted (exact arithmetic)")
    ax.set(
        xscale="log",
        yscale="log",
        ylim=(FLOOR / 3, 3),
        xlabel="gradient magnitude |g| (mean square v = g², eps = 1e-8)",
        ylabel="relative difference of the update",
        title=f"One RMSprop step: eps inside vs outside the root (torch {torch.__version__})",
    )
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    ax.annotate("0 (bit-identical) is drawn here", (SCALES[0], FLOOR), xytext=(0, 6),
                textcoords="offset points", fontsize=8)  # fmt: skip
    path = outdir / "textbook_vs_torch.png"
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/_generated")))
