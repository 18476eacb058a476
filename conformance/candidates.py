"""Load an optimizer class under test from an import path ``package.module:Class``.

A candidate has RMSprop's constructor (``params, lr, alpha, eps, weight_decay,
momentum, centered`` and optionally ``maximize``) and Lucid's Optimizer
interface: ``param_groups``, ``state``, ``step()``, ``state_dict()`` and
``load_state_dict()``, with NumPy arrays as state and Lucid parameters.
"""

from __future__ import annotations

import importlib

__all__ = ["DEFAULT_CANDIDATE", "REQUIRED_ATTRIBUTES", "load_candidate"]

#: The candidate every command checks unless ``--optimizer`` names another.
DEFAULT_CANDIDATE = "lucid.optim:RMSprop"

REQUIRED_ATTRIBUTES = ("step", "state_dict", "load_state_dict", "zero_grad")


def load_candidate(spec: str) -> type:
    """Import and return the class named by ``spec`` (``"package.module:Class"``).

    Raises
    ------
    ValueError
        If ``spec`` is not of the form ``module:Class``.
    ImportError
        If the module cannot be imported (the original error is chained).
    TypeError
        If the named object is not a class with the Optimizer interface.
    """
    module_name, sep, qualname = spec.partition(":")
    if not sep or not module_name or not qualname:
        raise ValueError(f"candidate must be given as 'package.module:Class', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"cannot import candidate module {module_name!r}: {err}") from err
    obj: object = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ImportError(f"module {module_name!r} has no attribute {qualname!r}") from None
    if not isinstance(obj, type):
        raise TypeError(f"candidate {spec!r} is {type(obj).__name__}, not a class")
    missing = [name for name in REQUIRED_ATTRIBUTES if not callable(getattr(obj, name, None))]
    if missing:
        raise TypeError(f"candidate {spec!r} lacks the Optimizer interface: no {', '.join(missing)}")
    return obj
