"""Independent of the harness: optax's rmsprop (eps_in_sqrt=False) against torch.optim.RMSprop, float64.

With momentum, an lr change at step 25 parts them: optax's trace accumulates lr-scaled updates, torch's
momentum buffer does not.  ``python docs/scripts/verify_optax.py`` (needs jax, optax, torch).
"""

import jax
import numpy as np
import optax
import torch

jax.config.update("jax_enable_x64", True)
rng = np.random.default_rng(0)
p0, grads = rng.standard_normal(1000), [rng.standard_normal(1000) for _ in range(50)]
for momentum, lr_at_25 in [(0.0, 0.02), (0.9, 0.01), (0.9, 0.02)]:
    rmsprop = optax.inject_hyperparams(optax.rmsprop)
    tx = rmsprop(learning_rate=0.01, decay=0.99, eps=1e-8, momentum=momentum or None, eps_in_sqrt=False)
    params = jax.numpy.asarray(p0)
    state = tx.init(params)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.RMSprop([tp], lr=0.01, alpha=0.99, eps=1e-8, momentum=momentum)
    for t, g in enumerate(grads):
        if t == 25:
            state.hyperparams["learning_rate"] = jax.numpy.asarray(lr_at_25)
            opt.param_groups[0]["lr"] = lr_at_25
        updates, state = tx.update(jax.numpy.asarray(g), state, params)
        params = optax.apply_updates(params, updates)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
    ours = tp.detach().numpy()
    rel = np.max(np.abs(np.asarray(params) - ours)) / np.max(np.abs(ours - p0))
    print(f"momentum {momentum}, lr 0.01 -> {lr_at_25} at step 25: max |difference| / max |total update| = {rel:.3g}")
