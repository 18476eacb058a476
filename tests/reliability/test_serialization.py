"""lucid.serialization: bitwise round trips, damaged and hostile files refused, atomic writes, the packed layout."""

# ruff: noqa: E501  (one table row per line reads better than wrapped rows)

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from archives import DIGEST, layouts, pickled_objects, reseal, saved_state
from support import same

from conformance import statedict
from conformance.matrix import flag_configs
from lucid import serialization
from lucid.nn import Module, Parameter
from lucid.optim import RMSprop

DTYPES = (np.float32, np.float64, np.complex64, np.complex128)
SHAPES = ((2, 3), (), (5,))


def _trained(config: Any, dtype: Any, seed: int = 0, steps: int = 3) -> tuple[list[Parameter], RMSprop]:
    rng = np.random.default_rng(seed)

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        x = rng.standard_normal(shape) + (1j * rng.standard_normal(shape) if np.dtype(dtype).kind == "c" else 0)
        return np.asarray(x).astype(dtype)

    params = [Parameter(draw(s)) for s in SHAPES]
    hyper = config.hyper(lr=1e-2, alpha=0.9).kwargs()
    opt = RMSprop([{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}], **hyper)
    for _ in range(steps):
        for p in params:
            p.grad = draw(p.shape)
        opt.step()
    return params, opt


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A small saved state_dict with every state key (centered, momentum) and its in-memory original."""
    path, opt = saved_state(tmp_path)
    return path, opt.state_dict()


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("config", list(flag_configs()), ids=lambda c: c.name)
def test_state_dict_round_trip_is_bitwise_and_continues_uninterrupted(config, dtype, tmp_path) -> None:
    params, opt = _trained(config, dtype)
    path = tmp_path / "opt.npz"
    serialization.save_state_dict(opt.state_dict(), path)
    loaded = serialization.load_state_dict(path)
    assert same(loaded, opt.state_dict())

    fresh_params, fresh = _trained(config, dtype, steps=0)
    for p, q in zip(fresh_params, params):
        p.data[...] = q.data
    fresh.load_state_dict(loaded)
    rng = np.random.default_rng(99)
    for _ in range(3):
        for p, q in zip(params, fresh_params):
            p.grad = np.asarray(rng.standard_normal(p.shape)).astype(dtype)
            q.grad = p.grad.copy()
        opt.step()
        fresh.step()
    assert same(fresh.state_dict(), opt.state_dict())
    for p, q in zip(params, fresh_params):
        assert same(q.data, p.data)


def test_torch_state_dict_survives_the_file(tmp_path) -> None:
    """A torch checkpoint converted to NumPy (None, bool and float group values) round-trips and loads."""
    tp = torch.nn.Parameter(torch.arange(4.0, dtype=torch.float64))
    topt = torch.optim.RMSprop([tp], momentum=0.9, centered=True)
    tp.grad = torch.ones(4, dtype=torch.float64)
    topt.step()
    converted = statedict.to_numpy(topt.state_dict())
    serialization.save_state_dict(converted, tmp_path / "t.npz")
    loaded = serialization.load_state_dict(tmp_path / "t.npz")
    assert same(loaded, converted)
    lp = Parameter(tp.detach().numpy().copy())
    lopt = RMSprop([lp])
    lopt.load_state_dict(loaded)
    assert lopt.param_groups[0]["momentum"] == 0.9 and lopt.state[lp]["step"] == 1.0


class _Net(Module):
    def __init__(self, dtype: Any, fill: float) -> None:
        super().__init__()
        self.w = Parameter(np.full((3, 2), fill, dtype))
        self.head = Module()
        self.head.b = Parameter(np.full(2, -fill, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_parameters_round_trip_into_a_module(dtype, tmp_path) -> None:
    source, target = _Net(dtype, 1 / 3), _Net(dtype, 0.0)
    serialization.save_parameters(source, tmp_path / "p.npz")
    loaded = serialization.load_parameters(tmp_path / "p.npz", into=target)
    assert list(loaded) == ["w", "head.b"]
    for (name, p), (_, q) in zip(source.named_parameters(), target.named_parameters()):
        assert same(q.data, p.data) and same(loaded[name], p.data)
    serialization.save_parameters({"a": np.arange(3.0)}, tmp_path / "d.npz")
    serialization.save_parameters([("a", Parameter(np.arange(3.0)))], tmp_path / "l.npz")
    assert same(serialization.load_parameters(tmp_path / "d.npz"), serialization.load_parameters(tmp_path / "l.npz"))


class _Other(Module):
    def __init__(self, shape: tuple[int, ...], dtype: Any, name: str = "w") -> None:
        super().__init__()
        setattr(self, name, Parameter(np.zeros(shape, dtype)))
        self.head = Module()
        self.head.b = Parameter(np.zeros(2, dtype))


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        (_Other((2, 3), np.float64), "'w' is ndarray(shape=(3, 2), dtype=float64), the module's parameter is ndarray(shape=(2, 3)"),
        (_Other((3, 2), np.float32), "'w' is ndarray(shape=(3, 2), dtype=float64), the module's parameter is ndarray(shape=(3, 2), dtype=float32)"),
        (_Other((3, 2), np.float64, name="v"), "missing ['v'], unexpected ['w']"),
    ],
    ids=["shape", "dtype", "name"],
)  # fmt: skip
def test_load_parameters_refuses_a_mismatched_module(module, needle, tmp_path, tally) -> None:
    with tally.case():
        serialization.save_parameters(_Net(np.float64, 1.0), tmp_path / "p.npz")
        before = [p.data.tobytes() for p in module.parameters()]
        with pytest.raises(ValueError) as info:
            serialization.load_parameters(tmp_path / "p.npz", into=module)
        assert needle in str(info.value) and "p.npz" in str(info.value)
        assert [p.data.tobytes() for p in module.parameters()] == before  # head.b matched, yet was not written


# ------------------------------------------------------------- damaged files
def _refused(path: Path, tally: Any) -> None:
    """Loading ``path`` raises a ValueError that names it (try/except: pytest.raises is slow in a loop)."""
    with tally.case():
        try:
            serialization.load_state_dict(path)
        except ValueError as err:
            assert str(path) in str(err)
        else:
            pytest.fail(f"{path} was loaded")


def test_every_truncation_is_refused(saved, tally) -> None:
    path, _ = saved
    data = path.read_bytes()
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        _refused(path, tally)
    assert tally.handled == len(data)


def test_every_flipped_byte_is_refused(saved, tally) -> None:
    """Each single-bit change anywhere in the file: data, zip metadata, header JSON or the digest itself."""
    path, _ = saved
    data = path.read_bytes()
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x01
        path.write_bytes(bytes(damaged))
        _refused(path, tally)
    assert tally.handled == len(data)


def test_refused_files_never_unpickle(saved, tmp_path, tally, monkeypatch) -> None:
    """Object arrays are refused, in a plain np.savez file and in a crafted file whose digest is right."""
    objects, executed = pickled_objects(monkeypatch)

    plain = tmp_path / "savez.npz"
    with open(plain, "wb") as f:
        np.savez(f, square_avg=objects)
    _refused(plain, tally)

    path, _ = saved
    with zipfile.ZipFile(path) as zf:
        header = json.loads(zf.read("header.json"))
    member = io.BytesIO()
    np.lib.format.write_array(member, objects, allow_pickle=True)
    header["members"] = [{"dtype": "|O", "elements": 2}]
    header["arrays"] = {"member": [0, 0, 0], "offset": [0, 0, 0], "shape": [[0], [0], [2]]}
    crafted = io.BytesIO()
    with zipfile.ZipFile(crafted, "w") as zf:
        zf.writestr("header.json", json.dumps(header))
        zf.writestr("packed/0.npy", member.getvalue())
        zf.comment = b"0" * DIGEST
    hostile = tmp_path / "crafted.npz"
    hostile.write_bytes(reseal(crafted.getvalue()))  # re-sealed: anyone can (the digest detects damage, not tampering)
    with tally.case():
        with pytest.raises(ValueError, match="holds Python objects") as info:
            serialization.load_state_dict(hostile)
        assert str(hostile) in str(info.value)
    assert not executed


def test_foreign_and_mismatched_files_are_refused(tmp_path, tally) -> None:
    plain = tmp_path / "plain.npz"
    with open(plain, "wb") as f:
        np.savez(f, square_avg=np.zeros(3))
    _refused(plain, tally)
    params = tmp_path / "params.npz"
    serialization.save_parameters({"w": np.zeros(3)}, params)
    with tally.case():
        with pytest.raises(
            ValueError, match=r"expected a 'lucid\.optimizer_state_dict' file, found format 'lucid\.parameters'"
        ):
            serialization.load_state_dict(params)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _refused(empty, tally)


@pytest.mark.parametrize(
    ("mutate", "error", "needle"),
    [
        (lambda sd: [sd], TypeError, "state_dict must be a dict, got [{"),
        (lambda sd: {**sd, "epoch": 1}, KeyError, "unexpected: 'epoch'"),
        (lambda sd: {**sd, "param_groups": [{**sd["param_groups"][0], "lr": {1, 2}}]}, TypeError, "['lr']: cannot be saved as JSON: {1, 2}"),
        (lambda sd: {**sd, "state": {0: {"square_avg": np.array([object()])}}}, TypeError, "dtype object cannot be saved"),
        (lambda sd: {**sd, "state": {"0": {"step": 1.0}}}, TypeError, "parameter indices must be integers, got '0'"),
        (lambda sd: {**sd, "state": {0: {1: 1.0}}}, TypeError, "keys must be strings, got 1"),
    ],
    ids=["not-a-dict", "extra-key", "set-hyperparameter", "object-array", "string-index", "int-key"],
)  # fmt: skip
def test_save_refuses_what_it_cannot_store_and_keeps_the_old_file(saved, mutate, error, needle, tally) -> None:
    path, original = saved
    before = path.read_bytes()
    with tally.case():
        with pytest.raises(error) as info:
            serialization.save_state_dict(mutate(copy.deepcopy(original)), path)
        assert needle in str(info.value)
        assert path.read_bytes() == before and sorted(os.listdir(path.parent)) == [path.name]


# -------------------------------------------------------------- atomic writes
_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from lucid import serialization

    path, where = sys.argv[1], sys.argv[2]
    new = {"state": {0: {"step": 2.0, "square_avg": np.full(300_000, 2.0)}}, "param_groups": [{"lr": 0.2, "params": [0]}]}

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "mid-write":  # die once 1 MB of the 2.4 MB file is on disk
        write, written = serialization._write_all, [0]
        def half(f, data):
            if written[0] >= 1_000_000:
                f.flush()
                os.fsync(f.fileno())
                die()
            written[0] += len(data)
            write(f, data)
        serialization._write_all = half
    elif where == "before-rename":
        os.replace = die
    elif where == "before-directory-fsync":
        serialization._fsync_directory = die
    if where == "loop":
        for i in range(10**9):
            new["state"][0]["step"] = float(i % 2 + 1)
            serialization.save_state_dict(new, path)
            print(i, flush=True)
    serialization.save_state_dict(new, path)
    """
)


