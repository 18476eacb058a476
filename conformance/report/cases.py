"""The drift run's case list, its per-case seeds, and deterministic shards.

A case is one configuration x gradient scale x dtype x torch implementation x
device.  Every case carries its own seed, derived from what it measures (not
from its position in the list), so a case gives the same numbers whether it
runs alone, in a shard, or in the whole run.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from conformance.matrix import DTYPES, TORCH_IMPLS, Case, FlagConfig, TorchImpl, case_id, flag_configs

__all__ = [
    "FULL",
    "LOGNORMAL_SIGMA",
    "MAX_ELEMENT_STEPS",
    "MAX_SCALE",
    "MAX_SIZE",
    "MAX_STEPS",
    "MIN_SCALE",
    "QUICK",
    "DriftCase",
    "Settings",
    "Shard",
    "build_cases",
    "check_settings",
    "drift_case_id",
    "legacy_drift_case_id",
    "parse_shard",
    "with_scale",
]

#: Spread of the ``lognormal`` stream's magnitudes (:func:`conformance.report.measure.drift_stream`):
#: 99.7% of them lie within exp(+-3 * 0.5), a factor 4.5, of the case's scale.
LOGNORMAL_SIGMA = 0.5

#: Most steps per case: 150 times the default, far beyond any free-running bound's use.
MAX_STEPS = 10_000
#: Most elements of the parameter: 4096 times the default.
MAX_SIZE = 2**20
#: Most gradient elements one case draws (steps x size; 2^25 float64 values are 256 MiB),
#: so a run's memory stays bounded whatever the two flags are.
MAX_ELEMENT_STEPS = 2**25
#: Gradient scales a run can measure.  Above MAX_SCALE the largest gradients of the
#: stream (six of its standard deviations, a factor e^3 = 20) square to infinity in
#: float32; below MIN_SCALE the smallest are not normal float32 numbers.  Either way
#: the cases would agree with torch vacuously (every step infinite, or nothing to round).
MAX_SCALE = float(np.sqrt(np.finfo(np.float32).max)) / math.exp(6 * LOGNORMAL_SIGMA)
MIN_SCALE = float(np.finfo(np.float32).tiny) * math.exp(6 * LOGNORMAL_SIGMA)


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
class DriftCase:
    """One measured combination: a case of the matrix (:class:`conformance.matrix.Case`) at one gradient scale.

    The matrix case holds the flags, dtype, device and torch implementation
    (a drift run measures torch's plain for-loop and foreach paths, on CUDA too);
    the scale and the seed of the gradient stream are the drift run's own.
    """

    case: Case
    scale: float
    seed: int = field(compare=False)

    @property
    def config(self) -> FlagConfig:
        """The numerical flags."""
        return self.case.flags

    @property
    def dtype(self) -> str:
        """The parameters' dtype."""
        return self.case.dtype

    @property
    def device(self) -> str:
        """Torch's device."""
        return self.case.device

    @property
    def foreach(self) -> bool:
        """Torch's ``foreach`` switch."""
        return self.case.impl.foreach

    @property
    def matrix_id(self) -> str:
        """The id of the matrix case this case measures (:attr:`conformance.matrix.Case.id`).

        E.g. ``c0-m1-wd0-max0-float32-cpu-foreach0-cap0-tlr0``; ``check --cases``
        takes it, and this case's :attr:`id` too.
        """
        return self.case.id

    @property
    def id(self) -> str:
        """Stable identifier: :attr:`matrix_id` and the scale.

        E.g. ``c0-m1-wd0-max0-float32-cpu-foreach0-cap0-tlr0-scale=0.0001``; the scale to six
        significant digits, as :func:`check_settings` requires scales to differ.
        """
        return with_scale(self.case.id, self.scale)


def with_scale(matrix_id: str, scale: float) -> str:
    """Return the drift id of matrix case ``matrix_id`` at gradient ``scale``: the one place the suffix is spelled."""
    return f"{matrix_id}-scale={scale:g}"


def drift_case_id(config: str, dtype: str, device: str, foreach: bool, scale: float) -> str:
    """Return the id of the drift case with these fields (:attr:`DriftCase.id`)."""
    return with_scale(case_id(config, dtype, device, TorchImpl(foreach).name), scale)


def legacy_drift_case_id(config: str, dtype: str, device: str, foreach: bool, scale: float) -> str:
    """Return the id schema version 1 gave the drift case with these fields (``c0-m1-wd0-max0/float32/...``)."""
    return f"{config}/{dtype}/foreach{int(foreach)}/{device}/scale={scale:g}"


def check_settings(settings: Settings) -> None:
    """Raise ``ValueError``, naming the value, if a run cannot measure ``settings`` meaningfully.

    Bounds: :data:`MAX_STEPS`, :data:`MAX_SIZE`, :data:`MAX_ELEMENT_STEPS` (memory) and the
    scale range [:data:`MIN_SCALE`, :data:`MAX_SCALE`] (outside it every case agrees
    vacuously).  Scales must also differ in the six digits a case id keeps.
    """
    if not 1 <= settings.steps <= MAX_STEPS:
        raise ValueError(f"steps {settings.steps} is outside 1..{MAX_STEPS}")
    if not 1 <= settings.size <= MAX_SIZE:
        raise ValueError(f"size {settings.size} is outside 1..{MAX_SIZE} elements")
    if settings.steps * settings.size > MAX_ELEMENT_STEPS:
        raise ValueError(
            f"steps x size = {settings.steps} x {settings.size} = {settings.steps * settings.size} gradient "
            f"elements per case, more than {MAX_ELEMENT_STEPS} (a run's memory bound)"
        )
    for scale in settings.scales:
        if not MIN_SCALE <= scale <= MAX_SCALE:
            raise ValueError(
                f"scale {scale:g} is outside [{MIN_SCALE:.3g}, {MAX_SCALE:.3g}]: float32 gradients of that scale "
                + ("square to infinity" if scale > MAX_SCALE else "are not normal numbers")
                + ", so every case would agree with torch vacuously"
            )
    spelled = [f"{scale:g}" for scale in settings.scales]
    repeated = sorted({s for s in spelled if spelled.count(s) > 1})
    if repeated:
        raise ValueError(f"scales repeat (to six digits, as case ids spell them): {', '.join(repeated)}")


def _case_seed(root: int, config: FlagConfig, scale: float) -> int:
    # One stream per configuration and scale, shared by both dtypes (float32
    # gets the float64 draws rounded) and both torch implementations, so their
    # numbers are comparable with each other.
    return (root * 1_000_003 + zlib.crc32(f"{config.name}|{scale!r}".encode())) % 2**32


def build_cases(settings: Settings) -> list[DriftCase]:
    """Return every case of ``settings`` in the canonical order (the order of the JSON)."""
    return [
        DriftCase(
            Case(config, np.dtype(dtype).name, device, TorchImpl(foreach)),
            scale,
            _case_seed(settings.seed, config, scale),
        )
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

    def select(self, cases: list[DriftCase]) -> list[DriftCase]:
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
