"""Neural-network building blocks: :class:`Parameter` and :class:`Module`."""

from lucid.nn.module import Module
from lucid.nn.parameter import Parameter

__all__ = ["Module", "Parameter"]
