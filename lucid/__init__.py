"""Lucid: a NumPy-only deep-learning slice whose RMSprop computes what torch's does.

``import lucid`` never imports torch.
"""

from lucid import nn, optim
from lucid._grad_mode import enable_grad, is_grad_enabled, no_grad
from lucid.nn.parameter import Parameter
from lucid.tensor import Tensor, tensor, zeros_like

__version__ = "0.1.0"

__all__ = [
    "Parameter",
    "Tensor",
    "__version__",
    "enable_grad",
    "is_grad_enabled",
    "nn",
    "no_grad",
    "optim",
    "tensor",
    "zeros_like",
]