def _old_state() -> dict[str, Any]:
    return {
        "state": {0: {"step": 1.0, "square_avg": np.full(300_000, 1.0)}},
        "param_groups": [{"lr": 0.1, "params": [0]}],
    }


def _child(path: Path, where: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path), where], stdout=subprocess.PIPE, text=True, cwd=path.parent
    )


@pytest.mark.parametrize(
    ("where", "expect"),
    [("mid-write", "old"), ("before-rename", "old"), ("before-directory-fsync", "new")],
)
def test_a_writer_killed_at_each_point_leaves_the_old_or_the_new_file(where, expect, tmp_path) -> None:
    path = tmp_path / "opt.npz"
    serialization.save_state_dict(_old_state(), path)
    child = _child(path, where)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    loaded = serialization.load_state_dict(path)
    assert loaded["param_groups"][0]["lr"] == {"old": 0.1, "new": 0.2}[expect]
    assert np.all(loaded["state"][0]["square_avg"] == {"old": 1.0, "new": 2.0}[expect])


def test_a_writer_killed_at_an_arbitrary_moment_leaves_a_whole_file(tmp_path) -> None:
    """SIGKILL while a child saves in a loop, after it has completed 20 saves: wherever it was, the file is whole."""
    path = tmp_path / "opt.npz"
    serialization.save_state_dict(_old_state(), path)
    child = _child(path, "loop")
    assert child.stdout is not None
    for _ in range(20):
        child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    loaded = serialization.load_state_dict(path)
    assert loaded["state"][0]["step"] in (1.0, 2.0) and loaded["param_groups"][0]["lr"] == 0.2
    assert np.all(loaded["state"][0]["square_avg"] == 2.0)


