"""Independent of the harness: lucid-dl's RMSprop against torch's formula and the eps-inside-the-root variant.

Run under an interpreter that has lucid-dl (no torch needed): ``ENV/bin/python docs/scripts/verify_lucid_dl.py``.
"""

import numpy as np

from lucid import nn, optim

rng = np.random.default_rng(0)
lr, alpha, eps, steps = 1e-2, 0.99, 1e-8, 50
p0 = rng.standard_normal(1000)
grads = [1e-4 * rng.standard_normal(1000) for _ in range(steps)]  # small gradients: where eps's place matters
p = nn.Parameter(p0.copy())
opt = optim.RMSprop([p], lr=lr, alpha=alpha, eps=eps)
torch_formula, inside = p0.copy(), p0.copy()
v_t, v_i = np.zeros(1000), np.zeros(1000)
for g in grads:
    p.grad = g.copy()
    opt.step()
    v_t = alpha * v_t + (1 - alpha) * g * g
    v_i = alpha * v_i + (1 - alpha) * g * g
    torch_formula -= lr * g / (np.sqrt(v_t) + eps)  # torch: eps added to the root
    inside -= lr * g / np.sqrt(v_i + eps)  # eps inside the root
for name, ref in [("torch's formula", torch_formula), ("eps inside the root", inside)]:
    rel = np.max(np.abs(p.data - ref)) / np.max(np.abs(ref - p0))
    print(f"lucid-dl {name:>20}: max |difference| / max |total update| = {rel:.3g}")
