"""Save and load optimizer state and model parameters without pickle.

A file is a ``.npz`` archive (a zip, readable by ``numpy.load(path,
allow_pickle=False)``) with one member ``header.json`` and one ``.npy``
member per array, all stored uncompressed.  The header holds everything that
is not an array (hyperparameters, ``step`` counts, parameter names, the
layout) as JSON.  The archive's comment, its last 64 bytes, is the hex SHA-256
of every byte before it, checked before anything is parsed: a truncated file or
any changed byte is refused.  The digest detects damage, not tampering: anyone
can recompute it, so a file is trusted no further than its source, and every
file is parsed as hostile anyway.  Nothing is ever unpickled: arrays of Python
objects are refused before NumPy reads them (even in a file whose digest is
right), and ``.npy`` headers are parsed by NumPy's literal parser.

Arrays stream: saving writes each array's ``.npy`` header and then its buffer
in 1 MiB pieces (a non-contiguous array is copied a piece at a time), hashing
every byte on its way to the file; loading checks the digest reading 1 MiB at a
time, then reads each array straight into a new array of the declared shape.
Memory beyond the state itself stays near 1 MiB, and the time is proportional
to the bytes plus a few microseconds per array.

A loaded file is checked against itself before anything is allocated: the
array count the header claims against the archive's members, each ``.npy``
header's shape and dtype against its member's real size, each member against
the file's bounds.  The header must have exactly the documented layout (indices
are integers >= 0 and distinct, the version an exact integer, no duplicate
keys).  Any malformed file is refused with a ``ValueError`` of bounded length
that names the file and the field.

Writes are atomic: the archive goes to a temporary file in the target's
directory (created with mode ``0o666`` less the umask; a replaced file keeps its
mode), is flushed and ``fsync``-ed, then renamed over the target with
:func:`os.replace`, and the directory is ``fsync``-ed.  A crash leaves either the
old file or the new one, never a mixture (a stray ``.<name>.*.tmp`` file may
remain).

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

import contextlib
import hashlib
import io
import itertools
import json
import math
import os
import secrets
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

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
_STATE_KEYS = frozenset({"format", "version", "arrays", "param_groups", "state"})
_PARAMETERS_KEYS = frozenset({"format", "version", "arrays", "names"})
#: Array kinds a file may hold: bool, signed and unsigned integers, floats, complex.
_ARRAY_KINDS = frozenset("biufc")
#: numpy's own bound on a ``.npy`` header (numpy.lib.format._MAX_HEADER_SIZE).
_MAX_NPY_HEADER = 10_000
_NPY_MAGIC = b"\x93NUMPY"
_DIGEST_LENGTH = 64  # hex SHA-256, stored as the zip comment at the very end of the file
_END_RECORD = 22  # the zip's end-of-central-directory record, without its comment
# What a reader needs of the zip's records (PKWARE APPNOTE 4.3), the fields it skips as padding.
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, name length, extra length
_CENTRAL_READ = struct.Struct("<4s4xHH8xIIHHH8xI")  # signature, flags, method, sizes, lengths, offset
_END = struct.Struct("<4sHHHHIIH")  # end of central directory
_END64 = struct.Struct("<4sQHHIIQQQQ")  # zip64 end of central directory
_LOCATOR = struct.Struct("<4sIQI")  # zip64 end of central directory locator
# What _SealedZip writes (PKWARE APPNOTE 4.3): local and central headers, data descriptors.
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_LOCAL_SIGNATURE, _CENTRAL_SIGNATURE, _DESCRIPTOR_SIGNATURE = 0x04034B50, 0x02014B50, 0x08074B50
_FLAGS = 0x08  # CRC and sizes in a data descriptor after the data
_DOS_DATE = (1 << 5) | 1  # 1980-01-01, time 00:00:00: fixed, so equal content gives equal bytes
_MADE_BY_UNIX = 3 << 8
_ZIP64_LIMIT = (1 << 31) - 1  # beyond it, zip64 fields (the threshold of Python's zipfile)
_CHUNK = 1 << 20  # bytes per read, write and hash update
_PEEK = 1 << 10  # bytes read at once from a member's local header on
_DIRECT = 1 << 16  # writes at least this long go to the file without being gathered
_SCALARS = (bool, int, float, str, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)  # exact types, for the fast paths


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
        numbers or arrays; indices integers >= 0, each listed in one group at
        most.
    path : str or os.PathLike
        Target file; replaced atomically if it exists.

    Raises
    ------
    TypeError, KeyError, ValueError
        If ``state_dict`` does not have that layout (``ValueError``: a negative
        or repeated index); nothing is written then.
    """
    groups, state = split_state_dict(state_dict)
    arrays: list[NDArray[Any]] = []
    json_groups = []
    listed: set[int] = set()
    for gi, group in enumerate(groups):
        where = f"state_dict['param_groups'][{gi}]"
        if not isinstance(group, Mapping):
            raise TypeError(f"{where} must be a dict, got {_describe(group)}")
        packed = {}
        for key, value in group.items():
            if key == "params":
                if not isinstance(value, (list, tuple)):
                    raise TypeError(f"{where}['params'] must be a list, got {_describe(value)}")
                packed[key] = [
                    i if type(i) is int and i >= 0 else _json_index(i, f"{where}['params'][{pi}]")
                    for pi, i in enumerate(value)
                ]
                for pi, i in enumerate(packed[key]):
                    if i in listed:
                        raise ValueError(f"{where}['params'][{pi}]: index {i} is listed twice")
                    listed.add(i)
            else:
                packed[_json_key(key, where)] = _json_scalar(value, f"{where}[{key!r}]")
        json_groups.append(packed)
    json_state = []
    for index, entry in state.items():  # fast paths first: a message is built only for a value that fails
        if not isinstance(entry, Mapping):
            raise TypeError(f"{_entry_name(index)} must be a dict, got {_describe(entry)}")
        values: dict[str, dict[str, Any]] = {}  # in the entry's order: {"array": member} or {"scalar": value}
        for key, value in entry.items():
            if type(key) is not str:
                _json_key(key, _entry_name(index))
            if isinstance(value, np.ndarray):
                if value.dtype.kind not in _ARRAY_KINDS:
                    _checked_array(value, f"{_entry_name(index)}[{key!r}]")
                values[key] = {"array": len(arrays)}
                arrays.append(value)
            elif type(value) in _SCALAR_TYPES:
                values[key] = {"scalar": value}
            else:
                values[key] = {"scalar": _json_scalar(value, f"{_entry_name(index)}[{key!r}]")}
        if type(index) is not int or index < 0:
            index = _json_index(index, _entry_name(index))
        json_state.append({"index": index, "values": values})
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
        If the file is truncated, damaged, not such a file, malformed in any
        field, or holds Python objects.  The message names the file and the
        field, and is of bounded length.
    """
    with _Archive.open(path, _STATE_FORMAT) as archive:
        header = archive.header
        groups = _checked_groups(header["param_groups"])
        entries = _checked_state(header["state"], archive.count)
        state: dict[int, dict[str, Any]] = {}
        for index, values in entries:
            state[index] = {
                key: archive.array(value) if kind == "array" else value for key, (kind, value) in values.items()
            }
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
        shapes and dtypes must match exactly and every parameter's data must be
        a writable ndarray; everything is checked before anything is copied,
        so a mismatch changes nothing.

    Returns
    -------
    dict
        Name to array, in saved order.

    Raises
    ------
    ValueError
        Bad file (see :func:`load_state_dict`), or names, shapes, dtypes or
        read-only parameters that do not fit ``into``.
    """
    name = os.fspath(path)
    with _Archive.open(path, _PARAMETERS_FORMAT) as archive:
        names = _checked_names(archive.header["names"], archive.count)
        loaded = {key: archive.array(i) for i, key in enumerate(names)}
    if into is not None:
        targets = dict(into.named_parameters())
        if set(targets) != set(loaded):
            raise ValueError(
                f"{name!r} does not match the module: missing {_names(set(targets) - set(loaded))}, "
                f"unexpected {_names(set(loaded) - set(targets))}"
            )
        for key, param in targets.items():
            value, data = loaded[key], param.data
            if not isinstance(data, np.ndarray):
                raise ValueError(f"{name!r}: the module's parameter {_brief(key)} holds {_describe(data)}")
            if (value.shape, value.dtype) != (data.shape, data.dtype):
                raise ValueError(
                    f"{name!r}: {_brief(key)} is {_describe(value)}, the module's parameter is {_describe(data)}"
                )
            if not data.flags.writeable:
                raise ValueError(f"{name!r}: the module's parameter {_brief(key)} is read-only; nothing was loaded")
        for key, param in targets.items():
            np.copyto(param.data, loaded[key])
    return loaded


