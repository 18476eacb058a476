"""``python -m conformance``: the command-line entry point."""

from conformance.cli import main

raise SystemExit(main())
