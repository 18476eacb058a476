"""``python -m conformance``: the command-line entry point."""

import signal

from conformance.cli import main

# Guarded: a worker process of ``check --jobs`` (started by spawning) imports this
# module under another name, and must not run the command again.
if __name__ == "__main__":
    status = main()
    # Ctrl-C while the interpreter shuts down (torch's teardown takes a second) ends the
    # process at once, as interrupted, rather than with a traceback from an exit handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise SystemExit(status)