# ------------------------------------------------------------ JSON conversion
def _entry_name(index: Any) -> str:
    return f"state_dict['state'][{_describe(index)}]"


def _json_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"{where}: keys must be strings, got {_describe(key)}")
    return key


def _json_index(index: Any, where: str) -> int:
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise TypeError(f"{where}: parameter indices must be integers, got {_describe(index)}")
    if index < 0:
        raise ValueError(f"{where}: parameter indices must be >= 0, got {_describe(index)}")
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


# ------------------------------------------------------ reading the header
class _RefusedError(Exception):
    """A file that must not be used; the message names the field (the caller adds the file)."""


def _brief(value: Any) -> str:
    """Name a JSON value for a message in at most about 80 characters, whatever its size or depth."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object with {len(value)} keys"
    return _describe(value)


def _names(names: Iterable[str]) -> str:
    """Show a sorted list of names for a message: at most 10 of them, each shortened."""
    ordered = sorted(names)
    shown = ", ".join(_brief(n) for n in ordered[:10])
    return f"[{shown}]" if len(ordered) <= 10 else f"[{shown}, ... ({len(ordered)} in all)]"


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: refuse a key that appears twice in one object."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RefusedError(f"{_HEADER}: duplicate key {_brief(key)}")
            seen.add(key)
    return obj


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _RefusedError(f"{_HEADER}: not UTF-8 text") from None
    try:
        # NaN and Infinity stay allowed: save writes them for non-finite floats, and a float is
        # refused wherever an integer belongs.
        header = json.loads(text, object_pairs_hook=_strict_object)
    except RecursionError:
        raise _RefusedError(f"{_HEADER}: nested too deeply") from None
    except ValueError as err:  # json.JSONDecodeError, or an integer of too many digits
        raise _RefusedError(f"{_HEADER}: not JSON ({str(err)[:80]})") from None
    if not isinstance(header, dict):
        raise _RefusedError(f"{_HEADER}: must be a JSON object, found {_brief(header)}")
    return header


def _exact_int(value: Any, field: str) -> int:
    if type(value) is not int or value < 0:
        raise _RefusedError(f"{field}: must be an integer >= 0, found {_brief(value)}")
    return value


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise _RefusedError(f"{field}: must be a list, found {_brief(value)}")
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _RefusedError(f"{field}: must be an object, found {_brief(value)}")
    return value


def _scalar(value: Any, field: str) -> Any:
    if not isinstance(value, _SCALARS):
        raise _RefusedError(f"{field}: must be a number, string, boolean or null, found {_brief(value)}")
    return value


def _checked_top_level(header: dict[str, Any], expected_format: str) -> None:
    """Format, version and exactly the format's keys (the format first, so a wrong file is named as such)."""
    found = header.get("format")
    if found != expected_format:
        raise _RefusedError(f"expected a {expected_format!r} file, found format {_brief(found)}")
    version = header.get("version")
    if type(version) is not int or version != _VERSION:
        raise _RefusedError(f"version: unsupported version {_brief(version)} (this Lucid reads {_VERSION})")
    keys = _STATE_KEYS if expected_format == _STATE_FORMAT else _PARAMETERS_KEYS
    if set(header) != keys:
        missing, unexpected = _names(keys - set(header)), _names(set(header) - keys)
        raise _RefusedError(f"{_HEADER}: keys missing {missing}, unexpected {unexpected}")


