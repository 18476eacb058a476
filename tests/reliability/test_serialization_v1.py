"""lucid.serialization reads format version 1, one ``.npy`` member per array, as earlier releases wrote it.
:func:`version_1` writes such a file byte for byte as the first release did
(``zipfile`` writing to a seekable buffer) or as the streaming release did (a
data descriptor after each member).  Those files load bit for bit, Fortran order
kept, and crafted ones are refused as strictly as version 2 files: the array
count the header claims against the members before anything is allocated,
every ``.npy`` header against its member's real size, object arrays before
NumPy reads them.
"""

# ruff: noqa: E501  (one table row per line reads better than wrapped rows)

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from archives import (
    DIGEST,
    every_resealed_byte_change,
    layouts,
    npy_header,
    opened_members,
    patch_central_size,
    pickled_objects,
    refusal,
    reseal,
    stepped,
    traced_peak,
)
from support import same

from lucid import serialization
from lucid.nn import Parameter
from lucid.optim import RMSprop

_DATE = (1980, 1, 1, 0, 0, 0)
STATE = "lucid.optimizer_state_dict"


class _Unseekable(io.RawIOBase):
    """A stream zipfile can tell on but not seek in: it writes a data descriptor after each member."""

    def __init__(self, target: io.BytesIO) -> None:
        self._target = target

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._target.write(data)

    def tell(self) -> int:
        return self._target.tell()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def version_1(header: dict[str, Any], members: list[bytes], *, descriptors: bool = False) -> bytes:
    """A sealed version 1 file: ``header`` (with ``version`` and ``arrays`` added) and ``.npy`` members.

    Byte for byte what the first release wrote, or with ``descriptors`` what
    the streaming release wrote (each member's CRC and sizes after its data,
    mode 0o644), for the same header and arrays.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(_Unseekable(buffer) if descriptors else buffer, "w", zipfile.ZIP_STORED) as zf:
        text = json.dumps({"format": header["format"], "version": 1, **header, "arrays": len(members)}, allow_nan=True)
        names = ["header.json"] + [f"arrays/{i}.npy" for i in range(len(members))]
        for name, data in zip(names, [text.encode(), *members]):
            info = zipfile.ZipInfo(name, _DATE)
            info.external_attr = (0o644 << 16) if descriptors else 0
            zf.writestr(info, data)
        zf.comment = b"0" * DIGEST
    return reseal(buffer.getvalue())


def state_header(state_dict: dict[str, Any]) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The version 1 header of a state_dict (arrays numbered in order) and its arrays."""
    arrays: list[np.ndarray] = []
    entries = []
    for index, entry in state_dict["state"].items():
        values: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                values[key] = {"array": len(arrays)}
                arrays.append(value)
            else:
                values[key] = {"scalar": value}
        entries.append({"index": index, "values": values})
    header = {"format": STATE, "param_groups": [dict(g) for g in state_dict["param_groups"]], "state": entries}
    return header, arrays


def _state(arrays: list[np.ndarray]) -> dict[str, Any]:
    return {
        "state": {i: {"step": 1.0, "square_avg": a} for i, a in enumerate(arrays)},
        "param_groups": [{"lr": 0.1, "params": list(range(len(arrays)))}],
    }


@pytest.fixture
def trained() -> dict[str, Any]:
    """An RMSprop state_dict with every state key (centered, momentum): a scalar and three arrays."""
    return stepped().state_dict()


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("descriptors", [False, True], ids=["seeking", "data-descriptors"])
def test_a_version_1_state_file_loads_bit_for_bit_in_every_layout(descriptors, tmp_path) -> None:
    """Fortran-ordered, strided, big-endian, 0-d, empty, bool arrays; the Fortran one stays Fortran-ordered."""
    arrays = [
        *layouts(),
        np.arange(6 << 18, dtype=np.float64).reshape(2, -1),  # 6 MiB: read 1 MiB at a time
    ]
    state = _state(arrays)
    header, listed = state_header(state)
    path = tmp_path / "v1.npz"
    path.write_bytes(version_1(header, [_npy(a) for a in listed], descriptors=descriptors))
    loaded = serialization.load_state_dict(path)
    assert same(loaded, state)
    assert loaded["state"][0]["square_avg"].flags.f_contiguous
    assert not loaded["state"][0]["square_avg"].flags.c_contiguous


def test_an_optimizer_resumes_from_a_version_1_file(trained, tmp_path) -> None:
    header, arrays = state_header(trained)
    path = tmp_path / "v1.npz"
    path.write_bytes(version_1(header, [_npy(a) for a in arrays]))
    restored = RMSprop([Parameter(np.arange(3.0))], momentum=0.9, centered=True)
    restored.load_state_dict(serialization.load_state_dict(path))
    assert same(restored.state_dict(), trained)


def test_a_version_1_parameter_file_loads_into_a_module(tmp_path) -> None:
    from lucid.nn import Module

    module = Module()
    module.w = Parameter(np.zeros((2, 3), np.float32))
    values = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = tmp_path / "p1.npz"
    path.write_bytes(version_1({"format": "lucid.parameters", "names": ["w"]}, [_npy(values["w"])]))
    assert same(serialization.load_parameters(path, into=module), values)
    assert same(module.w.data, values["w"])