@pytest.mark.parametrize(
    ("params", "error", "needle"),
    [
        ([np.zeros(3)], TypeError, "params[0] must be a (name, Tensor or ndarray) pair, got ndarray(shape=(3,)"),
        ({"w": [1.0, 2.0]}, TypeError, "parameter 'w' must be a Tensor or ndarray, got [1.0, 2.0]"),
        ({"w": np.array([object()])}, TypeError, "parameter 'w': dtype object cannot be saved"),
        ({"w": np.array(["a"])}, TypeError, "parameter 'w': dtype <U1 cannot be saved"),
        ([("w", np.zeros(1)), ("w", np.ones(1))], ValueError, "parameter names must be distinct"),
        ([(1, np.zeros(1))], TypeError, "params[0] must be a (name, Tensor or ndarray) pair, got (1, "),
    ],
    ids=["bare-array", "list-value", "object-array", "string-array", "duplicate-name", "int-name"],
)
def test_save_parameters_refuses_what_it_cannot_store(params, error, needle, tmp_path, tally) -> None:
    path = tmp_path / "p.npz"
    serialization.save_parameters({"w": np.arange(2.0)}, path)
    before = path.read_bytes()
    with tally.case():
        with pytest.raises(error) as info:
            serialization.save_parameters(params, path)
        assert needle in str(info.value)
        assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["p.npz"]