def _checked_groups(groups: Any) -> list[dict[str, Any]]:
    listed: set[int] = set()
    for gi, group in enumerate(_list(groups, "param_groups")):
        where = f"param_groups[{gi}]"
        for key, value in _object(group, where).items():
            field = f"{where}[{_brief(key)}]"
            if key != "params":
                _scalar(value, field)
                continue
            for pi, index in enumerate(_list(value, field)):
                if type(index) is not int or index < 0 or index in listed:  # fast path: a message only on failure
                    _exact_int(index, f"{field}[{pi}]")
                    raise _RefusedError(f"{field}[{pi}]: index {index} is listed twice")
                listed.add(index)
    return groups


def _checked_state(entries: Any, count: int) -> list[tuple[int, dict[str, tuple[str, Any]]]]:
    """``[(index, {name: ("array", member) or ("scalar", value)})]``; arrays referred to in order, once each.

    The loop takes fast paths; a value that fails one goes to :func:`_refuse_value`,
    which finds what is wrong and names it.
    """
    checked = []
    indices: set[int] = set()
    arrays = 0
    for si, entry in enumerate(_list(entries, "state")):
        if type(entry) is not dict or len(entry) != 2 or "index" not in entry or "values" not in entry:
            found = _names(entry) if isinstance(entry, dict) else _brief(entry)
            raise _RefusedError(
                f"state[{si}]: must be an object with exactly the keys 'index' and 'values', found {found}"
            )
        index, entry_values = entry["index"], entry["values"]
        if type(index) is not int or index < 0 or index in indices:
            _exact_int(index, f"state[{si}]['index']")
            raise _RefusedError(f"state[{si}]['index']: index {index} appears twice")
        indices.add(index)
        if type(entry_values) is not dict:
            _object(entry_values, f"state[{si}]['values']")
        values: dict[str, tuple[str, Any]] = {}
        for key, value in entry_values.items():
            if type(value) is dict and len(value) == 1:
                if "array" in value and type(value["array"]) is int and value["array"] == arrays:
                    values[key] = ("array", arrays)
                    arrays += 1
                    continue
                if "scalar" in value and type(value["scalar"]) in _SCALAR_TYPES:
                    values[key] = ("scalar", value["scalar"])
                    continue
            _refuse_value(f"state[{si}]['values'][{_brief(key)}]", value, arrays)
        checked.append((index, values))
    if arrays != count:
        raise _RefusedError(f"arrays: the header claims {count} arrays, its state refers to {arrays}")
    return checked


