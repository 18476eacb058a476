"""Conformance harness: drives Lucid's RMSprop and torch's through the same steps.

Importing this package imports torch.
"""
