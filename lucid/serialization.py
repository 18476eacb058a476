"""Save and load optimizer state and model parameters without pickle.

A file is a ``.npz`` archive (a zip, readable by ``numpy.load(path,
allow_pickle=False)``), written and read with :mod:`zipfile`, all members
stored uncompressed.  Its first member, ``header.json``, holds everything that
is not an array (hyperparameters, ``step`` counts, parameter names) and the
layout, as JSON.  The arrays are packed, so that a file holds a few members
however many arrays it has: one flat ``.npy`` member per dtype,
``packed/<k>.npy``, holds every array of that dtype (byte order included), one
after the other in C order.  The header lists the members (``"members"``:
each one's dtype and element count) and, for each array in order, its member,
its offset in that member's elements and its shape (``"arrays"``: three lists,
``member``, ``offset`` and ``shape``, an item per array).  This is format
version 2; version 1 files, one ``.npy`` member ``arrays/<i>.npy`` per array,
which earlier releases wrote, still load.

The archive's comment, its last 64 bytes, is the hex SHA-256 of every byte
before it, checked before anything is parsed: a truncated file or any changed
byte is refused.  The digest detects damage, not tampering: anyone can
recompute it, so a file is trusted no further than its source, and every file
is parsed as hostile anyway.  Nothing is ever unpickled: arrays of Python
objects are refused before NumPy reads them (even in a file whose digest is
right), and ``.npy`` headers are parsed by NumPy's literal parser.

Arrays stream: saving writes each member's ``.npy`` header, then the arrays'
bytes in pieces of at most 1 MiB (small arrays gathered, a non-contiguous array
copied a piece at a time), hashing every byte on its way to the file; loading
checks the digest reading 1 MiB at a time, then reads each large array
into a new array of its shape (1 MiB at a time, through :mod:`zipfile`, which
checks the CRC), and small ones 1 MiB of them at a time, each copied out into
an array of its own.  Memory beyond the state itself stays near 2 MiB (plus the
header), and the time is proportional to the bytes plus some microseconds per
array, nearly all for its entries in the JSON header.  Arrays loaded from a
version 2 file are C-contiguous and independent of each other, whatever the
layout they were saved from.

A loaded file is checked against itself before any array is allocated: every
member is stored, lies inside the file and overlaps no other; the header's
member count, dtypes and element counts against the archive's members, their
``.npy`` headers and real sizes; every array's member, offset and shape against
its member (the arrays of a member follow each other without gap or overlap and
fill it exactly).  The header must have exactly the documented layout (indices
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
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from lucid.nn.module import Module
from lucid.optim.optimizer import PARAM_NAMES, _describe, split_state_dict
from lucid.tensor import Tensor

__all__ = ["load_parameters", "load_state_dict", "save_parameters", "save_state_dict"]

PathLike = str | os.PathLike[str]

_HEADER = "header.json"
_VERSION = 2  # what save writes
_VERSIONS = (1, 2)  # what load reads
_STATE_FORMAT = "lucid.optimizer_state_dict"
_PARAMETERS_FORMAT = "lucid.parameters"
_KEYS = {  # (format, version): exactly the header's keys
    (_STATE_FORMAT, 1): frozenset({"format", "version", "arrays", "param_groups", "state"}),
    (_STATE_FORMAT, 2): frozenset({"format", "version", "members", "arrays", "param_groups", "state"}),
    (_PARAMETERS_FORMAT, 1): frozenset({"format", "version", "arrays", "names"}),
    (_PARAMETERS_FORMAT, 2): frozenset({"format", "version", "members", "arrays", "names"}),
}
_MEMBER_KEYS = frozenset({"dtype", "elements"})
_COLUMNS = ("member", "offset", "shape")  # the header's "arrays": one list per field, an item per array
_ARRAY_KEYS = frozenset(_COLUMNS)
#: Array kinds a file may hold: bool, signed and unsigned integers, floats, complex.
_ARRAY_KINDS = frozenset("biufc")
#: numpy's own bound on a ``.npy`` header (numpy.lib.format._MAX_HEADER_SIZE).
_MAX_NPY_HEADER = 10_000
_MAX_DIMENSIONS = 64  # numpy's bound on ndim
_NPY_MAGIC = b"\x93NUMPY"
_DIGEST_LENGTH = 64  # hex SHA-256, stored as the zip comment at the very end of the file
_PLACEHOLDER = b"0" * _DIGEST_LENGTH  # the comment zipfile writes, replaced by the digest
_END_RECORD = 22  # the zip's end-of-central-directory record, without its comment
_LOCAL_HEADER = 30  # a zip local file header, without its name and extra field
_FLAGS = 0x08 | 0x800  # zip flags a member may have: sizes after the data, UTF-8 name
_DATE = (1980, 1, 1, 0, 0, 0)  # fixed, so that equal content gives equal bytes
_CHUNK = 1 << 20  # bytes per read, write and hash update
_DIRECT = 1 << 16  # arrays at least this long are written and read on their own, not gathered
_SCALARS = (bool, int, float, str, type(None))
_SCALAR_TYPES = frozenset(_SCALARS)  # exact types, for the fast paths
#: What a crafted file can make the standard library raise (with the digest right); each becomes a ValueError.
_DAMAGE = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    NotImplementedError,
    EOFError,
    struct.error,
    OverflowError,
    RecursionError,
    UnicodeDecodeError,
    ValueError,
    OSError,
)


# ------------------------------------------------------------------ public API
def save_state_dict(state_dict: Mapping[str, Any], path: PathLike) -> None:
    """Write an optimizer state_dict to ``path`` atomically.

    Parameters
    ----------
    state_dict : dict
        ``{"state": {index: {name: float or ndarray}}, "param_groups": [{...,
        "params": [index, ...]}]}``, as :meth:`lucid.optim.Optimizer.state_dict`
        returns it (or a torch state_dict converted to NumPy).  Group values
        must be JSON scalars (bool, int, float, str or None), but for
        ``param_names`` (named parameters), a list of str; state values
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
            elif key == PARAM_NAMES:
                packed[key] = _json_names(value, f"{where}[{key!r}]")
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

    Parameters
    ----------
    path : str or os.PathLike
        The file (format version 2, or version 1 as earlier releases wrote).

    Returns
    -------
    dict
        The state_dict, arrays bit for bit as saved (values, dtype and shape;
        each array in memory of its own, C-contiguous from a version 2 file);
        pass it to :meth:`lucid.optim.Optimizer.load_state_dict`, which
        validates it.

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
        arrays = archive.arrays()  # after every check of the header
    state: dict[int, dict[str, Any]] = {}
    for index, values in entries:
        state[index] = {key: arrays[value] if kind == "array" else value for key, (kind, value) in values.items()}
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
        Name to array, in saved order, each in memory of its own.

    Raises
    ------
    ValueError
        Bad file (see :func:`load_state_dict`), or names, shapes, dtypes or
        read-only parameters that do not fit ``into``.
    """
    name = os.fspath(path)
    with _Archive.open(path, _PARAMETERS_FORMAT) as archive:
        names = _checked_names(archive.header["names"], archive.count)
        loaded = dict(zip(names, archive.arrays()))
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


def _json_names(value: Any, where: str) -> list[str]:
    """Return a group's ``param_names`` as a list of str, or raise ``TypeError``."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"{where}: must be a list of str, got {_describe(value)}")
    return list(value)


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