def _refuse_value(field: str, value: Any, expected: int) -> None:
    """Raise the refusal for a state value that is not ``{"array": expected}`` nor ``{"scalar": scalar}``."""
    if set(_object(value, field)) not in ({"array"}, {"scalar"}):
        raise _RefusedError(f"{field}: must be {{'array': member}} or {{'scalar': value}}, found {_names(value)}")
    if "array" in value:
        member = _exact_int(value["array"], f"{field}['array']")
        raise _RefusedError(f"{field}['array']: expected array {expected} (each once, in order), found {member}")
    _scalar(value["scalar"], f"{field}['scalar']")
    raise _RefusedError(f"{field}['scalar']: malformed")  # not reached for values json.loads makes


def _checked_names(names: Any, count: int) -> list[str]:
    if len(_list(names, "names")) != count:
        raise _RefusedError(f"names: {len(names)} names for {count} arrays")
    seen: set[str] = set()
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise _RefusedError(f"names[{i}]: must be a string, found {_brief(name)}")
        if name in seen:
            raise _RefusedError(f"names[{i}]: {_brief(name)} appears twice")
        seen.add(name)
    return names


# ---------------------------------------------------------- reading the file
class _Archive:
    """An open, digest-checked Lucid file whose members are read one array at a time.

    Use :meth:`open` as a context manager: any refusal inside it becomes a
    ``ValueError`` naming the file.
    """

    def __init__(self, f: io.BufferedReader, expected_format: str) -> None:
        self._file = f
        self._size = os.fstat(f.fileno()).st_size
        _check_digest(f, self._size)
        self._entries = _read_directory(f, self._size)  # [(name, local header offset, size)]
        self._floor = 0  # members must lie in order, without overlap, before the zip's directory
        self._limit = self._size - _END_RECORD - _DIGEST_LENGTH
        self._npy_headers: dict[bytes, tuple[tuple[int, ...], bool, np.dtype[Any]]] = {}
        if not self._entries or self._entries[0][0] != _HEADER.encode():
            raise _RefusedError(f"the first member must be {_HEADER!r}")
        start, first = self._open_member(self._entries[0])
        self.header = _parse_header(self._read(start, first, 0, self._entries[0][2]))
        _checked_top_level(self.header, expected_format)
        self.count = _exact_int(self.header["arrays"], "arrays")
        if self.count != len(self._entries) - 1:  # before any per-array work: the claim costs nothing
            raise _RefusedError(
                f"arrays: the header claims {self.count} arrays, the archive holds {len(self._entries) - 1}"
            )
        for i, (name, _, _) in enumerate(self._entries[1:]):
            if name != _member(i).encode():
                raise _RefusedError(f"member {i + 1} is {_brief(name.decode('cp437'))}, expected {_member(i)!r}")

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: PathLike, expected_format: str) -> Iterator[_Archive]:
        """Open ``path``; yield the archive; turn every refusal into a bounded ``ValueError`` naming the file."""
        name = os.fspath(path)
        with open(name, "rb") as f:
            try:
                yield cls(f, expected_format)
            except _RefusedError as err:
                raise ValueError(f"{name!r} was refused: {str(err)[:300]}") from None
            except (
                struct.error,
                OverflowError,
                RecursionError,
                UnicodeDecodeError,
                ValueError,
                OSError,
            ) as err:
                detail = f"{type(err).__name__}: {err}"[:200]
                raise ValueError(f"{name!r} is damaged or not a Lucid file ({detail})") from None

    def _open_member(self, entry: tuple[bytes, int, int]) -> tuple[int, bytes]:
        """Check a member's local header and bounds; return where its data starts, and its first bytes.

        One read of up to 1 KiB: a small member comes whole, a large one with its
        ``.npy`` header.
        """
        name, offset, size = entry
        if offset < self._floor:
            raise _RefusedError(f"member {_brief(name.decode('cp437'))} overlaps the one before it")
        self._file.seek(offset)
        head = self._file.read(_PEEK)
        if len(head) < _LOCAL_HEADER.size:
            raise _RefusedError(f"member {_brief(name.decode('cp437'))}: the file ends inside its local header")
        signature, name_length, extra_length = _LOCAL_HEADER.unpack_from(head)
        if signature != b"PK\x03\x04" or head[_LOCAL_HEADER.size : _LOCAL_HEADER.size + name_length] != name:
            raise _RefusedError(f"member {_brief(name.decode('cp437'))}: its local header does not match the directory")
        skip = _LOCAL_HEADER.size + name_length + extra_length
        start = offset + skip
        if start + size > self._limit:
            raise _RefusedError(
                f"member {_brief(name.decode('cp437'))} claims {size} bytes, beyond the end of the "
                f"{self._size}-byte file"
            )
        self._floor = start + size
        return start, head[skip : skip + size]

    def _read(self, start: int, first: bytes, lo: int, hi: int) -> bytes:
        """Bytes ``lo:hi`` of the member whose data starts at ``start`` and begins with ``first``."""
        if hi <= len(first):
            return first[lo:hi]
        self._file.seek(start + lo)
        return _read_exactly(self._file, hi - lo)

    def array(self, i: int) -> NDArray[Any]:
        """Read array member ``i``, checking its ``.npy`` header against the member's size before allocating."""
        entry, member = self._entries[i + 1], _member(i)
        start, first = self._open_member(entry)
        size = entry[2]
        prefix = self._read(start, first, 0, min(12, size))
        if len(prefix) < 10 or prefix[:6] != _NPY_MAGIC or prefix[6:8] not in (b"\x01\x00", b"\x02\x00"):
            raise _RefusedError(f"{member}: not a .npy file of version 1.0 or 2.0")
        fixed = 10 if prefix[6] == 1 else 12
        if len(prefix) < fixed:
            raise _RefusedError(f"{member}: only {size} bytes")
        (length,) = struct.unpack("<H" if fixed == 10 else "<I", prefix[8:fixed])
        if length > _MAX_NPY_HEADER or fixed + length > size:
            raise _RefusedError(f"{member}: a .npy header of {length} bytes in a member of {size}")
        raw = self._read(start, first, 0, fixed + length)
        shape, fortran, dtype = self._npy_header(raw, member)
        if math.prod(shape) * dtype.itemsize != size - len(raw):
            raise _RefusedError(f"{member}: {size - len(raw)} data bytes for shape {shape} and dtype {dtype}")
        out = np.empty(shape, dtype, order="F" if fortran else "C")
        target = memoryview((out.T if fortran else out).reshape(-1).view(np.uint8))
        if size <= len(first):
            target[:] = first[len(raw) :]
        else:
            self._file.seek(start + len(raw))
            _read_into(self._file, target, member)
        return out

    def _npy_header(self, raw: bytes, member: str) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
        """Parse a ``.npy`` header without pickle (NumPy's literal parser), once per distinct header."""
        known = self._npy_headers.get(raw)
        if known is not None:
            return known
        fp = io.BytesIO(raw)
        version = np.lib.format.read_magic(fp)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, fortran, dtype = read(fp, max_header_size=_MAX_NPY_HEADER)
        except Exception as err:  # NumPy's header parser on hostile text: ValueError, SyntaxError, TokenError...
            raise _RefusedError(f"{member}: malformed .npy header ({type(err).__name__}: {str(err)[:80]})") from None
        if dtype.hasobject or dtype.kind not in _ARRAY_KINDS:
            raise _RefusedError(
                f"{member}: dtype {_describe(dtype)} holds Python objects or is not numeric (pickle is never loaded)"
            )
        if not all(type(n) is int and n >= 0 for n in shape):
            raise _RefusedError(f"{member}: shape {_describe(shape)} is not a tuple of integers >= 0")
        self._npy_headers[raw] = (shape, bool(fortran), dtype)
        return self._npy_headers[raw]


