"""lucid.serialization against crafted files whose digest is right: every one is a bounded ValueError.

The SHA-256 trailer detects damage, not tampering: anyone can re-seal a file
(:func:`archives.reseal` does here).  So a re-sealed file with a hostile header, layout
or zip directory must still be refused with a ``ValueError`` that names the
file and the field, before anything large is allocated or any array is read,
and with a message of bounded length.  These are version 2 files (arrays packed
into one ``.npy`` member per dtype); ``test_serialization_v1.py`` crafts
version 1 files.
"""

# ruff: noqa: E501  (one table row per line reads better than wrapped rows)

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from archives import (
    DIGEST,
    every_resealed_byte_change,
    npy_header,
    opened_members,
    patch_central_size,
    refusal,
    reseal,
    saved_state,
    traced_peak,
)
from support import same

from lucid import serialization


def _build(members: list[tuple[str, bytes]]) -> bytes:
    """A sealed archive of stored members, as a forger would write it."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
        zf.comment = b"0" * DIGEST
    return reseal(buffer.getvalue())


def _members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(name, zf.read(name)) for name in zf.namelist()]


@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    """A saved state_dict with a scalar and three arrays (centered, momentum)."""
    path, _ = saved_state(tmp_path)
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
def _claiming(h: dict[str, Any], elements: int, last: int) -> dict[str, Any]:
    """``h`` with member 0 claiming ``elements`` and the last array ``last`` of them."""
    shapes = [*h["arrays"]["shape"][:-1], [last]]
    return {**h, "members": [{"dtype": "<f8", "elements": elements}], "arrays": {**h["arrays"], "shape": shapes}}


CLAIMS: list[tuple[str, Callable[[dict[str, Any]], Any], bytes | None, str]] = [
    ("header-claims-elements", lambda h: _claiming(h, 10**12, 10**12 - 6), None, "shape (9,), expected (1000000000000,)"),
    ("npy-claims-elements", lambda h: h, npy_header((10**12,)) + bytes(72), "packed/0.npy: shape (1000000000000,), expected (9,)"),
    ("both-claim-elements", lambda h: _claiming(h, 10**12, 10**12 - 6), npy_header((10**12,)) + bytes(72), "packed/0.npy: 72 data bytes for 1000000000000 elements"),
    ("npy-claims-a-matrix", lambda h: h, npy_header((10**6, 10**6)) + bytes(24), "packed/0.npy: shape (1000000, 1000000)"),
    ("array-claims-elements", lambda h: {**h, "arrays": {**h["arrays"], "shape": [[3], [3], [10**7, 10**7]]}}, None, "arrays['shape'][2]: 100000000000000 elements from offset 6 overrun the 9"),
    ("header-claims-members", lambda h: {**h, "members": h["members"] * 1000}, None, "members: the header lists 1000 members, the archive holds 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "member", "needle"), [case[1:] for case in CLAIMS], ids=[case[0] for case in CLAIMS]
)
def test_claimed_counts_and_sizes_are_checked_before_anything_is_allocated(
    state_file, mutate, member, needle, tally, monkeypatch
) -> None:
    """Element counts claimed by the header, the .npy header or both, against the member's real size.

    Refused without reading any array: only the header and the packed
    member's ``.npy`` header are read (each member opened once at most), and
    the peak traced memory stays far below what the claim would need.
    """
    members = _members(state_file)
    if member is not None:
        members = [(name, member if name == "packed/0.npy" else data) for name, data in members]
    crafted = state_file.with_name("claims.npz")
    crafted.write_bytes(_build([("header.json", json.dumps(mutate(_header(state_file))).encode()), *members[1:]]))
    opened = opened_members(monkeypatch)
    with tally.case():
        message, peak = traced_peak(lambda: refusal(crafted))
        assert needle in message, message
        assert opened in (["header.json"], ["header.json", "packed/0.npy"]) and peak < 1 << 20, (opened, peak)


def test_a_claimed_member_size_beyond_the_file_is_refused_before_allocating(state_file, tally, monkeypatch) -> None:
    """A member whose .npy header, header and zip directory agree on 4 GB, in a file of 1 kB."""
    n = 499_999_000
    npy = npy_header((n,))
    members = [
        (name, npy + np.zeros(3).tobytes() if name == "packed/0.npy" else data) for name, data in _members(state_file)
    ]
    members[0] = ("header.json", json.dumps(_claiming(_header(state_file), n, n - 6)).encode())
    crafted = state_file.with_name("size.npz")
    crafted.write_bytes(patch_central_size(_build(members), "packed/0.npy", len(npy) + 8 * n))
    opened = opened_members(monkeypatch)
    with tally.case():
        message, peak = traced_peak(lambda: refusal(crafted))
        assert "'packed/0.npy' claims 3999992128 bytes, beyond the end" in message and peak < 1 << 20, (message, peak)
        assert opened == []  # refused from the zip directory alone


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
    ("version-2-float", lambda h: {**h, "version": 2.0}, "version"),
    ("version-1-keys", lambda h: {**h, "version": 1}, "unexpected ['members']"),
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


def _columns(h: dict[str, Any], **columns: Any) -> dict[str, Any]:
    return {**h, "arrays": {**h["arrays"], **columns}}


def _member(h: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {**h, "members": [{**h["members"][0], **values}]}


#: The layout of the state file: one member of 9 float64, three arrays of 3 in it.
LAYOUT_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("arrays-true", lambda h: {**h, "arrays": True}, "arrays: must be an object, found True"),
    ("arrays-list", lambda h: {**h, "arrays": [0, 1, 2]}, "arrays: must be an object, found a list of 3 items"),
    ("arrays-missing-column", lambda h: {**h, "arrays": {k: v for k, v in h["arrays"].items() if k != "offset"}}, "arrays: must have exactly the keys"),
    ("arrays-extra-column", lambda h: _columns(h, dtype=["<f8"] * 3), "arrays: must have exactly the keys"),
    ("column-not-list", lambda h: _columns(h, member=0), "arrays['member']: must be a list"),
    ("columns-unequal", lambda h: _columns(h, shape=[[3], [6]]), "arrays: 3 members, 3 offsets and 2 shapes"),
    ("member-true", lambda h: _columns(h, member=[True, 0, 0]), "arrays['member'][0]: must be an integer >= 0"),
    ("member-float", lambda h: _columns(h, member=[0, 0.0, 0]), "arrays['member'][1]: must be an integer >= 0"),
    ("member-negative", lambda h: _columns(h, member=[0, 0, -1]), "arrays['member'][2]: must be an integer >= 0"),
    ("member-out-of-range", lambda h: _columns(h, member=[0, 1, 0]), "arrays['member'][1]: member 1 does not exist"),
    ("offset-gap", lambda h: _columns(h, offset=[0, 4, 6]), "arrays['offset'][1]: 4, expected 3"),
    ("offset-overlap", lambda h: _columns(h, offset=[0, 2, 6]), "arrays['offset'][1]: 2, expected 3"),
    ("offset-float", lambda h: _columns(h, offset=[0, 3.0, 6]), "arrays['offset'][1]: must be an integer >= 0"),
    ("offset-negative", lambda h: _columns(h, offset=[-1, 3, 6]), "arrays['offset'][0]: must be an integer >= 0"),
    ("shape-negative", lambda h: _columns(h, shape=[[3], [-3], [3]]), "arrays['shape'][1][0]: must be an integer >= 0"),
    ("shape-true", lambda h: _columns(h, shape=[[3], [3], [True, 3]]), "arrays['shape'][2][0]: must be an integer >= 0"),
    ("shape-float", lambda h: _columns(h, shape=[[3.0], [3], [3]]), "arrays['shape'][0][0]: must be an integer >= 0"),
    ("shape-not-list", lambda h: _columns(h, shape=[3, [3], [3]]), "arrays['shape'][0]: must be a list"),
    ("shape-65-dimensions", lambda h: _columns(h, shape=[[1] * 65, [3], [3]]), "arrays['shape'][0]: 65 dimensions"),
    ("shape-overrun", lambda h: _columns(h, shape=[[3], [3], [4]]), "arrays['shape'][2]: 4 elements from offset 6 overrun the 9 of packed/0.npy"),
    ("shape-huge", lambda h: _columns(h, shape=[[3], [3], [10**30]]), "arrays['shape'][2]: 1000000000000000000000000000000 elements"),
    ("arrays-cover-less", lambda h: _columns(h, shape=[[3], [3], [2]]), "arrays: they cover 8 of the 9 elements of packed/0.npy"),
    ("arrays-fewer", lambda h: {**h, "arrays": {k: v[:2] for k, v in h["arrays"].items()}}, "arrays: they cover 6 of the 9 elements"),
    ("members-not-list", lambda h: {**h, "members": {}}, "members: must be a list"),
    ("members-more", lambda h: {**h, "members": h["members"] * 2}, "members: the header lists 2 members, the archive holds 1"),
    ("members-none", lambda h: {**h, "members": []}, "members: the header lists 0 members"),
    ("member-not-object", lambda h: {**h, "members": [9]}, "members[0]: must be an object"),
    ("member-extra-key", lambda h: _member(h, order="C"), "members[0]: must have exactly the keys 'dtype' and 'elements'"),
    ("elements-true", lambda h: _member(h, elements=True), "members[0]['elements']: must be an integer >= 0"),
    ("elements-float", lambda h: _member(h, elements=9.0), "members[0]['elements']: must be an integer >= 0"),
    ("elements-more", lambda h: _member(h, elements=10), "packed/0.npy: shape (9,), expected (10,) as members[0] says"),
    ("dtype-other", lambda h: _member(h, dtype="<f4"), "members[0]['dtype']: '<f4', but packed/0.npy holds '<f8'"),
    ("dtype-not-string", lambda h: _member(h, dtype=8), "members[0]['dtype']: 8, but packed/0.npy holds '<f8'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [case[1:] for case in STATE_CASES + LAYOUT_CASES],
    ids=[case[0] for case in STATE_CASES + LAYOUT_CASES],
)
def test_a_crafted_state_header_is_a_value_error_naming_the_file_and_the_field(
    state_file, mutate, needle, tally
) -> None:
    changed = mutate(_header(state_file))
    text = changed if isinstance(changed, (str, bytes)) else json.dumps(changed)
    crafted = _with_header(state_file, text)
    with tally.case():
        message = refusal(crafted)
        assert needle in message, message


PARAMETER_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("name-duplicate", lambda h: {**h, "names": ["a", "a"]}, "names[1]"),
    ("name-not-string", lambda h: {**h, "names": ["a", 1]}, "names[1]"),
    ("names-fewer", lambda h: {**h, "names": ["a"]}, "names"),
    ("names-not-list", lambda h: {**h, "names": "ab"}, "names"),
    ("version-true", lambda h: {**h, "version": True}, "version"),
    ("arrays-huge", lambda h: {**h, "arrays": {**h["arrays"], "shape": [[10**7], [3]]}}, "arrays['shape'][0]: 10000000 elements"),
    ("arrays-fewer", lambda h: {**h, "arrays": {k: v[1:] for k, v in h["arrays"].items()}}, "arrays['offset'][0]: 2, expected 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mutate", "needle"), [case[1:] for case in PARAMETER_CASES], ids=[case[0] for case in PARAMETER_CASES]
)
def test_a_crafted_parameter_header_is_a_value_error_naming_the_file_and_the_field(
    parameter_file, mutate, needle, tally
) -> None:
    crafted = _with_header(parameter_file, json.dumps(mutate(_header(parameter_file))))
    with tally.case():
        message = refusal(crafted, serialization.load_parameters)
        assert needle in message, message


def test_every_resealed_byte_change_loads_or_is_a_value_error(state_file, tally) -> None:
    """Change each byte three ways and re-seal: the file loads, or is refused with a ValueError naming it."""
    data = state_file.read_bytes()
    every_resealed_byte_change(data, state_file.with_name("flipped.npz"), tally)
    assert tally.handled == tally.tried == 3 * (len(data) - DIGEST)


def test_a_file_written_by_zipfile_loads_the_same(state_file) -> None:
    """What Lucid wrote before it streamed (zipfile, seeking back to each local header): same layout, same result."""
    rebuilt = state_file.with_name("zipfile.npz")
    rebuilt.write_bytes(_build(_members(state_file)))
    assert rebuilt.read_bytes() != state_file.read_bytes()
    assert same(serialization.load_state_dict(rebuilt), serialization.load_state_dict(state_file))
