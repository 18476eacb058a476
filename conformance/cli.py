"""Command line of the conformance harness: ``python -m conformance COMMAND``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from conformance.commands import check, compare, merge, run

__all__ = ["main"]

#: One module per subcommand, each with ``register(subparsers)``.
COMMANDS = (run, compare, merge, check)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m conformance", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))
