"""Helpers shared by the serialization tests: crafting, re-sealing and watching archives.

Imported as ``archives`` (pytest puts this folder on sys.path, as for ``support``).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lucid import serialization
from lucid.nn import Parameter
from lucid.optim import RMSprop

#: The SHA-256 trailer: 64 hex digits, the archive's zip comment.
DIGEST = 64
#: How long a refusal's message may be beyond the file's name.
MESSAGE_BOUND = 400


def reseal(data: bytes) -> bytes:
    """Replace the last 64 bytes (the zip comment) by the hex SHA-256 of everything before them."""
    body = data[:-DIGEST]
    return body + hashlib.sha256(body).hexdigest().encode("ascii")


def patch_central_size(archive: bytes, member: str, size: int) -> bytes:
    """Set ``member``'s sizes in the zip's central directory to ``size`` (the local header is left alone), re-sealed."""
    data = bytearray(archive)
    at = 0
    while True:
        at = data.index(b"PK\x01\x02", at)
        (name_length,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + name_length] == member.encode():
            struct.pack_into("<LL", data, at + 20, size, size)
            return reseal(bytes(data))
        at += 4


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header for C-ordered float64 of ``shape``, with no data after it."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def refusal(path: Path, load: Callable[[Path], Any] = serialization.load_state_dict) -> str:
    """Load ``path``; return the ValueError's message after checking it names the file and is bounded."""
    with pytest.raises(ValueError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    assert len(message) <= len(repr(str(path))) + MESSAGE_BOUND, message[:1000]
    return message


def every_resealed_byte_change(data: bytes, crafted: Path, tally: Any) -> None:
    """Change each byte of ``data`` but the digest three ways, re-seal, write to ``crafted`` and load it.

    Each must load, or be refused with a ValueError that names the file and is
    bounded; each is one case of ``tally``.
    """
    for i in range(len(data) - DIGEST):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[i] ^= mask
            crafted.write_bytes(reseal(bytes(damaged)))
            with tally.case():
                try:
                    serialization.load_state_dict(crafted)
                except ValueError as err:
                    assert str(crafted) in str(err) and len(str(err)) <= len(repr(str(crafted))) + MESSAGE_BOUND


def opened_members(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of every member zipfile opens from now on."""
    opened: list[str] = []
    original = zipfile.ZipFile.open

    def spy(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(name.filename if isinstance(name, zipfile.ZipInfo) else name)
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    return opened


def traced_peak(action: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``action`` under tracemalloc; return its result and the peak traced bytes."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def stepped() -> RMSprop:
    """An RMSprop after one step with every state key (centered, momentum): a scalar and three arrays of 3."""
    p = Parameter(np.arange(3.0))
    opt = RMSprop([p], momentum=0.9, centered=True)
    p.grad = np.ones(3)
    opt.step()
    return opt


def saved_state(tmp_path: Path) -> tuple[Path, RMSprop]:
    """:func:`stepped`'s state_dict saved as ``tmp_path / "opt.npz"``; the path and the optimizer."""
    opt = stepped()
    path = tmp_path / "opt.npz"
    serialization.save_state_dict(opt.state_dict(), path)
    return path, opt


def layouts() -> list[np.ndarray]:
    """Fortran-ordered, strided, big-endian, complex 0-d, empty and bool arrays (the Fortran one first)."""
    base = np.arange(24.0).reshape(4, 6)
    return [
        np.asfortranarray(base),
        base[:, ::2],
        base.astype(">f8"),
        np.array(3 + 4j, dtype=np.complex64),
        np.zeros((0, 3), np.float32),
        np.array([True, False]),
    ]


def pickled_objects(monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, list[str]]:
    """An object array whose unpickling would run code, with pickle.load and pickle.loads made to fail.

    Returns the array and the list the code would append to: it stays empty
    unless something unpickled the array.
    """
    executed: list[str] = []

    class Payload:
        def __reduce__(self):
            return (executed.append, ("code from the file ran",))

    def no_unpickling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pickle was called")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    return np.array([Payload(), None], dtype=object), executed
