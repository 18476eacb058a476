"""The conformance suite's fixture (helpers live in ``gating.py``)."""

from gating import count_examples

__all__ = ["count_examples"]

#: A candidate module that fails to import on purpose (for the worker's tests): not a test module.
collect_ignore = ["needs_a_missing_module.py"]