def _checked_top_level(header: dict[str, Any], expected_format: str) -> int:
    """Check format, version and exactly their keys (the format first, so a wrong file is named as such).

    Returns
    -------
    int
        The version, 1 or 2.
    """
    found = header.get("format")
    if found != expected_format:
        raise _RefusedError(f"expected a {expected_format!r} file, found format {_brief(found)}")
    version = header.get("version")
    if type(version) is not int or version not in _VERSIONS:
        raise _RefusedError(f"version: unsupported version {_brief(version)} (this Lucid reads 1 and 2)")
    keys = _KEYS[expected_format, version]
    if set(header) != keys:
        missing, unexpected = _names(keys - set(header)), _names(set(header) - keys)
        raise _RefusedError(f"{_HEADER}: keys missing {missing}, unexpected {unexpected}")
    return version


def _checked_groups(groups: Any) -> list[dict[str, Any]]:
    listed: set[int] = set()
    for gi, group in enumerate(_list(groups, "param_groups")):
        where = f"param_groups[{gi}]"
        for key, value in _object(group, where).items():
            field = f"{where}[{_brief(key)}]"
            if key == PARAM_NAMES:
                for ni, name in enumerate(_list(value, field)):
                    if not isinstance(name, str):
                        raise _RefusedError(f"{field}[{ni}]: must be a string, found {_brief(name)}")
                continue
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
def _packed(k: int) -> str:
    """Name packed member ``k`` (version 2)."""
    return f"packed/{k}.npy"