def _read_directory(f: io.BufferedReader, size: int) -> list[tuple[bytes, int, int]]:
    """Read the zip's central directory: ``[(name, local header offset, size)]``, in order.

    Only what Lucid writes is accepted: the end record (zip64's where present)
    right before the 64-byte digest, the directory right before it, every
    member stored, unencrypted, its sizes equal.  The member count the end
    record claims is compared with the directory's real size before anything
    is allocated for it.
    """
    end = size - _DIGEST_LENGTH - _END_RECORD
    f.seek(end)
    signature, disk, first_disk, _, count, directory_size, directory_offset, comment = _END.unpack(
        _read_exactly(f, _END_RECORD)
    )
    if signature != b"PK\x05\x06" or comment != _DIGEST_LENGTH or disk or first_disk:
        raise _RefusedError("no zip end record before the digest: not a Lucid file")
    directory_end = end
    if end >= _LOCATOR.size + _END64.size:
        f.seek(end - _LOCATOR.size)
        locator, _, end64, _ = _LOCATOR.unpack(_read_exactly(f, _LOCATOR.size))
        if locator == b"PK\x06\x07":
            if end64 != end - _LOCATOR.size - _END64.size:
                raise _RefusedError("the zip64 end record is not where its locator says")
            f.seek(end64)
            signature, _, _, _, disk, first_disk, _, count, directory_size, directory_offset = _END64.unpack(
                _read_exactly(f, _END64.size)
            )
            if signature != b"PK\x06\x06" or disk or first_disk:
                raise _RefusedError("malformed zip64 end record")
            directory_end = end64
    if directory_offset + directory_size != directory_end or count > directory_size // _CENTRAL_READ.size:
        raise _RefusedError(
            f"the zip directory claims {count} members in {directory_size} bytes at {directory_offset}, "
            f"which does not fit the file"
        )
    f.seek(directory_offset)
    data = _read_exactly(f, directory_size)
    entries = []
    at = 0
    for _ in range(count):
        signature, flags, method, packed, unpacked, name_length, extra_length, comment_length, offset = (
            _CENTRAL_READ.unpack_from(data, at)
        )
        name = data[at + _CENTRAL_READ.size : at + _CENTRAL_READ.size + name_length]
        extra_at = at + _CENTRAL_READ.size + name_length
        at = extra_at + extra_length + comment_length
        if signature != b"PK\x01\x02" or at > len(data):
            raise _RefusedError(f"malformed zip directory entry {len(entries)}")
        if method != 0 or flags & 1:
            raise _RefusedError(f"member {_brief(name.decode('cp437'))} is compressed or encrypted")
        if 0xFFFFFFFF in (packed, unpacked, offset):
            unpacked, packed, offset = _zip64_extra(data[extra_at : extra_at + extra_length], unpacked, packed, offset)
        if packed != unpacked:
            raise _RefusedError(f"member {_brief(name.decode('cp437'))} is compressed")
        entries.append((name, offset, unpacked))
    if at != len(data):
        raise _RefusedError(f"the zip directory holds more than its {count} members")
    return entries


