"""Save and load optimizer state and model parameters without pickle.

A file is a ``.npz`` archive (a zip, readable by ``numpy.load(path,
allow_pickle=False)``) with one member ``header.json`` and one ``.npy``
member per array.  The header holds everything that is not an array
(hyperparameters, ``step`` counts, parameter names, the layout) as JSON.  The
archive's comment, its last 64 bytes, is the hex SHA-256 of every byte before
it, checked before anything is parsed: a truncated file or any changed byte is
refused.  Nothing is ever unpickled: arrays of Python objects are refused before
NumPy reads them (even in a file whose digest is right), and arrays are read
with ``numpy.lib.format.read_array(..., allow_pickle=False)``.

Writes are atomic: the archive goes to a temporary file in the target's
directory, is flushed and ``fsync``-ed, then renamed over the target with
:func:`os.replace`, and the directory is ``fsync``-ed.  A crash leaves either the
old file or the new one, never a mixture (a stray ``.<name>.*.tmp`` file may
remain).  A truncated, tampered or foreign file is refused with a
``ValueError`` naming the file.

Examples
--------
>>> import numpy as np, os, tempfile, lucid.nn as nn, lucid.optim as optim
>>> from lucid import serialization
>>> w = nn.Parameter(np.ones(3))
>>> opt = optim.RMSprop([w], lr=0.1)
>>> w.grad = np.full(3, 0.5)
>>> opt.step()
>>> path = os.path.join(tempfile.mkdtemp(), "opt.npz")
>>> serialization.save_state_dict(opt.state_dict(), path)
>>> restored = optim.RMSprop([nn.Parameter(np.ones(3))])
>>> restored.load_state_dict(serialization.load_state_dict(path))
>>> restored.param_groups[0]["lr"], restored.state_dict()["state"][0]["step"]
(0.1, 1.0)
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lucid.nn.module import Module
from lucid.optim.optimizer import _describe, split_state_dict
from lucid.tensor import Tensor

__all__ = ["load_parameters", "load_state_dict", "save_parameters", "save_state_dict"]

PathLike = str | os.PathLike[str]

_HEADER = "header.json"
_VERSION = 1
_STATE_FORMAT = "lucid.optimizer_state_dict"
_PARAMETERS_FORMAT = "lucid.parameters"
#: Array kinds a file may hold: bool, signed and unsigned integers, floats, complex.
_ARRAY_KINDS = frozenset("biufc")
#: numpy's own bound on a ``.npy`` header (numpy.lib.format._MAX_HEADER_SIZE).
_MAX_NPY_HEADER = 10_000
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so equal content gives equal bytes
_DIGEST_LENGTH = 64  # hex SHA-256, stored as the zip comment at the very end of the file


# ------------------------------------------------------------------ public API
def save_state_dict(state_dict: Mapping[str, Any], path: PathLike) -> None:
    """Write an optimizer state_dict to ``path`` atomically.

    Parameters
    ----------
    state_dict : dict
        ``{"state": {index: {name: float or ndarray}}, "param_groups": [{...,
        "params": [index, ...]}]}``, as :meth:`lucid.optim.Optimizer.state_dict`
        returns it (or a torch state_dict converted to NumPy).  Group values
        must be JSON scalars (bool, int, float, str or None); state values
        numbers or arrays.
    path : str or os.PathLike
        Target file; replaced atomically if it exists.

    Raises
    ------
    TypeError, KeyError
        If ``state_dict`` does not have that layout; nothing is written then.
    """
    groups, state = split_state_dict(state_dict)
    arrays: list[NDArray[Any]] = []
    json_groups = []
    for gi, group in enumerate(groups):
        where = f"state_dict['param_groups'][{gi}]"
        if not isinstance(group, Mapping):
            raise TypeError(f"{where} must be a dict, got {_describe(group)}")
        packed = {}
        for key, value in group.items():
            if key == "params":
                packed[key] = [_json_index(i, f"{where}['params']") for i in value]
            else:
                packed[_json_key(key, where)] = _json_scalar(value, f"{where}[{key!r}]")
        json_groups.append(packed)
    json_state = []
    for index, entry in state.items():
        where = f"state_dict['state'][{index!r}]"
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where} must be a dict, got {_describe(entry)}")
        values: dict[str, dict[str, Any]] = {}  # in the entry's order: {"array": member} or {"scalar": value}
        for key, value in entry.items():
            name = _json_key(key, where)
            if isinstance(value, np.ndarray):
                values[name] = {"array": len(arrays)}
                arrays.append(_checked_array(value, f"{where}[{key!r}]"))
            else:
                values[name] = {"scalar": _json_scalar(value, f"{where}[{key!r}]")}
        json_state.append({"index": _json_index(index, where), "values": values})
    header = {"format": _STATE_FORMAT, "version": _VERSION, "param_groups": json_groups, "state": json_state}
    _write_archive(path, header, arrays)


def load_state_dict(path: PathLike) -> dict[str, Any]:
    """Read a state_dict written by :func:`save_state_dict`.

    Returns
    -------
    dict
        The state_dict, arrays bit for bit as saved; pass it to
        :meth:`lucid.optim.Optimizer.load_state_dict`, which validates it.

    Raises
    ------
    ValueError
        If the file is truncated, tampered with, not such a file, or holds
        Python objects.  The message names the file.
    """
    header, arrays = _read_archive(path, _STATE_FORMAT)
    try:
        groups = [dict(g) for g in header["param_groups"]]
        state: dict[int, dict[str, Any]] = {}
        for entry in header["state"]:
            state[int(entry["index"])] = {
                key: arrays[value["array"]] if "array" in value else value["scalar"]
                for key, value in entry["values"].items()
            }
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
        raise ValueError(f"{os.fspath(path)!r}: malformed optimizer state header ({err!r})") from None
    return {"state": state, "param_groups": groups}


def save_parameters(
    params: Module | Mapping[str, Tensor | NDArray[Any]] | Iterable[tuple[str, Tensor | NDArray[Any]]],
    path: PathLike,
) -> None:
    """Write named parameter values to ``path`` atomically.

    Parameters
    ----------
    params : Module, dict or iterable of (name, Tensor or ndarray)
        A module (its :meth:`~lucid.nn.Module.named_parameters`), or names
        mapped to tensors or arrays.
    path : str or os.PathLike
        Target file; replaced atomically if it exists.
    """
    named = _named_arrays(params)
    header = {"format": _PARAMETERS_FORMAT, "version": _VERSION, "names": [name for name, _ in named]}
    _write_archive(path, header, [array for _, array in named])


def load_parameters(path: PathLike, into: Module | None = None) -> dict[str, NDArray[Any]]:
    """Read parameters written by :func:`save_parameters`.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    into : Module, optional
        Copy the values into this module's parameters, in place.  Names,
        shapes and dtypes must match exactly; everything is checked before
        anything is copied, so a mismatch changes nothing.

    Returns
    -------
    dict
        Name to array, in saved order.

    Raises
    ------
    ValueError
        Bad file (see :func:`load_state_dict`), or names, shapes or dtypes
        that do not match ``into``.
    """
    header, arrays = _read_archive(path, _PARAMETERS_FORMAT)
    names = header.get("names")
    if not isinstance(names, list) or len(names) != len(arrays) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{os.fspath(path)!r}: malformed parameter header")
    loaded = dict(zip(names, arrays))
    if len(loaded) != len(names):
        raise ValueError(f"{os.fspath(path)!r}: a parameter name appears twice")
    if into is not None:
        targets = dict(into.named_parameters())
        if set(targets) != set(loaded):
            raise ValueError(
                f"{os.fspath(path)!r} does not match the module: missing {sorted(set(targets) - set(loaded))}, "
                f"unexpected {sorted(set(loaded) - set(targets))}"
            )
        for name, param in targets.items():
            value = loaded[name]
            if (value.shape, value.dtype) != (param.shape, param.dtype):
                raise ValueError(
                    f"{os.fspath(path)!r}: {name!r} is {_describe(value)}, the module's parameter is "
                    f"{_describe(param.data)}"
                )
        for name, param in targets.items():
            param.data[...] = loaded[name]
    return loaded


# ------------------------------------------------------------ JSON conversion
def _json_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{where}: keys must be strings, got {_describe(key)}")
    return key


def _json_index(index: Any, where: str) -> int:
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{where}: parameter indices must be integers, got {_describe(index)}")
    return int(index)


def _json_scalar(value: Any, where: str) -> bool | int | float | str | None:
    """Return ``value`` as a JSON scalar that reads back equal, or raise ``TypeError``."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"{where}: cannot be saved as JSON: {_describe(value)}")


