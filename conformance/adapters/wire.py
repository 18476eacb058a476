"""The worker that runs a candidate under another interpreter, and the message format both ends speak.

This file imports nothing but the standard library and NumPy, and is run by
path (``PYTHON wire.py``) so that the worker's ``sys.path`` holds the other
environment's packages and not this project: a candidate whose import name is
``lucid`` (lucid-dl) gets its own ``lucid``, not this project's.  The harness
side (:mod:`conformance.adapters.worker`) imports the same functions for its
end of the pipe.

A message is one line of JSON followed by the NumPy arrays it refers to, each
in ``.npy`` format (``numpy.lib.format``; never pickled: ``allow_pickle=False``
on both ends), their sizes in bytes listed in the line.  In the JSON, an array
is ``{"$npy": k}`` (the ``k``-th array after the line) and a dict whose keys
are not all strings is ``{"$items": [[key, value], ...]}``.

Requests carry ``op`` and the handle of the candidate they address; the
worker answers each with ``{"ok": true, "result": ...}`` or, when the
candidate raised, ``{"ok": false, "type": ..., "message": ..., "traceback": ...}``.
Its own standard output is the pipe, so anything the candidate prints goes to
standard error instead.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import io
import json
import os
import platform
import sys
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "decode",
    "distribution_version",
    "encode",
    "optional_off",
    "parameter_in_traceback",
    "read_message",
    "serve",
    "takes_keyword",
    "write_message",
]


def encode(obj: Any, arrays: list[np.ndarray]) -> Any:
    """Return ``obj`` as JSON-able data, its arrays appended to ``arrays`` and replaced by references."""
    if isinstance(obj, np.ndarray):
        arrays.append(obj)
        return {"$npy": len(arrays) - 1}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode(v, arrays) for k, v in obj.items()}
        return {"$items": [[encode(k, arrays), encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [encode(v, arrays) for v in obj]
    return obj


def decode(data: Any, arrays: Sequence[np.ndarray]) -> Any:
    """Invert :func:`encode`: rebuild the dicts, lists and arrays."""
    if isinstance(data, dict):
        if set(data) == {"$npy"}:
            return arrays[data["$npy"]]
        if set(data) == {"$items"}:
            return {decode(k, arrays): decode(v, arrays) for k, v in data["$items"]}
        return {k: decode(v, arrays) for k, v in data.items()}
    if isinstance(data, list):
        return [decode(v, arrays) for v in data]
    return data


def write_message(stream: BinaryIO, message: dict[str, Any]) -> None:
    """Write ``message`` (arrays anywhere inside it) to ``stream`` and flush."""
    arrays: list[np.ndarray] = []
    body = encode(message, arrays)
    blobs = []
    for array in arrays:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
        blobs.append(buffer.getvalue())
    stream.write(json.dumps({"body": body, "sizes": [len(b) for b in blobs]}).encode() + b"\n")
    for blob in blobs:
        stream.write(blob)
    stream.flush()


def read_message(read_line: Callable[[], bytes], read_exactly: Callable[[int], bytes]) -> dict[str, Any] | None:
    """Read one message with these two readers; None at end of input (the other end closed the pipe)."""
    line = read_line()
    if not line:
        return None
    head = json.loads(line)
    arrays = [np.lib.format.read_array(io.BytesIO(read_exactly(n)), allow_pickle=False) for n in head["sizes"]]
    return decode(head["body"], arrays)


def parameter_in_traceback(tb: TracebackType | None, params: Sequence[Any]) -> int | None:
    """Return the index in ``params`` of the parameter the candidate's code held when it raised, if it held one.

    Looks through the frames of ``tb`` (the candidate's part of a traceback:
    the caller passes the frames below its own), innermost first, for a local
    variable that *is* one of ``params`` (``param``, ``p``: whatever the loop
    over the groups calls it); None when no frame holds one.
    """
    ids = {id(p): i for i, p in enumerate(params)}
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            if id(value) in ids and value is params[ids[id(value)]]:
                return ids[id(value)]
    return None


def takes_keyword(cls: Any, name: str) -> bool:
    """Whether ``cls``'s constructor accepts keyword ``name`` (or any keyword); True without a signature to read."""
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return True
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def optional_off(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return ``kwargs`` without ``maximize`` where it is off: it is optional, and many optimizers lack it."""
    return {k: v for k, v in kwargs.items() if k != "maximize" or v}


def distribution_version(module_name: str) -> str:
    """Return the installed version of the distribution that provides ``module_name`` ("unknown" if none says).

    Uses the package metadata (:func:`importlib.metadata.packages_distributions`),
    never the module's own ``__version__``, which a module may lack.
    """
    top = module_name.partition(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


class _Driven:
    """One optimizer object of the worker's environment over its own parameters.

    Parameters are the library's own: ``torch.nn.Parameter`` for a
    ``torch.optim.Optimizer`` subclass, else the ``nn.Parameter`` of the
    package the class (or a base class) comes from (Lucid's interface: ``.data`` and ``.grad``
    are NumPy arrays, ``opt.state[p]`` holds NumPy buffers).
    """

    def __init__(self, cls: type, buffers: Sequence[str], params0: list[np.ndarray], groups: list[dict[str, Any]]):
        torch = sys.modules.get("torch")
        self.torch = torch if torch is not None and issubclass(cls, torch.optim.Optimizer) else None
        self.buffer_names = tuple(buffers)
        make = self.torch.nn.Parameter if self.torch is not None else _parameter_class(cls)
        self.params = [make(self._native(np.array(p, copy=True))) for p in params0]
        self.dtypes = [np.asarray(p).dtype for p in params0]
        # The first group through the constructor, the others through add_param_group: an optimizer
        # that takes no list of group dicts (lucid-dl's) still gets torch's groups.
        first, *rest = groups
        self.opt = cls([self.params[i] for i in first["params"]], **optional_off(first["hyper"]))
        for g in rest:
            self.opt.add_param_group({"params": [self.params[i] for i in g["params"]], **optional_off(g["hyper"])})

    def _native(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(array) if self.torch is not None else array

    def _array(self, value: Any) -> np.ndarray:
        if self.torch is not None and isinstance(value, self.torch.Tensor):
            return value.detach().cpu().numpy().copy()
        return np.array(value, copy=True)

    def step(self, grads: list[np.ndarray | None]) -> None:
        for p, g, dtype in zip(self.params, grads, self.dtypes):
            p.grad = None if g is None else self._native(np.array(g, dtype=dtype, copy=True))
        try:
            self.opt.step()
        except Exception as err:  # which parameter: from the candidate's frames, not this one's loop variable
            err.parameter = parameter_in_traceback(err.__traceback__.tb_next, self.params)  # type: ignore[union-attr,attr-defined]
            raise

    def param(self, index: int) -> np.ndarray:
        return self._array(self.params[index].data)

    def buffers(self, index: int) -> dict[str, np.ndarray]:
        state = self.opt.state.get(self.params[index]) or {}
        return {k: self._array(state[k]) for k in self.buffer_names if k in state}

    def write(self, index: int, param: np.ndarray, buffers: dict[str, np.ndarray], step: float | None) -> None:
        p = self.params[index]
        p.data[...] = self._native(np.array(param, copy=True))
        state = self.opt.state.get(p) or {}
        for key, value in buffers.items():
            if key in state:
                state[key][...] = self._native(np.array(value, copy=True))
        if step is not None and "step" in state:
            counter = state["step"]
            if self.torch is not None and isinstance(counter, self.torch.Tensor):
                counter.fill_(step)
            elif isinstance(counter, np.ndarray):
                counter[...] = step
            else:  # a Python or NumPy number: keep its type (lucid-dl counts in int)
                state["step"] = type(counter)(step)

    def set_hyper(self, group: int, name: str, value: float) -> None:
        self.opt.param_groups[group][name] = value

    def _tree(self, obj: Any, to_native: bool) -> Any:
        if isinstance(obj, dict):
            return {k: self._tree(v, to_native) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._tree(v, to_native) for v in obj)
        if to_native:
            return self._native(np.array(obj, copy=True)) if isinstance(obj, np.ndarray) else obj
        if isinstance(obj, np.ndarray) or (self.torch is not None and isinstance(obj, self.torch.Tensor)):
            return self._array(obj)
        return obj

    def state_dict(self) -> dict[str, Any]:
        sd = self._tree(self.opt.state_dict(), to_native=False)
        for st in sd.get("state", {}).values():
            if "step" in st:
                st["step"] = float(np.asarray(st["step"]))
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.opt.load_state_dict(self._tree(state_dict, to_native=True))


def _parameter_class(cls: type) -> Any:
    """Return ``nn.Parameter`` of the library ``cls`` comes from: the first class in its MRO whose package has one."""
    for klass in cls.__mro__:
        try:
            return importlib.import_module(klass.__module__.partition(".")[0] + ".nn").Parameter
        except (ImportError, AttributeError):
            continue
    raise TypeError(f"{cls.__module__}.{cls.__qualname__} comes from no library with an nn.Parameter")


class _NotFoundError(LookupError):
    """The worker's environment has no such candidate (a usage error, not the candidate failing)."""


def _hello(spec: str, required: Sequence[str]) -> tuple[type, dict[str, Any]]:
    module_name, _, qualname = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and module_name.startswith(err.name):  # the named module itself is not there
            raise _NotFoundError(f"no module {module_name!r} ({err})") from err
        raise  # a module it imports is missing: the candidate's own failure
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _NotFoundError(f"module {module_name!r} has no attribute {qualname!r}") from None
    if not isinstance(obj, type):
        raise _NotFoundError(f"{spec} is a {type(obj).__name__}, not an optimizer class")
    missing = [name for name in required if not callable(getattr(obj, name, None))]
    if missing:
        raise TypeError(f"{spec} lacks the Optimizer interface: no {', '.join(missing)}")
    info = {
        "version": distribution_version(module_name),
        "maximize": takes_keyword(obj, "maximize"),
        "python": platform.python_version(),
        "executable": sys.executable,
        "numpy": np.__version__,
    }
    return obj, info


def _failure(err: Exception) -> dict[str, Any]:
    """Return the reply that reports ``err``: its type, message, the line that raised it, the parameter it names."""
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ is not None else None
    return {
        "ok": False,
        "usage": isinstance(err, _NotFoundError),
        "parameter": getattr(err, "parameter", None),
        "type": type(err).__name__,
        "message": str(err),
        "where": f"{frame.filename}:{frame.lineno} in {frame.name}: {frame.line}" if frame else "?",
        "traceback": traceback.format_exc(),
    }


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer requests from ``stdin`` on ``stdout`` until the pipe closes."""
    cls: type | None = None
    buffers: Sequence[str] = ()
    driven: dict[int, _Driven] = {}
    next_handle = 0

    def read_exactly(n: int) -> bytes:
        data = stdin.read(n)
        if len(data) != n:
            raise EOFError(f"the pipe closed {n - len(data)} bytes into an array")
        return data

    while (request := read_message(stdin.readline, read_exactly)) is not None:
        for handle in request.get("drop", ()):
            driven.pop(handle, None)
        op = request["op"]
        try:
            if op == "hello":
                cls, info = _hello(request["candidate"], request["required"])
                buffers = request["buffers"]
                result: Any = info
            elif op == "create":
                assert cls is not None, "create before hello"
                driven[next_handle] = _Driven(cls, buffers, request["params0"], request["groups"])
                result, next_handle = next_handle, next_handle + 1
            else:
                result = getattr(driven[request["handle"]], op)(*request["args"])
            reply = {"ok": True, "result": result}
        except Exception as err:  # the candidate's: reported to the harness, which names the step and parameters
            reply = _failure(err)
        try:
            write_message(stdout, reply)  # encodes everything before it writes a byte
        except (TypeError, ValueError) as err:  # a result the format cannot carry (a set, a foreign object)
            write_message(stdout, _failure(TypeError(f"{op} returned what the pipe cannot carry: {err}")))


def _own_pipes() -> tuple[BinaryIO, BinaryIO]:
    """Take file descriptors 0 and 1 for the protocol, and give the candidate harmless ones in their place.

    Standard input becomes ``/dev/null``; standard output (Python's, C's
    ``printf``, a child process's) goes to standard error, so nothing the
    candidate writes can enter the pipe.
    """
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull)
    sys.stdout = sys.stderr
    return requests, replies


if __name__ == "__main__":
    # Run by path, Python put this file's folder first on sys.path: this project's
    # adapters (optax.py, ...) must not shadow the candidate's packages.
    if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
        del sys.path[0]
    serve(*_own_pipes())