def _zip64_extra(extra: bytes, *values: int) -> tuple[int, ...]:
    """Replace the 32-bit fields that are 0xFFFFFFFF by their zip64 values (in APPNOTE's order)."""
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, at)
        if tag == 1:
            wide = iter(struct.unpack_from(f"<{length // 8}Q", extra, at + 4))
            try:
                return tuple(next(wide) if value == 0xFFFFFFFF else value for value in values)
            except StopIteration:
                break
        at += 4 + length
    raise _RefusedError("a zip64 size or offset is missing")


def _read_exactly(f: io.BufferedReader, size: int) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise _RefusedError(f"the file ends {size - len(data)} bytes early")
    return data


def _read_into(f: io.BufferedReader, view: memoryview, member: str) -> None:
    done = 0
    while done < len(view):
        got = f.readinto(view[done : done + _CHUNK])
        if not got:
            raise _RefusedError(f"{member}: the file ends early")
        done += got


def _check_digest(f: io.BufferedReader, size: int) -> None:
    """Hash the file up to its last 64 bytes, 1 MiB at a time, and compare with them."""
    if size < _DIGEST_LENGTH + _END_RECORD:
        raise _RefusedError(f"only {size} bytes: truncated, or not a Lucid file")
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(_CHUNK))
    f.seek(0)
    left = size - _DIGEST_LENGTH
    while left:
        got = f.readinto(buffer[: min(left, _CHUNK)])
        if not got:
            raise _RefusedError("the file shrank while it was read")
        digest.update(buffer[:got])
        left -= got
    if digest.hexdigest().encode("ascii") != f.read(_DIGEST_LENGTH):
        raise _RefusedError("SHA-256 mismatch: the file is truncated, or was modified after it was written")