# ----------------------------------------------------------- crafted files
@pytest.mark.parametrize("claimed", [4, 10**7], ids=["one-more", "ten-million"])
def test_a_claimed_array_count_is_checked_against_the_members_before_anything_is_allocated(
    claimed, tmp_path, tally, monkeypatch
) -> None:
    """The 291-byte file: a valid digest, no arrays, a header claiming ten million of them.

    Refused from the header alone: no array member is opened, and the peak
    traced memory stays far below what ten million arrays would need.
    """
    crafted = tmp_path / "count.npz"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(
            "header.json",
            json.dumps({"format": STATE, "version": 1, "param_groups": [], "state": [], "arrays": claimed}),
        )
        zf.comment = b"0" * DIGEST
    crafted.write_bytes(reseal(buffer.getvalue()))
    opened = opened_members(monkeypatch)
    with tally.case():
        message, peak = traced_peak(lambda: refusal(crafted))
        assert "arrays" in message and str(claimed) in message, message
        assert opened == ["header.json"] and peak < 1 << 20, (opened, peak)


def test_a_claimed_member_size_beyond_the_file_is_refused_before_allocating(trained, tmp_path, tally) -> None:
    """A member whose .npy header and zip directory agree on 4 GB, in a file of 1 kB."""
    header, arrays = state_header(trained)
    n = 499_999_000
    npy = npy_header((n,))
    members = [npy + np.zeros(3).tobytes()] + [_npy(a) for a in arrays[1:]]
    crafted = tmp_path / "size.npz"
    crafted.write_bytes(patch_central_size(version_1(header, members), "arrays/0.npy", len(npy) + 8 * n))
    with tally.case():
        message, peak = traced_peak(lambda: refusal(crafted))
        assert "arrays/0.npy" in message and "beyond the end" in message and peak < 16 << 20, (message, peak)


@pytest.mark.parametrize(
    ("member", "needle"),
    [
        (lambda: npy_header((100000, 100000)).replace(b"(100000, 100000)", b"(10**6, 10**6)  "), "malformed .npy header"),
        (lambda: _npy(np.zeros(3)).replace(b"(3,)", b"(9,)"), "data bytes for shape (9,)"),
        (lambda: b"\x93NUMPY\x03\x00" + bytes(40), "not a .npy file of version 1.0 or 2.0"),
        (lambda: b"\x93NUMPY\x01\x00\xff\xff" + bytes(40), "a .npy header of 65535 bytes"),
        (lambda: _npy(np.array(["a"])), "holds Python objects or is not numeric"),
    ],
    ids=["expression-shape", "more-than-it-holds", "npy-version-3", "npy-header-too-long", "unicode-dtype"],
)  # fmt: skip
def test_a_crafted_npy_member_is_refused(member, needle, trained, tmp_path, tally) -> None:
    header, arrays = state_header(trained)
    crafted = tmp_path / "npy.npz"
    crafted.write_bytes(version_1(header, [_npy(arrays[0]), member(), _npy(arrays[2])]))
    with tally.case():
        message = refusal(crafted)
        assert "arrays/1.npy" in message and needle in message, message


def test_object_arrays_are_refused_without_unpickling(trained, tmp_path, tally, monkeypatch) -> None:
    payload, executed = pickled_objects(monkeypatch)
    header, arrays = state_header(trained)
    objects = _npy(payload, allow_pickle=True)
    crafted = tmp_path / "objects.npz"
    crafted.write_bytes(version_1(header, [objects] * len(arrays)))
    with tally.case():
        assert "holds Python objects" in refusal(crafted)
    assert not executed


HEADER_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("arrays-true", lambda h: {**h, "arrays": True}, "arrays"),
    ("arrays-float", lambda h: {**h, "arrays": 3.0}, "arrays"),
    ("arrays-infinity", lambda h: {**h, "arrays": float("inf")}, "arrays"),
    ("arrays-fewer", lambda h: {**h, "arrays": 2}, "arrays"),
    ("members-key", lambda h: {**h, "members": []}, "unexpected ['members']"),
    ("array-ref-out-of-range", lambda h: {**h, "state": [{**h["state"][0], "values": {"square_avg": {"array": 7}}}]}, "['square_avg']['array']"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "needle"), [case[1:] for case in HEADER_CASES], ids=[case[0] for case in HEADER_CASES]
)
def test_a_crafted_version_1_header_is_a_value_error_naming_the_field(mutate, needle, trained, tmp_path, tally) -> None:
    header, arrays = state_header(trained)
    data = version_1(header, [_npy(a) for a in arrays])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    changed = mutate(json.loads(members[0][1]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(members[0][0], json.dumps(changed))
        for info, raw in members[1:]:
            zf.writestr(info, raw)
        zf.comment = b"0" * DIGEST
    crafted = tmp_path / "header.npz"
    crafted.write_bytes(reseal(buffer.getvalue()))
    with tally.case():
        message = refusal(crafted)
        assert needle in message, message


def test_a_misnamed_member_is_refused(trained, tmp_path, tally) -> None:
    header, arrays = state_header(trained)
    data = version_1(header, [_npy(a) for a in arrays]).replace(b"arrays/2.npy", b"arrays/9.npy")
    crafted = tmp_path / "names.npz"
    crafted.write_bytes(reseal(data))
    with tally.case():
        assert "member 3 is 'arrays/9.npy', expected 'arrays/2.npy'" in refusal(crafted)


def test_every_resealed_byte_change_loads_or_is_a_value_error(trained, tmp_path, tally) -> None:
    """Change each byte of a version 1 file three ways and re-seal: it loads, or is refused naming the file."""
    header, arrays = state_header(trained)
    data = version_1(header, [_npy(a) for a in arrays], descriptors=True)
    every_resealed_byte_change(data, tmp_path / "flipped.npz", tally)
    assert tally.handled == tally.tried == 3 * (len(data) - DIGEST)