def _member(i: int) -> str:
    """Name array member ``i`` (version 1)."""
    return f"arrays/{i}.npy"


#: Per member of a version 2 file: its dtype, the length of its ``.npy`` header, and the indices of
#: its arrays (in the header's ``arrays``), in order.
_Layout = list[tuple[np.dtype[Any], int, list[int]]]


class _Archive:
    """An open, digest-checked Lucid file whose layout is checked before any array is allocated.

    Use :meth:`open` as a context manager: any refusal inside it becomes a
    ``ValueError`` naming the file.  ``header`` is the parsed header,
    ``count`` the number of arrays; :meth:`arrays` reads them.
    """

    def __init__(self, zf: zipfile.ZipFile, size: int, digest: bytes, expected_format: str) -> None:
        self._zip = zf
        if zf.comment != digest:
            raise _RefusedError("no zip end record right before the digest: not a Lucid file")
        infos = zf.infolist()
        _check_members(infos, size)
        if not infos or infos[0].filename != _HEADER:
            raise _RefusedError(f"the first member must be {_HEADER!r}")
        with zf.open(infos[0]) as stream:
            self.header = _parse_header(stream.read())
        self.version = _checked_top_level(self.header, expected_format)
        self._members = infos[1:]
        self._npy_headers: dict[bytes, tuple[tuple[int, ...], bool, np.dtype[Any]]] = {}
        if self.version == 1:
            self.count = _exact_int(self.header["arrays"], "arrays")
            if self.count != len(self._members):  # before any per-array work: the claim costs nothing
                raise _RefusedError(
                    f"arrays: the header claims {self.count} arrays, the archive holds {len(self._members)}"
                )
            for i, info in enumerate(self._members):
                if info.filename != _member(i):
                    raise _RefusedError(f"member {i + 1} is {_brief(info.filename)}, expected {_member(i)!r}")
        else:
            self._layout = self._checked_layout(self.header["members"], self.header["arrays"])
            self._shapes = self.header["arrays"]["shape"]
            self.count = len(self._shapes)

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: PathLike, expected_format: str) -> Iterator[_Archive]:
        """Open ``path``; yield the archive; turn every refusal into a bounded ``ValueError`` naming the file."""
        name = os.fspath(path)
        with open(name, "rb") as f:
            try:
                size = os.fstat(f.fileno()).st_size
                digest = _check_digest(f, size)
                with zipfile.ZipFile(f) as zf:
                    yield cls(zf, size, digest, expected_format)
            except _RefusedError as err:
                raise ValueError(f"{name!r} was refused: {str(err)[:300]}") from None
            except _DAMAGE as err:
                detail = f"{type(err).__name__}: {err}"[:200]
                raise ValueError(f"{name!r} is damaged or not a Lucid file ({detail})") from None

    def _checked_layout(self, members: Any, entries: Any) -> _Layout:
        """Check the header's members and arrays against the archive's members and their ``.npy`` headers.

        Reads only the ``.npy`` headers (one per member).  The arrays of each
        member must follow each other in order, without gap or overlap, and fill it.
        """
        if len(_list(members, "members")) != len(self._members):  # before any per-member work
            raise _RefusedError(
                f"members: the header lists {len(members)} members, the archive holds {len(self._members)} "
                f"besides {_HEADER}"
            )
        layout: _Layout = []
        sizes = []  # element count per member
        for k, (member, info) in enumerate(zip(members, self._members)):
            name, field = _packed(k), f"members[{k}]"
            if info.filename != name:
                raise _RefusedError(f"member {k + 1} is {_brief(info.filename)}, expected {name!r}")
            if set(_object(member, field)) != _MEMBER_KEYS:
                raise _RefusedError(
                    f"{field}: must have exactly the keys 'dtype' and 'elements', found {_names(member)}"
                )
            elements = _exact_int(member["elements"], f"{field}['elements']")
            with self._zip.open(info) as stream:
                raw = _read_npy_prefix(stream, info.file_size, name)
            shape, fortran, dtype = self._npy_header(raw, name)
            if np.lib.format.dtype_to_descr(dtype) != member["dtype"]:
                raise _RefusedError(f"{field}['dtype']: {_brief(member['dtype'])}, but {name} holds {dtype.str!r}")
            if shape != (elements,) or fortran:
                raise _RefusedError(f"{name}: shape {_brief(shape)}, expected ({elements},) as {field} says")
            if elements * dtype.itemsize != info.file_size - len(raw):
                raise _RefusedError(
                    f"{name}: {info.file_size - len(raw)} data bytes for {elements} elements of dtype {dtype}"
                )
            layout.append((dtype, len(raw), []))
            sizes.append(elements)
        columns = _object(entries, "arrays")
        if set(columns) != _ARRAY_KEYS:
            raise _RefusedError(
                f"arrays: must have exactly the keys 'member', 'offset' and 'shape', found {_names(columns)}"
            )
        member_column, offset_column, shape_column = (_list(columns[key], f"arrays[{key!r}]") for key in _COLUMNS)
        if not len(member_column) == len(offset_column) == len(shape_column):
            raise _RefusedError(
                f"arrays: {len(member_column)} members, {len(offset_column)} offsets and {len(shape_column)} shapes"
            )
        # Every shape a list of at most 64 integers >= 0: checked at once, at C speed, where they all are (a
        # list of lists only, since chaining anything else could take a string apart); else one by one.
        shapes_valid = (
            set(map(type, shape_column)) <= {list} and max(map(len, shape_column), default=0) <= _MAX_DIMENSIONS
        )
        if shapes_valid:
            dimensions = list(itertools.chain.from_iterable(shape_column))
            shapes_valid = set(map(type, dimensions)) <= {int} and min(dimensions, default=0) >= 0
        ends = [0] * len(sizes)  # where each member's next array starts
        self._counts: list[int] = []  # elements per array
        for ai, (m, offset, shape) in enumerate(zip(member_column, offset_column, shape_column)):
            if (  # the fast path; a message only for an array that fails it
                type(m) is int
                and 0 <= m < len(ends)
                and type(offset) is int
                and offset == ends[m]
                and (shapes_valid or _valid_shape(shape))
            ):
                count = math.prod(shape)
                if offset + count <= sizes[m]:
                    ends[m] = offset + count
                    layout[m][2].append(ai)
                    self._counts.append(count)
                    continue
            _refuse_array(ai, m, offset, shape, ends, sizes)
        for k, (end, elements) in enumerate(zip(ends, sizes)):
            if end != elements:
                raise _RefusedError(f"arrays: they cover {end} of the {elements} elements of {_packed(k)}")
        return layout

    def arrays(self) -> list[NDArray[Any]]:
        """Read every array, in order, each into memory of its own."""
        if self.version == 1:
            return [self._array(i, info) for i, info in enumerate(self._members)]
        out: list[Any] = [None] * self.count
        for k, (info, (dtype, skip, indices)) in enumerate(zip(self._members, self._layout)):
            with self._zip.open(info) as stream:
                _read_exactly(stream, skip)  # the .npy header, checked already
                _read_packed(stream, dtype, indices, self._counts, self._shapes, out, _packed(k))
        return out

    def _array(self, i: int, info: zipfile.ZipInfo) -> NDArray[Any]:
        """Read version 1 member ``i``, checking its ``.npy`` header against the member's size before allocating."""
        member, size = _member(i), info.file_size
        with self._zip.open(info) as stream:
            raw = _read_npy_prefix(stream, size, member)
            shape, fortran, dtype = self._npy_header(raw, member)
            if math.prod(shape) * dtype.itemsize != size - len(raw):
                raise _RefusedError(f"{member}: {size - len(raw)} data bytes for shape {shape} and dtype {dtype}")
            out = np.empty(shape, dtype, order="F" if fortran else "C")
            _read_into(stream, memoryview((out.T if fortran else out).reshape(-1).view(np.uint8)), member)
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


