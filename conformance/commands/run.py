"""``python -m conformance run``: lockstep every configuration and print agreement."""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch

import lucid
from conformance.compare import LOCKSTEP_BOUND
from conformance.lockstep import run_lockstep
from conformance.matrix import DTYPES, TORCH_IMPLS, flag_configs
from conformance.streams import gradient_stream

__all__ = ["register"]

#: Gradient scales of the smoke run: tiny (eps dominates), unit, large.
SMOKE_SCALES = (1e-8, 1.0, 1e4)


def _run(args: argparse.Namespace) -> int:
    print(
        f"lucid {lucid.__version__}, numpy {np.__version__}, torch {torch.__version__}, "
        f"python {platform.python_version()}, CPU capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"lockstep bound: {LOCKSTEP_BOUND:g} u*scale; {args.steps} steps x {args.size} elements per case")
    header = f"{'config':<18} {'dtype':<8} {'foreach':<8} {'bitwise':>8} {'worst':>7}  verdict"
    print(header)
    print("-" * len(header))
    failures = 0
    for config in flag_configs():
        for dtype in DTYPES:
            for foreach in TORCH_IMPLS:
                equal = total = 0
                worst = 0.0
                ok = True
                for i, scale in enumerate(SMOKE_SCALES):
                    rng = np.random.default_rng(args.seed + i)
                    params0 = [rng.standard_normal(args.size).astype(dtype)]
                    grads = gradient_stream("normal", scale, (args.size,), dtype, args.steps, args.seed + i)
                    result = run_lockstep(params0, config.hyper(), ([g] for g in grads), foreach=foreach)
                    equal += result.bitwise_equal
                    total += result.elements
                    worst = max(worst, result.max_error)
                    ok &= result.passed(LOCKSTEP_BOUND)
                failures += not ok
                print(
                    f"{config.name:<18} {np.dtype(dtype).name:<8} {foreach!s:<8} "
                    f"{equal / total:>8.2%} {worst:>7.2f}  {'ok' if ok else 'DISAGREE'}"
                )
    print(f"{failures} configuration(s) disagree" if failures else "all configurations agree")
    return 1 if failures else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``run`` subcommand."""
    run = subparsers.add_parser("run", help="lockstep Lucid against torch over every flag combination")
    run.add_argument("--steps", type=int, default=20, help="steps per case (default 20)")
    run.add_argument("--size", type=int, default=1000, help="elements per parameter (default 1000)")
    run.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")
    run.set_defaults(func=_run)
