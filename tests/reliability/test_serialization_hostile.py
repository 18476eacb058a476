"""lucid.serialization against crafted files whose digest is right: every one is a bounded ValueError.

The SHA-256 trailer detects damage, not tampering: anyone can re-seal a file
(:func:`_reseal` does here).  So a re-sealed file with a hostile header or zip
directory must still be refused with a ``ValueError`` that names the file and
the field, quickly, in little memory and with a message of bounded length.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import same

from lucid import serialization
from lucid.nn import Parameter
from lucid.optim import RMSprop

_DIGEST = 64
#: How long a refusal's message may be beyond the file's name.
_MESSAGE_BOUND = 400


def _reseal(data: bytes) -> bytes:
    """Replace the last 64 bytes (the zip comment) by the hex SHA-256 of everything before them."""
    body = data[:-_DIGEST]
    return body + hashlib.sha256(body).hexdigest().encode("ascii")


def _build(members: list[tuple[str, bytes]]) -> bytes:
    """A sealed archive of stored members, as a forger would write it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
        zf.comment = b"0" * _DIGEST
    return _reseal(buffer.getvalue())


def _members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(name, zf.read(name)) for name in zf.namelist()]


def _refusal(path: Path, load: Callable[[Path], Any] = serialization.load_state_dict) -> str:
    """Load ``path``; return the ValueError's message after checking it names the file and is bounded."""
    with pytest.raises(ValueError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    assert len(message) <= len(repr(str(path))) + _MESSAGE_BOUND, message[:1000]
    return message


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    """A saved state_dict with a scalar and three arrays (centered, momentum)."""
    p = Parameter(np.arange(3.0))
    opt = RMSprop([p], momentum=0.9, centered=True)
    p.grad = np.ones(3)
    opt.step()
    path = tmp_path / "opt.npz"
    serialization.save_state_dict(opt.state_dict(), path)
    return path


@pytest.fixture
def parameter_file(tmp_path: Path) -> Path:
    path = tmp_path / "params.npz"
    serialization.save_parameters({"a": np.zeros(2), "b": np.ones(3)}, path)
    return path


def _with_header(path: Path, text: str | bytes) -> Path:
    """``path``'s archive with its header replaced by ``text`` (arrays kept), re-sealed, written next to it."""
    members = [(name, data) for name, data in _members(path) if name != "header.json"]
    raw = text.encode("utf-8") if isinstance(text, str) else text
    crafted = path.with_name("crafted.npz")
    crafted.write_bytes(_build([("header.json", raw), *members]))
    return crafted


def _header(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("header.json"))


# ------------------------------------------------- claimed counts and sizes
@pytest.mark.parametrize("claimed", [4, 10**7], ids=["one-more", "ten-million"])
def test_a_claimed_array_count_is_checked_against_the_members_before_anything_is_allocated(
    state_file, claimed, tally
) -> None:
    """The issue's 291-byte file: a valid digest, no arrays, a header claiming ten million of them."""
    header = {"format": "lucid.optimizer_state_dict", "version": 1, "param_groups": [], "state": [], "arrays": claimed}
    crafted = state_file.with_name("count.npz")
    crafted.write_bytes(_build([("header.json", json.dumps(header).encode())]))
    with tally.case():
        tracemalloc.start()
        try:
            start = time.process_time()
            message = _refusal(crafted)
            elapsed = time.process_time() - start
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert "arrays" in message
        assert elapsed < 1.0 and peak < 4 << 20, (elapsed, peak)


def _patch_central_size(archive: bytes, member: str, size: int) -> bytes:
    """Set ``member``'s sizes in the zip's central directory to ``size`` (the local header is left alone)."""
    data = bytearray(archive)
    at = 0
    while True:
        at = data.index(b"PK\x01\x02", at)
        (name_length,) = struct.unpack_from("<H", data, at + 28)
        if data[at + 46 : at + 46 + name_length] == member.encode():
            struct.pack_into("<LL", data, at + 20, size, size)
            return _reseal(bytes(data))
        at += 4


def test_a_claimed_member_size_beyond_the_file_is_refused_before_allocating(state_file, tally) -> None:
    """A member whose .npy header and zip directory agree on 4 GB, in a file of 1 kB."""
    n = 499_999_000
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
    member = npy.getvalue() + np.zeros(3).tobytes()
    members = [(name, member if name == "arrays/0.npy" else data) for name, data in _members(state_file)]
    crafted = state_file.with_name("size.npz")
    crafted.write_bytes(_patch_central_size(_build(members), "arrays/0.npy", len(npy.getvalue()) + 8 * n))
    with tally.case():
        tracemalloc.start()
        try:
            message = _refusal(crafted)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert "arrays/0.npy" in message and peak < 16 << 20, (message, peak)


def test_a_npy_header_claiming_more_than_its_member_holds_is_refused(state_file, tally) -> None:
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    members = [
        (name, npy.getvalue() + bytes(24) if name == "arrays/1.npy" else data) for name, data in _members(state_file)
    ]
    crafted = state_file.with_name("npy.npz")
    crafted.write_bytes(_build(members))
    with tally.case():
        assert "arrays/1.npy" in _refusal(crafted)


# ------------------------------------------------------------ crafted headers
def _deep(h: dict[str, Any]) -> str:
    return json.dumps({**h, "param_groups": "X"}).replace('"X"', "[" * 100_000 + "]" * 100_000)


def _entry(h: dict[str, Any], **values: Any) -> dict[str, Any]:
    entry = h["state"][0]
    return {**h, "state": [{**entry, "values": {**entry["values"], **values}}]}


def _group(h: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {**h, "param_groups": [{**h["param_groups"][0], **values}]}


def _index(h: dict[str, Any], index: Any) -> dict[str, Any]:
    return {**h, "state": [{**h["state"][0], "index": index}]}


STATE_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("version-true", lambda h: {**h, "version": True}, "version"),
    ("version-float", lambda h: {**h, "version": 1.0}, "version"),
    ("version-nan", lambda h: {**h, "version": float("nan")}, "version"),
    ("version-unknown", lambda h: {**h, "version": 99}, "version"),
    ("arrays-true", lambda h: {**h, "arrays": True}, "arrays"),
    ("arrays-float", lambda h: {**h, "arrays": 3.0}, "arrays"),
    ("arrays-infinity", lambda h: {**h, "arrays": float("inf")}, "arrays"),
    ("arrays-fewer", lambda h: {**h, "arrays": 2}, "arrays"),
    ("index-infinity", lambda h: _index(h, float("inf")), "state[0]['index']"),
    ("index-true", lambda h: _index(h, True), "state[0]['index']"),
    ("index-negative", lambda h: _index(h, -1), "state[0]['index']"),
    ("index-float", lambda h: _index(h, 0.0), "state[0]['index']"),
    ("index-string", lambda h: _index(h, "0"), "state[0]['index']"),
    ("index-huge-float", lambda h: _index(h, 1e300), "state[0]['index']"),
    (
        "index-duplicate",
        lambda h: {**h, "state": [*h["state"], {"index": 0, "values": {"step": {"scalar": 1.0}}}]},
        "state[1]['index']",
    ),
    ("params-true", lambda h: _group(h, params=[True]), "param_groups[0]['params'][0]"),
    ("params-negative", lambda h: _group(h, params=[-1]), "param_groups[0]['params'][0]"),
    ("params-float", lambda h: _group(h, params=[0.0]), "param_groups[0]['params'][0]"),
    ("params-duplicate", lambda h: _group(h, params=[0, 0]), "param_groups[0]['params'][1]"),
    ("params-not-list", lambda h: _group(h, params=0), "param_groups[0]['params']"),
    ("group-nested-value", lambda h: _group(h, lr=[[0.1]]), "param_groups[0]['lr']"),
    ("group-not-object", lambda h: {**h, "param_groups": [1]}, "param_groups[0]"),
    ("groups-not-list", lambda h: {**h, "param_groups": {}}, "param_groups"),
    ("state-not-list", lambda h: {**h, "state": {}}, "state"),
    ("entry-extra-key", lambda h: {**h, "state": [{**h["state"][0], "extra": 1}]}, "state[0]"),
    ("array-ref-true", lambda h: _entry(h, square_avg={"array": True}), "state[0]['values']['square_avg']['array']"),
    (
        "array-ref-out-of-range",
        lambda h: _entry(h, square_avg={"array": 7}),
        "state[0]['values']['square_avg']['array']",
    ),
    (
        "array-ref-twice",
        lambda h: _entry(h, momentum_buffer={"array": 0}),
        "state[0]['values']['momentum_buffer']['array']",
    ),
    (
        "value-array-and-scalar",
        lambda h: _entry(h, square_avg={"array": 0, "scalar": 1.0}),
        "state[0]['values']['square_avg']",
    ),
    ("value-not-object", lambda h: _entry(h, step=1.0), "state[0]['values']['step']"),
    ("scalar-nested", lambda h: _entry(h, step={"scalar": [1.0]}), "state[0]['values']['step']['scalar']"),
    ("unknown-top-level-key", lambda h: {**h, "extra": 1}, "'extra'"),
    ("missing-top-level-key", lambda h: {k: v for k, v in h.items() if k != "state"}, "'state'"),
    ("duplicate-key", lambda h: '{"format": "lucid.parameters", ' + json.dumps(h)[1:], "duplicate key 'format'"),
    ("deep-nesting", _deep, "header.json"),
    ("not-an-object", lambda h: [], "header.json"),
    ("not-json", lambda h: "{", "header.json"),
    ("not-utf8", lambda h: b"\xff\xfe", "header.json"),
]


@pytest.mark.parametrize(
    ("mutate", "needle"), [case[1:] for case in STATE_CASES], ids=[case[0] for case in STATE_CASES]
)
def test_a_crafted_state_header_is_a_value_error_naming_the_file_and_the_field(
    state_file, mutate, needle, tally
) -> None:
    changed = mutate(_header(state_file))
    text = changed if isinstance(changed, (str, bytes)) else json.dumps(changed)
    crafted = _with_header(state_file, text)
    with tally.case():
        message = _refusal(crafted)
        assert needle in message, message


PARAMETER_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("name-duplicate", lambda h: {**h, "names": ["a", "a"]}, "names[1]"),
    ("name-not-string", lambda h: {**h, "names": ["a", 1]}, "names[1]"),
    ("names-fewer", lambda h: {**h, "names": ["a"]}, "names"),
    ("names-not-list", lambda h: {**h, "names": "ab"}, "names"),
    ("version-true", lambda h: {**h, "version": True}, "version"),
    ("arrays-huge", lambda h: {**h, "arrays": 10**7}, "arrays"),
]