def _valid_shape(shape: Any) -> bool:
    """Whether ``shape`` is a list of at most 64 integers >= 0."""
    return type(shape) is list and len(shape) <= _MAX_DIMENSIONS and all(type(n) is int and n >= 0 for n in shape)


def _refuse_array(ai: int, m: Any, offset: Any, shape: Any, ends: list[int], sizes: list[int]) -> None:
    """Raise the refusal for array ``ai`` of the header's ``arrays`` columns, which failed the fast path."""
    _exact_int(m, f"arrays['member'][{ai}]")
    if m >= len(ends):
        raise _RefusedError(f"arrays['member'][{ai}]: member {m} does not exist (the header lists {len(ends)})")
    field = f"arrays['shape'][{ai}]"
    if len(_list(shape, field)) > _MAX_DIMENSIONS:
        raise _RefusedError(f"{field}: {len(shape)} dimensions, more than {_MAX_DIMENSIONS}")
    for d, n in enumerate(shape):
        _exact_int(n, f"{field}[{d}]")
    _exact_int(offset, f"arrays['offset'][{ai}]")
    if offset != ends[m]:
        raise _RefusedError(
            f"arrays['offset'][{ai}]: {offset}, expected {ends[m]} (the arrays of a member follow each other in order)"
        )
    raise _RefusedError(
        f"{field}: {math.prod(shape)} elements from offset {offset} overrun the {sizes[m]} of {_packed(m)}"
    )


