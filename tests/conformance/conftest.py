"""The conformance suite's fixture (helpers live in ``gating.py``)."""

from gating import count_examples

__all__ = ["count_examples"]
