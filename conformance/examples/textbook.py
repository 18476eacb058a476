r"""The textbook RMSprop, as the seed document writes it and as early Lucid releases computed it.

.. math::

    E[g^2]_t = \alpha E[g^2]_{t-1} + (1-\alpha) g_t^2, \qquad
    v_t = \mu v_{t-1} + \frac{\gamma\, g_t}{\sqrt{E[g^2]_t + \epsilon}}, \qquad
    \theta_t = \theta_{t-1} - v_t

(without momentum :math:`\theta_t = \theta_{t-1} - \gamma g_t / \sqrt{E[g^2]_t + \epsilon}`;
centered: :math:`E[g^2]_t - E[g]_t^2` under the root).  Two departures from
``torch.optim.RMSprop``: epsilon *inside* the square root, which changes the
update by a relative :math:`\approx \epsilon / (2 E[g^2])` for large gradients
and completely for gradients near :math:`\sqrt\epsilon` (1e-4 at the default
1e-8) and below; and the learning rate *inside* the momentum buffer, which
gives the same trajectory while the learning rate is constant but a buffer ``lr``
times torch's, so it cannot be exchanged with torch's state.

An example candidate for the drift report::

    python -m conformance run --optimizer conformance.examples.textbook:TextbookRMSprop
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

import lucid.optim

__all__ = ["TextbookRMSprop"]


class TextbookRMSprop(lucid.optim.RMSprop):
    """RMSprop with epsilon inside the square root and the learning rate inside the momentum buffer.

    Same constructor, state layout and validation as :class:`lucid.optim.RMSprop`;
    only :meth:`step` differs.  Real parameters only, as it declares to the harness
    (``conformance_support``), so complex cases are listed as not supported.
    """

    conformance_support: ClassVar[dict[str, bool]] = {"complex": False}

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter whose ``.grad`` is not None with the textbook formula."""
        loss = None
        if closure is not None:
            with lucid.enable_grad():  # as torch: the closure recomputes the gradients
                loss = closure()
        for group in self.param_groups:  # refuse a gradient torch would refuse, before anything changes
            for param in group["params"]:
                grad = param.grad
                if grad is not None and (np.shape(grad), np.asarray(grad).dtype) != (param.shape, param.dtype):
                    raise ValueError(f"a {np.asarray(grad).dtype} gradient of shape {np.shape(grad)} for {param!r}")
        with np.errstate(all="ignore"):  # NaN and Inf propagate silently, as in torch
            self._textbook_step()
        return loss

    def _textbook_step(self) -> None:
        """Apply the textbook update to every parameter with a gradient (the gradients already checked)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if np.iscomplexobj(param.data):
                    raise TypeError("TextbookRMSprop handles real parameters only")
                cast = param.data.dtype.type  # keep float32 in float32 (NEP 50)
                state = self._state_for(param, group)
                state["step"] += 1.0
                g = -param.grad if group["maximize"] else param.grad
                if group["weight_decay"] != 0:
                    g = g + cast(group["weight_decay"]) * param.data
                square_avg = state["square_avg"]
                square_avg *= cast(group["alpha"])
                square_avg += cast(1 - group["alpha"]) * g * g
                mean_square = square_avg
                if group["centered"]:
                    grad_avg = state["grad_avg"]
                    grad_avg *= cast(group["alpha"])
                    grad_avg += cast(1 - group["alpha"]) * g
                    mean_square = square_avg - grad_avg * grad_avg
                step = cast(group["lr"]) * g / np.sqrt(mean_square + cast(group["eps"]))
                if group["momentum"] > 0:
                    buf = state["momentum_buffer"]
                    buf *= cast(group["momentum"])
                    buf += step
                    step = buf
                param.data -= step