def _check_members(infos: list[zipfile.ZipInfo], size: int) -> None:
    """Check every member is stored, unencrypted, in order, inside the file and overlapping no other.

    Run before anything is read from them: then no member can claim more bytes
    than the file holds, nor the members together.
    """
    floor, limit = 0, size - _DIGEST_LENGTH - _END_RECORD
    for info in infos:
        name = info.filename
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise _RefusedError(f"member {_brief(name)} is compressed")
        if info.flag_bits & ~_FLAGS:
            raise _RefusedError(f"member {_brief(name)} is encrypted or uses zip features Lucid never writes")
        if info.header_offset < floor:
            raise _RefusedError(f"member {_brief(name)} overlaps the one before it")
        floor = info.header_offset + _LOCAL_HEADER + len(name.encode("utf-8" if info.flag_bits & 0x800 else "cp437"))
        floor += info.file_size
        if floor > limit:
            raise _RefusedError(
                f"member {_brief(name)} claims {info.file_size} bytes, beyond the end of the {size}-byte file"
            )


def _read_npy_prefix(stream: io.BufferedIOBase, size: int, member: str) -> bytes:
    """Read a member's ``.npy`` magic, version and header, checking their lengths against the member's size."""
    prefix = _read_exactly(stream, min(10, size), member)
    if len(prefix) < 10 or prefix[:6] != _NPY_MAGIC or prefix[6:8] not in (b"\x01\x00", b"\x02\x00"):
        raise _RefusedError(f"{member}: not a .npy file of version 1.0 or 2.0")
    fixed = 10 if prefix[6] == 1 else 12
    if size < fixed:
        raise _RefusedError(f"{member}: only {size} bytes")
    prefix += _read_exactly(stream, fixed - 10, member)
    length = int.from_bytes(prefix[8:fixed], "little")
    if length > _MAX_NPY_HEADER or fixed + length > size:
        raise _RefusedError(f"{member}: a .npy header of {length} bytes in a member of {size}")
    return prefix + _read_exactly(stream, length, member)


