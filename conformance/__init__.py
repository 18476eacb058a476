"""Conformance harness: drives Lucid's RMSprop and torch's through the same steps.

The package and its command line (:mod:`conformance.cli`) import neither torch
nor NumPy-heavy harness code until a command runs, so ``python -m conformance
--help`` works where only the base package is installed; the harness modules
(:mod:`conformance.checks`, :mod:`conformance.runners`, ...) import torch.
"""