def _checked_array(value: NDArray[Any], where: str) -> NDArray[Any]:
    if value.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(f"{where}: dtype {value.dtype} cannot be saved (only numbers, never objects)")
    return value


def _named_arrays(params: Any) -> list[tuple[str, NDArray[Any]]]:
    if isinstance(params, Module):
        items = list(params.named_parameters())
    elif isinstance(params, Mapping):
        items = list(params.items())
    else:
        items = list(params)
    named = []
    for i, item in enumerate(items):
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"params[{i}] must be a (name, Tensor or ndarray) pair, got {_describe(item)}")
        name, value = item
        array = value.data if isinstance(value, Tensor) else value
        if not isinstance(array, np.ndarray):
            raise TypeError(f"parameter {name!r} must be a Tensor or ndarray, got {_describe(value)}")
        named.append((name, _checked_array(array, f"parameter {name!r}")))
    if len({name for name, _ in named}) != len(named):
        raise ValueError("parameter names must be distinct")
    return named


# ---------------------------------------------------------------- the archive
def _member(i: int) -> str:
    return f"arrays/{i}.npy"


def _seal(archive: bytes) -> bytes:
    """Replace the archive's 64-byte comment by the SHA-256 of everything before it."""
    body = archive[:-_DIGEST_LENGTH]
    return body + hashlib.sha256(body).hexdigest().encode("ascii")


