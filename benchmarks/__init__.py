"""Benchmarks: ``python -m benchmarks.step`` times the RMSprop step against torch."""
