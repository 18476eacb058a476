"""The drift run's case list, its per-case seeds, and deterministic shards.

A case is one configuration x gradient scale x dtype x torch implementation x
device.  Every case carries its own seed, derived from what it measures (not
from its position in the list), so a case gives the same numbers whether it
runs alone, in a shard, or in the whole run.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from conformance.matrix import DTYPES, TORCH_IMPLS, FlagConfig, flag_configs

__all__ = ["FULL", "QUICK", "Case", "Settings", "Shard", "build_cases", "parse_shard"]


@dataclass(frozen=True)
class Settings:
    """What a drift run measures; two results are comparable only when these are equal.

    Attributes
    ----------
    seed : int
        Root seed of every stream.
    steps : int
        Steps per case, both lockstep and free-running.
    size : int
        Elements of the single parameter.
    scales : tuple of float
        Standard deviations of the gradient streams.
    stream : str
        ``lognormal`` (every element near the scale, see
        :func:`conformance.report.measure.drift_stream`) or a kind of
        :func:`conformance.streams.gradient_stream`.
    lr, alpha, eps : float
        The continuous hyperparameters (flags come from the matrix).
    devices : tuple of str
        torch devices measured.
    """

    seed: int = 0
    steps: int = 64
    size: int = 256
    scales: tuple[float, ...] = (1e-10, 1e-8, 1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4)
    stream: str = "lognormal"
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    devices: tuple[str, ...] = ("cpu",)

    def as_json(self) -> dict[str, Any]:
        """Return the settings as JSON-ready data."""
        data = asdict(self)
        data["scales"] = list(self.scales)
        data["devices"] = list(self.devices)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settings:
        """Rebuild settings written by :meth:`as_json`."""
        return cls(**{**data, "scales": tuple(data["scales"]), "devices": tuple(data["devices"])})


#: The default run: 16 configurations x 8 scales x 2 dtypes x 2 implementations = 512 cases.
FULL = Settings()
#: ``--quick``: three scales (eps-dominated, the sqrt(eps) knee, unit) and short streams; seconds.
QUICK = Settings(steps=12, size=64, scales=(1e-8, 1e-4, 1.0))


@dataclass(frozen=True)
class Case:
    """One measured combination."""

    config: FlagConfig
    scale: float
    dtype: str
    foreach: bool
    device: str
    seed: int = field(compare=False)

    @property
    def id(self) -> str:
        """Stable identifier, e.g. ``c0-m1-wd0-max0/float32/foreach0/cpu/scale=0.0001``."""
        return f"{self.config.name}/{self.dtype}/foreach{int(self.foreach)}/{self.device}/scale={self.scale:g}"


def _case_seed(root: int, config: FlagConfig, scale: float) -> int:
    # One stream per configuration and scale, shared by both dtypes (float32
    # gets the float64 draws rounded) and both torch implementations, so their
    # numbers are comparable with each other.
    return (root * 1_000_003 + zlib.crc32(f"{config.name}|{scale!r}".encode())) % 2**32


def build_cases(settings: Settings) -> list[Case]:
    """Return every case of ``settings`` in the canonical order (the order of the JSON)."""
    return [
        Case(config, scale, np.dtype(dtype).name, foreach, device, _case_seed(settings.seed, config, scale))
        for config in flag_configs()
        for dtype in DTYPES
        for foreach in TORCH_IMPLS
        for device in settings.devices
        for scale in settings.scales
    ]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based): cases ``index-1, index-1+count, ...``."""

    index: int
    count: int

    def select(self, cases: list[Case]) -> list[Case]:
        """Return this shard's slice: every ``count``-th case, which balances slow configurations."""
        return cases[self.index - 1 :: self.count]

    def as_json(self) -> dict[str, int]:
        """Return the shard as JSON-ready data."""
        return {"index": self.index, "count": self.count}


def parse_shard(text: str) -> Shard:
    """Parse ``"i/N"`` (1 <= i <= N) into a :class:`Shard`.

    Raises
    ------
    ValueError
        If ``text`` is not of that form.
    """
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"shard must be 'i/N' with 1 <= i <= N, got {text!r}")
    index, count = int(match[1]), int(match[2])
    if not 1 <= index <= count:
        raise ValueError(f"shard must be 'i/N' with 1 <= i <= N, got {text!r}")
    return Shard(index, count)