@pytest.mark.parametrize(
    ("mutate", "needle"), [case[1:] for case in PARAMETER_CASES], ids=[case[0] for case in PARAMETER_CASES]
)
def test_a_crafted_parameter_header_is_a_value_error_naming_the_file_and_the_field(
    parameter_file, mutate, needle, tally
) -> None:
    crafted = _with_header(parameter_file, json.dumps(mutate(_header(parameter_file))))
    with tally.case():
        message = _refusal(crafted, serialization.load_parameters)
        assert needle in message, message


def test_every_resealed_byte_change_loads_or_is_a_value_error(state_file, tally) -> None:
    """Change each byte three ways and re-seal: the file loads, or is refused with a ValueError naming it."""
    data = state_file.read_bytes()
    crafted = state_file.with_name("flipped.npz")
    for i in range(len(data) - _DIGEST):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[i] ^= mask
            crafted.write_bytes(_reseal(bytes(damaged)))
            with tally.case():
                try:
                    serialization.load_state_dict(crafted)
                except ValueError as err:
                    assert str(crafted) in str(err) and len(str(err)) <= len(repr(str(crafted))) + _MESSAGE_BOUND
    assert tally.handled == tally.tried == 3 * (len(data) - _DIGEST)


def test_a_file_written_by_zipfile_loads_the_same(state_file) -> None:
    """What Lucid wrote before it streamed (zipfile, seeking back to each local header): same layout, same result."""
    rebuilt = state_file.with_name("zipfile.npz")
    rebuilt.write_bytes(_build(_members(state_file)))
    assert rebuilt.read_bytes() != state_file.read_bytes()
    assert same(serialization.load_state_dict(rebuilt), serialization.load_state_dict(state_file))