def _unseal(data: bytes) -> None:
    """Check the digest :func:`_seal` wrote; raise :class:`_RefusedError` otherwise."""
    if len(data) < _DIGEST_LENGTH + 22:  # 22: the zip's end-of-central-directory record
        raise _RefusedError(f"only {len(data)} bytes: truncated, or not a Lucid file")
    body, digest = data[:-_DIGEST_LENGTH], data[-_DIGEST_LENGTH:]
    if hashlib.sha256(body).hexdigest().encode("ascii") != digest:
        raise _RefusedError("SHA-256 mismatch: the file is truncated, or was modified after it was written")


def _npy_bytes(array: NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def _write_archive(path: PathLike, header: dict[str, Any], arrays: list[NDArray[Any]]) -> None:
    header = {**header, "arrays": len(arrays)}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(zipfile.ZipInfo(_HEADER, _ZIP_DATE), json.dumps(header, allow_nan=True))
        for i, array in enumerate(arrays):
            zf.writestr(zipfile.ZipInfo(_member(i), _ZIP_DATE), _npy_bytes(array))
        zf.comment = b"0" * _DIGEST_LENGTH
    _atomic_write(os.fspath(path), _seal(archive.getvalue()))


def _write_all(f: Any, data: bytes) -> None:
    """Write ``data`` in chunks (one place a crash test can interrupt)."""
    view = memoryview(data)
    for start in range(0, len(view), 1 << 20):
        f.write(view[start : start + (1 << 20)])


def _atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` so that a crash leaves the old file or the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data)
            f.flush()
            os.fsync(f.fileno())
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX; Windows cannot open a directory, and needs not)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read_archive(path: PathLike, expected_format: str) -> tuple[dict[str, Any], list[NDArray[Any]]]:
    name = os.fspath(path)
    with open(name, "rb") as f:
        data = f.read()
    try:
        return _parse_archive(data, expected_format)
    except _RefusedError as err:
        raise ValueError(f"{name!r} was refused: {err}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, UnicodeDecodeError, ValueError, OSError) as err:
        raise ValueError(f"{name!r} is damaged or not a Lucid file ({type(err).__name__}: {err})") from None


class _RefusedError(Exception):
    """A file that parsed but must not be used."""


def _parse_archive(data: bytes, expected_format: str) -> tuple[dict[str, Any], list[NDArray[Any]]]:
    _unseal(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():  # Lucid writes stored members only: nothing to inflate
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise _RefusedError(f"member {info.filename!r} is compressed; Lucid writes stored members only")
        bad = zf.testzip()  # every member's CRC, before anything is parsed
        if bad is not None:
            raise _RefusedError(f"member {bad!r} fails its CRC check")
        header = json.loads(zf.read(_HEADER))
        if not isinstance(header, dict) or header.get("format") != expected_format:
            found = header.get("format") if isinstance(header, dict) else None
            raise _RefusedError(f"expected a {expected_format!r} file, found format {found!r}")
        if header.get("version") != _VERSION:
            raise _RefusedError(f"unsupported version {header.get('version')!r} (this Lucid reads {_VERSION})")
        count = header.get("arrays")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _RefusedError(f"malformed array count {count!r}")
        expected = {_HEADER} | {_member(i) for i in range(count)}
        present = set(zf.namelist())
        if present != expected or len(zf.namelist()) != len(expected):
            raise _RefusedError(f"members {sorted(present ^ expected)} are unexpected or missing")
        return header, [_parse_npy(zf.read(_member(i)), _member(i)) for i in range(count)]


def _parse_npy(data: bytes, member: str) -> NDArray[Any]:
    """Parse one ``.npy`` member, refusing object arrays and size mismatches before reading."""
    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fp, max_header_size=_MAX_NPY_HEADER)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fp, max_header_size=_MAX_NPY_HEADER)
    else:
        raise _RefusedError(f"{member}: unsupported .npy version {version}")
    if dtype.hasobject or dtype.kind not in _ARRAY_KINDS:
        raise _RefusedError(f"{member}: dtype {dtype} holds Python objects or is not numeric (pickle is never loaded)")
    if len(data) - fp.tell() != math.prod(shape) * dtype.itemsize:
        raise _RefusedError(f"{member}: {len(data) - fp.tell()} data bytes for shape {shape} and dtype {dtype}")
    fp.seek(0)
    return np.lib.format.read_array(fp, allow_pickle=False)
