"""Convert optimizer state_dicts between torch (tensors) and Lucid (ndarrays), and through files.

Files never use pickle: Lucid's side goes through :mod:`lucid.serialization`
(``.npz``-style archive plus JSON) when it exists, else through
:func:`numpy.savez` with ``allow_pickle=False`` and a JSON header; torch's side
through :func:`torch.save` and ``torch.load(weights_only=True)``, which refuses
anything but tensors and plain containers.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

__all__ = ["lucid_file_roundtrip", "to_numpy", "to_torch", "torch_file_roundtrip"]


def to_numpy(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a torch optimizer state_dict with every tensor an ndarray.

    ``step`` becomes a Python float; a tensor ``lr`` (capturable mode) becomes
    a float.  Tensors on CUDA are copied to the host first.
    """

    def array(value: Any) -> Any:
        return value.detach().cpu().numpy().copy() if isinstance(value, torch.Tensor) else value

    def scalar(value: Any) -> Any:
        return float(value.item()) if isinstance(value, torch.Tensor) else value

    state = {
        index: {key: scalar(value) if key == "step" else array(value) for key, value in entry.items()}
        for index, entry in state_dict["state"].items()
    }
    groups = [{key: scalar(value) for key, value in group.items()} for group in state_dict["param_groups"]]
    return {"state": state, "param_groups": groups}


def to_torch(state_dict: dict[str, Any], device: str | torch.device = "cpu") -> dict[str, Any]:
    """Return a copy of a Lucid state_dict in torch's form.

    Arrays become tensors on ``device``; ``step`` becomes a float32 0-d tensor
    on the CPU, as torch keeps it when ``capturable=False``.
    """
    state = {}
    for index, entry in state_dict["state"].items():
        converted = {}
        for key, value in entry.items():
            if key == "step":
                converted[key] = torch.tensor(float(value), dtype=torch.float32)
            else:
                converted[key] = torch.from_numpy(np.array(value, copy=True)).to(device)
        state[index] = converted
    groups = [dict(group) for group in state_dict["param_groups"]]
    return {"state": state, "param_groups": groups}


def _save_npz(state_dict: dict[str, Any], path: str) -> None:
    arrays: dict[str, np.ndarray] = {}
    state: dict[str, dict[str, Any]] = {}
    for index, entry in state_dict["state"].items():
        state[str(index)] = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                name = f"a{len(arrays)}"
                arrays[name] = value
                state[str(index)][key] = {"array": name}
            else:
                state[str(index)][key] = value
    header = json.dumps({"state": state, "param_groups": state_dict["param_groups"]})
    np.savez(path, header=np.array(header), **arrays)


def _load_npz(path: str) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(str(data["header"]))
        state = {
            int(index): {
                key: data[value["array"]].copy() if isinstance(value, dict) else value for key, value in entry.items()
            }
            for index, entry in header["state"].items()
        }
    return {"state": state, "param_groups": header["param_groups"]}


def lucid_file_roundtrip(state_dict: dict[str, Any], directory: str) -> dict[str, Any]:
    """Write a Lucid state_dict to a file in ``directory`` and read it back, without pickle.

    Uses ``lucid.serialization.save_state_dict`` / ``load_state_dict`` when
    Lucid has them, else an ``.npz`` with ``allow_pickle=False``.
    """
    try:
        from lucid import serialization
    except ImportError:
        serialization = None
    if serialization is not None and hasattr(serialization, "save_state_dict"):
        path = os.path.join(directory, "candidate_state.lucid")
        serialization.save_state_dict(state_dict, path)
        return serialization.load_state_dict(path)
    path = os.path.join(directory, "candidate_state.npz")
    _save_npz(state_dict, path)
    return _load_npz(path)


def torch_file_roundtrip(state_dict: dict[str, Any], directory: str) -> dict[str, Any]:
    """Write a torch state_dict with :func:`torch.save`, read it with ``weights_only=True``."""
    path = os.path.join(directory, "torch_state.pt")
    torch.save(state_dict, path)
    return torch.load(path, weights_only=True)
