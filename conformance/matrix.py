"""The conformance case matrix, declared as data.

Every test and the command line generate their cases from the tables below;
there are no hand-written case lists.  A *case* fixes the discrete axes (the
numerical flags, the dtype, the device and torch's implementation); the
continuous hyperparameters are drawn per example from :data:`~conformance.rmsprop.HYPER_RANGES`
(see :mod:`conformance.strategies`), several param groups per example, each
with its own values.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from conformance.rmsprop import FLAGS, Hyper

__all__ = [
    "CASE_DTYPES",
    "COMPLEX_DTYPES",
    "DEVICES",
    "DTYPES",
    "IMPLS",
    "MAX_GROUPS",
    "TORCH_IMPLS",
    "Case",
    "FlagConfig",
    "TorchImpl",
    "case_by_id",
    "case_id",
    "cases",
    "describe_config",
    "describe_no_match",
    "flag_configs",
    "select_cases",
]

#: The real dtypes (the drift report's, :func:`conformance.report.cases.build_cases`).
DTYPES = (np.float32, np.float64)

#: Complex dtypes.  torch steps a complex parameter as ``torch.view_as_real`` of the
#: parameter, gradient and buffers (after the weight decay, in complex arithmetic, on its
#: ``foreach=False`` path); the harness compares them through those real views
#: (:func:`conformance.streams.as_real`), so every bound, the oracle and the sign test
#: apply unchanged with the real dtype's unit roundoff.
COMPLEX_DTYPES = (np.complex64, np.complex128)

#: The dtypes of the check matrix (:func:`cases`): the real ones and the complex ones.
CASE_DTYPES = DTYPES + COMPLEX_DTYPES

#: torch implementations compared against (``foreach`` values) on the CPU.
TORCH_IMPLS = (False, True)

DEVICES = ("cpu", "cuda")

#: Most param groups an example draws (each with its own hyperparameters).
MAX_GROUPS = 3


@dataclass(frozen=True)
class FlagConfig:
    """One combination of the numerical flags."""

    centered: bool
    momentum: float
    weight_decay: float
    maximize: bool

    @property
    def name(self) -> str:
        """A short stable identifier, e.g. ``c1-m1-wd0-max0``."""
        return f"c{int(self.centered)}-m{int(self.momentum > 0)}-wd{int(self.weight_decay > 0)}-max{int(self.maximize)}"

    @property
    def description(self) -> str:
        """The combination in words, e.g. ``centered, no momentum, weight decay 0.01, minimise``."""
        return ", ".join(
            [
                "centered" if self.centered else "not centered",
                f"momentum {self.momentum:g}" if self.momentum > 0 else "no momentum",
                f"weight decay {self.weight_decay:g}" if self.weight_decay > 0 else "no weight decay",
                "maximise" if self.maximize else "minimise",
            ]
        )

    def hyper(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float | None = None,
        weight_decay: float | None = None,
    ) -> Hyper:
        """Return this combination's hyperparameters with the given continuous values.

        ``momentum`` and ``weight_decay`` are the values to use where this
        combination turns them on (default: the matrix's own, :data:`~conformance.rmsprop.FLAGS`);
        where it turns them off they are 0.
        """
        return Hyper(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=(self.weight_decay if weight_decay is None else weight_decay)
            if self.weight_decay > 0
            else 0.0,
            momentum=(self.momentum if momentum is None else momentum) if self.momentum > 0 else 0.0,
            centered=self.centered,
            maximize=self.maximize,
        )


def describe_config(name: str) -> str:
    """Return a flag configuration's code (``c1-m0-wd1-max0``) in words (:attr:`FlagConfig.description`).

    Raises
    ------
    ValueError
        If ``name`` is no configuration's code.
    """
    for config in flag_configs():
        if config.name == name:
            return config.description
    raise ValueError(f"no flag configuration is called {name!r}")


def flag_configs() -> Iterator[FlagConfig]:
    """Yield every combination of :data:`~conformance.rmsprop.FLAGS` (16)."""
    keys = list(FLAGS)
    for values in itertools.product(*(FLAGS[k] for k in keys)):
        yield FlagConfig(**dict(zip(keys, values)))


@dataclass(frozen=True)
class TorchImpl:
    """One of torch's execution strategies for RMSprop.

    ``capturable`` keeps ``step`` on the device (CUDA graphs); ``tensor_lr``
    passes the learning rate as a 0-d tensor, which with ``capturable`` makes
    torch divide ``avg`` by ``-lr`` (foreach) instead of scaling the quotient.
    """

    foreach: bool
    capturable: bool = False
    tensor_lr: bool = False

    @property
    def name(self) -> str:
        """E.g. ``foreach1-cap1-tlr1``."""
        return f"foreach{int(self.foreach)}-cap{int(self.capturable)}-tlr{int(self.tensor_lr)}"


#: Implementations per device: on CUDA both ``foreach`` paths, captured, with a tensor lr.
#: The lockstep bound (16 = 2 x 8 roundings, :mod:`conformance.compare`) covers the
#: captured path too: it trades the fused ``param.add_(buf, alpha=-lr)`` for an unfused
#: multiply and add (+1 rounding) and ``addcdiv(value=-lr)`` for ``avg / -lr`` then a
#: quotient (same count), while CUDA's square root is correctly rounded (-1 against
#: MKL's one-ULP root), so torch's longest path stays at 8 roundings.  (Not yet run
#: on a GPU from this repository: no GPU machine was lent when this was written.)
IMPLS: dict[str, tuple[TorchImpl, ...]] = {
    "cpu": tuple(TorchImpl(foreach) for foreach in TORCH_IMPLS),
    "cuda": tuple(TorchImpl(foreach, capturable=True, tensor_lr=True) for foreach in TORCH_IMPLS),
}


@dataclass(frozen=True)
class Case:
    """One cell of the matrix: flags x dtype x device x torch implementation."""

    flags: FlagConfig
    dtype: str
    device: str
    impl: TorchImpl

    @property
    def id(self) -> str:
        """A stable identifier, e.g. ``c1-m0-wd1-max0-float32-cpu-foreach0-cap0-tlr0``.

        The one spelling of a case everywhere: ``check --cases`` and ``--replay``,
        and the drift reports, whose case ids are this id with the gradient scale
        appended (``...-tlr0-scale=1e-08``, :attr:`conformance.report.cases.DriftCase.id`).
        """
        return case_id(self.flags.name, self.dtype, self.device, self.impl.name)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Older spellings that select this case too.

        Drift reports of schema version 1 spelled a case ``c0-m0-wd0-max0/float32/foreach0/cpu``
        (then ``/scale=...``); that spelling names the case with neither ``capturable`` nor a
        tensor learning rate.
        """
        if self.impl.capturable or self.impl.tensor_lr:
            return ()
        return (f"{self.flags.name}/{self.dtype}/foreach{int(self.impl.foreach)}/{self.device}",)

    @property
    def np_dtype(self) -> np.dtype:
        """The dtype as a NumPy dtype."""
        return np.dtype(self.dtype)


def case_id(flags: str, dtype: str, device: str, impl: str) -> str:
    """Return the id of the case with these parts' names (:attr:`Case.id`): the one place it is spelled."""
    return f"{flags}-{dtype}-{device}-{impl}"


def cases(device: str | None = None) -> list[Case]:
    """Return every case of the matrix (256), or those of one ``device`` (128).

    Per device: 16 flag combinations x 4 dtypes (:data:`CASE_DTYPES`) x 2 torch implementations.
    """
    devices = DEVICES if device is None else (device,)
    return [
        Case(flags, np.dtype(dtype).name, dev, impl)
        for dev in devices
        for flags in flag_configs()
        for dtype in CASE_DTYPES
        for impl in IMPLS[dev]
    ]


@functools.cache
def _by_id() -> dict[str, Case]:
    return {name: case for case in cases() for name in (case.id, *case.aliases)}


#: A drift case's gradient scale at the end of its id, in either spelling.
_SCALE_SUFFIX = re.compile(r"[-/]scale=[^/]*$")


def select_cases(text: str, device: str | None = None) -> list[Case]:
    """Return the cases (of ``device``, or all) that the filter ``text`` selects, in matrix order.

    ``text`` selects a case when it is part of the case's :attr:`~Case.id` or of one of its
    :attr:`~Case.aliases`; a drift report's case id (``...-scale=1e-08``) selects the matrix case
    it measures (the scale is not an axis of the matrix).  The empty text selects every case.
    """
    key = _SCALE_SUFFIX.sub("", text)
    return [case for case in cases(device) if any(key in name for name in (case.id, *case.aliases))]


def describe_no_match(text: str, device: str) -> str:
    """Explain why the filter ``text`` selects no case of ``device``: what ids look like, the closest ones."""
    pool = cases(device)
    names = [case.id for case in pool]
    parts = [f"--cases {text!r} matches none of the {len(pool)} {device} cases"]
    elsewhere = [d for d in DEVICES if d != device and select_cases(text, d)]
    if elsewhere:
        parts.append(f"it matches {len(select_cases(text, elsewhere[0]))} case(s) with --device {elsewhere[0]}")
    impls = sorted({impl.name for impl in IMPLS[device]})
    parts.append(
        f"ids look like {names[0]} (flags c0|1-m0|1-wd0|1-max0|1, dtype "
        f"{'|'.join(np.dtype(d).name for d in CASE_DTYPES)}, device {device}, implementation {'|'.join(impls)})"
    )
    close = difflib.get_close_matches(_SCALE_SUFFIX.sub("", text), names, n=3, cutoff=0.6)
    if close:
        parts.append(f"closest: {', '.join(close)}")
    return "; ".join(parts)


def case_by_id(case_id: str) -> Case:
    """Return the case whose :attr:`Case.id` (or one of its :attr:`Case.aliases`) is ``case_id``.

    Raises
    ------
    KeyError
        If no case has that id (the message lists the format).
    """
    case = _by_id().get(case_id)
    if case is not None:
        return case
    raise KeyError(f"no case {case_id!r}; ids look like {cases()[0].id!r}")
