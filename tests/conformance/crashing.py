"""A candidate whose step kills its process (as a crash in native code would), for the ``--jobs`` tests."""

from __future__ import annotations

import os
from typing import Any

from lucid.optim import RMSprop


class DiesInStep(RMSprop):
    """Lucid's RMSprop, except that ``step`` ends the process at once, with no Python exception."""

    def step(self, closure: Any = None) -> Any:
        os._exit(70)
