"""Convert optimizer state_dicts between torch (tensors) and Lucid (ndarrays)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["to_numpy", "to_torch"]


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
