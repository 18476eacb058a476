"""Example candidates for ``python -m conformance run --optimizer module:Class``."""
