"""Subcommands of ``python -m conformance``; each module defines ``register(subparsers)``."""