def test_a_state_file_is_not_taken_for_parameters(saved, tally) -> None:
    path, _ = saved
    with tally.case():
        with pytest.raises(
            ValueError, match=r"expected a 'lucid\.parameters' file, found format 'lucid\.optimizer_state_dict'"
        ):
            serialization.load_parameters(path)


# ---------------------------------------------------------- file permissions
@pytest.mark.parametrize("umask", [0o077, 0o022, 0o002], ids=oct)
def test_a_new_file_honours_the_umask(umask, tmp_path) -> None:
    previous = os.umask(umask)
    try:
        serialization.save_state_dict(_old_state(), tmp_path / "opt.npz")
        serialization.save_parameters({"w": np.zeros(2)}, tmp_path / "p.npz")
    finally:
        os.umask(previous)
    for name in ("opt.npz", "p.npz"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(0o666 & ~umask)


def test_a_replaced_file_keeps_its_mode(saved) -> None:
    path, original = saved
    path.chmod(0o640)
    previous = os.umask(0o077)
    try:
        serialization.save_state_dict(original, path)
    finally:
        os.umask(previous)
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)


# ------------------------------------------------------ layouts and readers
def test_every_layout_round_trips_and_numpy_reads_the_file(tmp_path) -> None:
    """Fortran-ordered, strided, big-endian, 0-d and empty arrays come back bit for bit; np.load reads them too."""
    arrays = [
        *layouts(),
        np.arange(5, dtype=np.uint16)[::-1],
        np.arange(6 << 18, dtype=np.float64).reshape(2, -1)[:, ::3],  # streamed: rows of 2 MiB, each strided
        np.arange(1 << 18, dtype=np.float32).reshape(64, 64, 64)[::-1, ::2],  # streamed in blocks of rows
    ]
    serialization.save_state_dict(_state_of(arrays), tmp_path / "opt.npz")
    loaded = serialization.load_state_dict(tmp_path / "opt.npz")
    for i, a in enumerate(arrays):
        assert same(loaded["state"][i]["square_avg"], np.array(a))
    with zipfile.ZipFile(tmp_path / "opt.npz") as zf:
        header = json.loads(zf.read("header.json"))
        assert zf.namelist() == [
            "header.json",
            "packed/0.npy",
            "packed/1.npy",
            "packed/2.npy",
            "packed/3.npy",
            "packed/4.npy",
            "packed/5.npy",
        ]
    assert [m["dtype"] for m in header["members"]] == ["<f8", ">f8", "<c8", "<f4", "|b1", "<u2"]
    columns = header["arrays"]
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as npz:  # one flat array per dtype, the arrays in C order
        for i, a in enumerate(arrays):
            flat, offset = npz[f"packed/{columns['member'][i]}"], columns["offset"][i]
            assert columns["shape"][i] == list(a.shape)
            assert same(flat[offset : offset + a.size].reshape(a.shape), np.array(a))