# ---------------------------------------------------------- writing the file
def _member(i: int) -> str:
    return f"arrays/{i}.npy"


class _SealedZip:
    """Write a zip of stored members to ``f`` in one pass, hashing every byte; end it with the digest.

    What :mod:`zipfile` writes to a stream, without its cost per member: each
    member's CRC and sizes follow its data (a data descriptor), and zip64
    records appear only where a size, an offset or the member count needs them.
    Small writes (zip and ``.npy`` headers, small arrays) are gathered into
    pieces of about 1 MiB; large ones go straight to the file.
    """

    def __init__(self, f: IO[bytes]) -> None:
        self._file = f
        self._digest = hashlib.sha256()
        self._pending = bytearray()  # gathered, not yet hashed nor written
        self._position = 0
        self._directory: list[bytes] = []  # central directory entries

    def _write(self, data: Any) -> None:
        self._position += len(data)
        if len(data) < _DIRECT:
            self._pending += data
            if len(self._pending) >= _CHUNK:
                self._flush()
        else:
            self._flush()
            self._out(data)

    def _flush(self) -> None:
        if self._pending:
            self._out(self._pending)
            self._pending = bytearray()

    def _out(self, data: Any) -> None:
        self._digest.update(data)
        _write_all(self._file, data)

    def member(self, name: str, pieces: Iterable[Any], size: int) -> None:
        """Write member ``name``: ``size`` bytes, given as byte buffers."""
        offset, encoded = self._position, name.encode("ascii")
        local64 = size > _ZIP64_LIMIT
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) if local64 else b""
        sizes = 0xFFFFFFFF if local64 else 0  # the real ones follow the data
        self._write(
            _LOCAL.pack(
                _LOCAL_SIGNATURE,
                45 if local64 else 20,
                _FLAGS,
                0,
                0,
                _DOS_DATE,
                0,
                sizes,
                sizes,
                len(encoded),
                len(extra),
            )
            + encoded
            + extra
        )
        crc, written = 0, 0
        for piece in pieces:
            crc = zlib.crc32(piece, crc)
            written += len(piece)
            self._write(piece)
        if written != size:
            raise RuntimeError(f"{name}: wrote {written} bytes, expected {size}")
        self._write(struct.pack("<IIQQ" if local64 else "<IIII", _DESCRIPTOR_SIGNATURE, crc, size, size))
        wide = ([size, size] if local64 else []) + ([offset] if offset > _ZIP64_LIMIT else [])
        extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
        version = 45 if wide else 20
        self._directory.append(
            _CENTRAL.pack(
                _CENTRAL_SIGNATURE,
                _MADE_BY_UNIX | version,
                version,
                _FLAGS,
                0,
                0,
                _DOS_DATE,
                crc,
                0xFFFFFFFF if local64 else size,
                0xFFFFFFFF if local64 else size,
                len(encoded),
                len(extra),
                0,
                0,
                0,
                0o644 << 16,
                0xFFFFFFFF if offset > _ZIP64_LIMIT else offset,
            )
            + encoded
            + extra
        )

    def close(self) -> None:
        """Write the central directory and the end records, then the digest as the 64-byte comment."""
        start = self._position
        for entry in self._directory:
            self._write(entry)
        count, size = len(self._directory), self._position - start
        if count >= 0xFFFF or start > _ZIP64_LIMIT or size > _ZIP64_LIMIT:
            end64 = self._position
            self._write(
                struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, _MADE_BY_UNIX | 45, 45, 0, 0, count, count, size, start)
            )
            self._write(struct.pack("<IIQI", 0x07064B50, 0, end64, 1))
            count, size, start = min(count, 0xFFFF), min(size, 0xFFFFFFFF), min(start, 0xFFFFFFFF)
        self._write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, start, _DIGEST_LENGTH))
        self._flush()
        _write_all(self._file, self._digest.hexdigest().encode("ascii"))


