r"""The real lucid-dl (PyPI ``lucid-dl``), which installs as ``lucid``: checked in a worker process.

Its import name is this project's, so it cannot share the harness's process;
it runs under the interpreter of an environment where it is installed
(:mod:`conformance.adapters.worker`)::

    python3.12 -m venv lucid-dl-env
    lucid-dl-env/bin/pip install lucid-dl==2.9.0 "mlx[cpu]"
    python -m conformance check --optimizer conformance.adapters.lucid_dl:rmsprop \\
        --candidate-python lucid-dl-env/bin/python

lucid-dl needs Python 3.12 or newer and imports ``mlx`` (on Linux, ``mlx[cpu]``);
2.9.0 is the newest release that imports on Python 3.12 (2.10.0 and later
need Python 3.14's deferred annotations).  Its ``RMSprop`` has no
``maximize`` and no complex support, so those cases are listed as not
supported rather than judged.
"""

from __future__ import annotations

from conformance.adapters.worker import WorkerSpec
from conformance.candidate import Support

__all__ = ["rmsprop"]

#: ``lucid.optim.RMSprop`` of lucid-dl, run in a worker.
rmsprop = WorkerSpec(
    candidate="lucid.optim:RMSprop",
    name="lucid_dl.optim.RMSprop",
    supports=Support(maximize=False, complex=False, object_api=False),
    install='python3.12 -m venv ENV && ENV/bin/pip install lucid-dl==2.9.0 "mlx[cpu]"',
)
