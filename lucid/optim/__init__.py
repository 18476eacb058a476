"""Optimizers: the :class:`Optimizer` base and :class:`RMSprop`."""

from lucid.optim.optimizer import Optimizer
from lucid.optim.rmsprop import RMSprop

__all__ = ["Optimizer", "RMSprop"]