def _write_all(f: IO[bytes], data: Any) -> None:
    """Write one piece (at most 1 MiB of array data) to the temporary file; a crash test interrupts here."""
    f.write(data)


def _npy_header(array: NDArray[Any]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
    return header.getvalue()


def _pieces(array: NDArray[Any]) -> Iterator[memoryview]:
    """Yield the bytes of an array in C order, in contiguous pieces of at most about 1 MiB.

    A C-contiguous array is sliced without copying; any other is copied a block
    of rows at a time (a row at a time, recursively, where one row exceeds 1 MiB).
    """
    if array.flags.c_contiguous:
        flat = memoryview(array.reshape(-1).view(np.uint8))
        for start in range(0, len(flat), _CHUNK):
            yield flat[start : start + _CHUNK]
        return
    rows = len(array)  # not 0-d and not empty: those are contiguous
    row_bytes = array.nbytes // rows
    if row_bytes >= _CHUNK:
        for row in array:
            yield from _pieces(row)
        return
    step = _CHUNK // row_bytes
    for start in range(0, rows, step):
        yield memoryview(np.ascontiguousarray(array[start : start + step]).reshape(-1).view(np.uint8))


def _write_archive(path: PathLike, header: dict[str, Any], arrays: list[NDArray[Any]]) -> None:
    text = json.dumps({**header, "arrays": len(arrays)}, allow_nan=True).encode("utf-8")

    def write(f: IO[bytes]) -> None:
        archive = _SealedZip(f)
        archive.member(_HEADER, (text,), len(text))
        headers: dict[tuple[str, bool, tuple[int, ...]], bytes] = {}
        for i, value in enumerate(arrays):
            array = np.asarray(value)
            fortran = not array.flags.c_contiguous and array.flags.f_contiguous
            key = (array.dtype.str, fortran, array.shape)
            npy = headers.get(key)
            if npy is None:
                npy = headers[key] = _npy_header(array)
            if array.nbytes < _DIRECT:  # one small copy, written with the headers
                pieces: Iterable[Any] = (npy + array.tobytes("F" if fortran else "C"),)
            else:  # streamed, in .npy order
                pieces = itertools.chain((npy,), _pieces(array.T if fortran else array))
            archive.member(_member(i), pieces, len(npy) + array.nbytes)
        archive.close()

    _atomic_write(os.fspath(path), write)


def _create_temporary(directory: str, base: str) -> tuple[int, str]:
    """Create ``.<base>.<random>.tmp`` in ``directory`` with mode 0o666 less the umask; return (fd, path)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {base!r} in {directory!r}")


def _atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Replace ``path`` by what ``write`` writes, so that a crash leaves the old file or the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):  # a new file keeps the umask's mode
            os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
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