def _read_packed(
    stream: io.BufferedIOBase,
    dtype: np.dtype[Any],
    indices: list[int],
    counts: list[int],
    shapes: list[list[int]],
    out: list[Any],
    name: str,
) -> None:
    """Read one packed member's arrays (``indices``, in order) into ``out``.

    Each large one is read on its own, straight into its array; the small ones
    that follow each other, up to 1 MiB of them at once, each copied out.
    """
    itemsize, at = dtype.itemsize, 0
    while at < len(indices):
        index = indices[at]
        if counts[index] * itemsize >= _DIRECT:
            array = np.empty(shapes[index], dtype)
            _read_into(stream, memoryview(array.reshape(-1).view(np.uint8)), name)
            out[index] = array
            at += 1
            continue
        stop, total = at, 0
        while stop < len(indices):
            count = counts[indices[stop]]
            if count * itemsize >= _DIRECT or (total + count) * itemsize > _CHUNK:
                break
            total += count
            stop += 1
        block = np.empty(total, dtype)
        _read_into(stream, memoryview(block.view(np.uint8)), name)
        start = 0
        for index in indices[at:stop]:
            count = counts[index]
            out[index] = block[start : start + count].reshape(shapes[index]).copy()
            start += count
        at = stop


def _read_exactly(stream: io.BufferedIOBase, size: int, member: str = "the file") -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise _RefusedError(f"{member}: the file ends {size - len(data)} bytes early")
    return data


def _read_into(stream: io.BufferedIOBase, view: memoryview, member: str) -> None:
    """Fill ``view`` from ``stream``, 1 MiB at a time (zipfile would otherwise read it all into one bytes first)."""
    done = 0
    while done < len(view):
        got = stream.readinto(view[done : done + _CHUNK])
        if not got:
            raise _RefusedError(f"{member}: the file ends early")
        done += got


def _check_digest(f: io.BufferedReader, size: int) -> bytes:
    """Hash the file up to its last 64 bytes, 1 MiB at a time, and compare with them; return them."""
    if size < _DIGEST_LENGTH + _END_RECORD:
        raise _RefusedError(f"only {size} bytes: truncated, or not a Lucid file")
    digest = hashlib.sha256()
    buffer = memoryview(bytearray(min(size, _CHUNK)))
    f.seek(0)
    left = size - _DIGEST_LENGTH
    while left:
        got = f.readinto(buffer[: min(left, _CHUNK)])
        if not got:
            raise _RefusedError("the file shrank while it was read")
        digest.update(buffer[:got])
        left -= got
    stored = f.read(_DIGEST_LENGTH)
    if digest.hexdigest().encode("ascii") != stored:
        raise _RefusedError("SHA-256 mismatch: the file is truncated, or was modified after it was written")
    return stored


# ---------------------------------------------------------- writing the file
class _SealingWriter(io.RawIOBase):
    """The file :class:`zipfile.ZipFile` writes to: it hashes and writes every byte, except the last 64.

    It can tell but not seek, so ``zipfile`` writes the archive in one pass
    (each member's CRC and sizes in a data descriptor after its data).  The last
    64 bytes written, the placeholder comment, are held back; :meth:`seal`
    writes the hex SHA-256 of everything before them in their place.
    """

    def __init__(self, f: IO[bytes]) -> None:
        super().__init__()
        self._file = f
        self._digest = hashlib.sha256()
        self._tail = b""  # the last bytes written to this object, not yet hashed nor written to the file
        self._position = 0

    def writable(self) -> bool:
        """Return True."""
        return True

    def write(self, data: Any) -> int:
        """Write ``data`` (any contiguous buffer) but its last 64 bytes, and the 64 held back before it."""
        view = memoryview(data).cast("B")
        self._position += len(view)
        if len(view) >= _DIGEST_LENGTH:
            self._out(self._tail)
            self._out(view[:-_DIGEST_LENGTH])
            self._tail = bytes(view[-_DIGEST_LENGTH:])
        else:
            joined = self._tail + bytes(view)
            self._out(joined[:-_DIGEST_LENGTH])
            self._tail = joined[-_DIGEST_LENGTH:]
        return len(view)

    def _out(self, data: Any) -> None:
        if len(data):
            self._digest.update(data)
            _write_all(self._file, data)

    def tell(self) -> int:
        """Return the bytes written so far, the held-back ones included (``seek`` is refused, as by any raw stream)."""
        return self._position

    def seal(self) -> None:
        """Write the digest in place of the placeholder comment zipfile wrote last."""
        if self._tail != _PLACEHOLDER:
            raise RuntimeError("the archive does not end with its placeholder comment")
        _write_all(self._file, self._digest.hexdigest().encode("ascii"))