def test_loaded_arrays_are_c_contiguous_and_own_their_memory(tmp_path) -> None:
    """Small arrays are copied out of one read, large ones read on their own: none is a view of another."""
    arrays = [np.full(10, 1.0), np.asfortranarray(np.full((300, 200), 2.0)), np.full(3, 3.0), np.array(4.0)]
    serialization.save_state_dict(_state_of(arrays), tmp_path / "opt.npz")
    loaded = [entry["square_avg"] for entry in serialization.load_state_dict(tmp_path / "opt.npz")["state"].values()]
    assert all(a.flags.c_contiguous and a.flags.owndata and a.flags.writeable for a in loaded)
    loaded[0][...] = -1.0
    assert same(loaded[2], np.full(3, 3.0)) and same(loaded[3], np.array(4.0))
    params = serialization.load_parameters(_saved_parameters(tmp_path, arrays))
    assert all(a.flags.c_contiguous and a.flags.owndata for a in params.values())


def _state_of(arrays: list[np.ndarray]) -> dict[str, Any]:
    return {
        "state": {i: {"step": 1.0, "square_avg": a} for i, a in enumerate(arrays)},
        "param_groups": [{"params": list(range(len(arrays)))}],
    }


def _saved_parameters(tmp_path: Path, arrays: list[np.ndarray]) -> Path:
    path = tmp_path / "p.npz"
    serialization.save_parameters({f"p{i}": a for i, a in enumerate(arrays)}, path)
    return path


# ------------------------------------------------------ all-or-nothing loads
class _Three(Module):
    def __init__(self, fill: float) -> None:
        super().__init__()
        self.a = Parameter(np.full(2, fill))
        self.b = Parameter(np.full(3, fill))
        self.c = Parameter(np.full(4, fill))


def test_load_parameters_writes_nothing_when_one_target_is_read_only(tmp_path, tally) -> None:
    serialization.save_parameters(_Three(1.0), tmp_path / "p.npz")
    target = _Three(0.0)
    target.b.data.flags.writeable = False
    before = [p.data.tobytes() for p in target.parameters()]
    with tally.case():
        with pytest.raises(ValueError) as info:
            serialization.load_parameters(tmp_path / "p.npz", into=target)
        assert "'b'" in str(info.value) and "read-only" in str(info.value) and "p.npz" in str(info.value)
        assert [p.data.tobytes() for p in target.parameters()] == before  # 'a' comes first, and was not written


def test_zip64_records_are_read_back_by_lucid_zipfile_and_numpy(tmp_path, monkeypatch) -> None:
    """With zipfile's zip64 thresholds lowered (64 bytes, 1 member), every size, offset and the directory take zip64."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 64)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    arrays = [np.arange(40.0), np.arange(6, dtype=np.int32).reshape(2, 3), np.array(1.5)]
    path = _saved_parameters(tmp_path, arrays)
    data = path.read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # the zip64 end record and its locator
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        members = zf.infolist()[1:]
        assert [info.filename for info in members] == ["packed/0.npy", "packed/1.npy"]
        assert all(info.extra[:2] == b"\x01\x00" for info in members)  # zip64 extra field: sizes and offset
        assert all(info.file_size > 64 and info.header_offset > 64 for info in members)
    loaded = serialization.load_parameters(path)
    with np.load(path, allow_pickle=False) as npz:
        assert same(npz["packed/0"], np.array([*range(40), 1.5]))
        assert same(npz["packed/1"], np.arange(6, dtype=np.int32))
    for i, a in enumerate(arrays):
        assert same(loaded[f"p{i}"], a)