def _write_all(f: IO[bytes], data: Any) -> None:
    """Write one piece (at most 1 MiB of array data) to the temporary file; a crash test interrupts here."""
    f.write(data)


def _zip_info(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, _DATE)
    info.external_attr = 0o644 << 16
    info.file_size = size  # known in advance: zipfile decides on zip64 fields by it
    return info


def _npy_header(dtype: np.dtype[Any], elements: int) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (elements,)}
    )
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


def _pack(arrays: list[NDArray[Any]]) -> tuple[list[dict[str, Any]], dict[str, list[Any]], list[list[NDArray[Any]]]]:
    """Assign every array to its dtype's member; return the header's members and arrays, and each member's arrays."""
    by_dtype: dict[str, int] = {}
    members: list[dict[str, Any]] = []
    packed: list[list[NDArray[Any]]] = []
    member_column: list[int] = []
    offset_column: list[int] = []
    shape_column: list[tuple[int, ...]] = []
    for array in arrays:
        k = by_dtype.get(array.dtype.str)  # the byte order included: '<f8' and '>f8' are two members
        if k is None:
            k = by_dtype[array.dtype.str] = len(members)
            members.append({"dtype": np.lib.format.dtype_to_descr(array.dtype), "elements": 0})
            packed.append([])
        member = members[k]
        member_column.append(k)
        offset_column.append(member["elements"])
        shape_column.append(array.shape)  # a tuple, written as a JSON list
        member["elements"] += array.size
        packed[k].append(array)
    return members, {"member": member_column, "offset": offset_column, "shape": shape_column}, packed


def _write_arrays(out: IO[bytes], arrays: list[NDArray[Any]]) -> None:
    """Write the arrays' bytes one after the other, in C order: small ones gathered into pieces of about 1 MiB."""
    pending = bytearray()
    for array in arrays:
        if array.nbytes < _DIRECT:
            pending += array.tobytes()
            if len(pending) >= _CHUNK:
                out.write(pending)
                pending = bytearray()
            continue
        if pending:
            out.write(pending)
            pending = bytearray()
        for piece in _pieces(array):
            out.write(piece)
    if pending:
        out.write(pending)


def _write_archive(path: PathLike, header: dict[str, Any], arrays: list[NDArray[Any]]) -> None:
    members, columns, packed = _pack(arrays)
    text = json.dumps({**header, "members": members, "arrays": columns}, allow_nan=True, separators=(",", ":"))

    def write(f: IO[bytes]) -> None:
        sealing = _SealingWriter(f)
        with zipfile.ZipFile(sealing, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(_zip_info(_HEADER, 0), text.encode("utf-8"))
            for k, (member, group) in enumerate(zip(members, packed)):
                npy = _npy_header(group[0].dtype, member["elements"])
                size = len(npy) + member["elements"] * group[0].dtype.itemsize
                with zf.open(_zip_info(_packed(k), size), "w", force_zip64=size > zipfile.ZIP64_LIMIT) as out:
                    out.write(npy)
                    _write_arrays(out, group)
            zf.comment = _PLACEHOLDER
        sealing.seal()

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
