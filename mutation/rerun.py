r"""Rerun chosen mutants of a mutmut run against any pytest selection, one process per mutant.

``mutmut run`` judges every mutant by one selection (``mutation/test_check.py``,
the conformance probes of 48 cases): minutes per surviving mutant here.  To
follow survivors up, this runs named mutants in mutmut's work directory
(``mutants/``, which ``mutmut run`` leaves: the mutated ``lucid/`` and copies of
the rest, refreshed here from the working tree), each in its own pytest
process with ``MUTANT_UNDER_TEST`` naming it, against the selection given
after ``--``.  A kill by any selection is final (that selection shows the
mutant wrong), so survivors can be taken through a cheap selection first and
only what survives through larger ones::

    python -m mutation.rerun --mutants mutation/results/after-killable.tsv --status survived \
        --out /tmp/stage1.tsv -- mutation/test_check.py -x -k "c1-m1-wd1-max1 and float32 and numpy"

``--mutants`` takes a TSV whose first column is the mutant name (a ``status``
or second column filtered by ``--status``) or a file of names, one per line.
Output: a TSV of mutant, verdict (``killed``: pytest failed, ``survived``: it
passed, ``error``: pytest could not run the selection, exit 2-5), exit code and
seconds; one line per mutant on standard output as it finishes.  First the
selection runs without a mutant (it must pass) and with mutmut's ``fail`` (it must
fail: it reaches mutated code); if either control says otherwise, nothing else
runs and the exit status is 1.  A mutant past ``--timeout`` seconds is a
``timeout``.  Files deleted from the working tree are not deleted from the
work directory, and its ``lucid/`` is the one ``mutmut run`` mutated: rerun
``mutmut run`` after changing Lucid.
``LUCID_ACCELERATOR`` is passed on only where it is set.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The directories of the working tree that mutmut copies unmutated (``also_copy``, and the tests).
COPIED = ("benchmarks", "conformance", "mutation", "tests")
#: Files of the working tree copied beside them (pytest's settings live in pyproject.toml).
COPIED_FILES = ("pyproject.toml",)


def read_mutants(path: Path, status: str | None) -> list[str]:
    """Return the mutant names in ``path``, those whose second column is ``status`` where given."""
    rows = [row for row in csv.reader(path.read_text().splitlines(), delimiter="\t") if row and row[0].strip()]
    if rows and rows[0][0] == "mutant":
        rows = rows[1:]
    return [row[0] for row in rows if status is None or (len(row) > 1 and row[1] == status)]


def unknown_mutants(work: Path, names: list[str]) -> list[str]:
    """Return the names that are no mutant of ``work``'s mutated sources (the trampoline would run the original)."""
    unknown = []
    for name in names:
        module, _, mutant = name.rpartition(".")
        source = work / Path(*module.split(".")).with_suffix(".py")
        if not source.is_file() or f"{mutant}(" not in source.read_text(encoding="utf-8"):
            unknown.append(name)
    return unknown


def refresh(work: Path) -> None:
    """Copy the unmutated directories of the working tree into ``work`` (the mutated ``lucid/`` is kept)."""
    for name in COPIED:
        shutil.copytree(ROOT / name, work / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in COPIED_FILES:
        shutil.copy2(ROOT / name, work / name)


def run_one(work: Path, mutant: str, selection: list[str], timeout: float) -> tuple[str, int, float]:
    """Run ``selection`` under ``mutant`` in ``work``; return the verdict, pytest's exit code and the seconds.

    The verdict is ``timeout`` (exit code -1) past ``timeout`` seconds.
    """
    env = {**os.environ, "MUTANT_UNDER_TEST": mutant, "PYTHONPATH": str(work)}
    start = time.perf_counter()
    try:
        code = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *selection],
            cwd=work,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            timeout=timeout,
        ).returncode
    except subprocess.TimeoutExpired:
        return "timeout", -1, time.perf_counter() - start
    verdict = {0: "survived", 1: "killed"}.get(code, "error")
    return verdict, code, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the control and each mutant, write the TSV; return 0 (1: the control failed)."""
    argv = sys.argv[1:] if argv is None else argv
    ours, selection = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m mutation.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, required=True, help="TSV or list of mutant names")
    parser.add_argument("--status", help="only the rows whose second column is this (e.g. survived)")
    parser.add_argument("--out", type=Path, required=True, help="the TSV to write")
    parser.add_argument("--work", type=Path, default=ROOT / "mutants", help="mutmut's work directory")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per mutant (default 1800)")
    args = parser.parse_args(ours)
    if not selection:
        parser.error("give the pytest selection after --")
    if not (args.work / "lucid").is_dir():
        parser.error(f"{args.work} holds no mutated lucid/: run mutmut run first (tox -e mutation)")
    mutants = read_mutants(args.mutants, args.status)
    if not mutants:
        parser.error(f"{args.mutants} names no mutant{f' with status {args.status!r}' if args.status else ''}")
    unknown = unknown_mutants(args.work, mutants)
    if unknown:
        parser.error(f"not mutants of {args.work}: {', '.join(unknown[:5])}")
    refresh(args.work)
    # The controls: unmutated, the selection must pass, or a "kill" would say nothing of the mutant;
    # with mutmut's "fail" (every mutated function raises) it must fail, or it reaches no mutated
    # code (an unmutated lucid imported, a selection that calls none of it) and every mutant "survives".
    for control, want in (("", 0), ("fail", 1)):
        _, code, seconds = run_one(args.work, control, selection, args.timeout)
        print(f"control  {seconds:6.1f} s  (MUTANT_UNDER_TEST={control!r}): exit {code}", flush=True)
        if code != want:
            print(f"the control {control!r} exited {code}, not {want}: no verdict would mean anything", file=sys.stderr)
            return 1
    rows = []
    for name in mutants:
        verdict, code, seconds = run_one(args.work, name, selection, args.timeout)
        rows.append((name, verdict, str(code), f"{seconds:.1f}"))
        print(f"{verdict:8} {seconds:6.1f} s  {name}", flush=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text("".join("\t".join(r) + "\n" for r in [("mutant", "verdict", "exit", "seconds"), *rows]))
    tmp.replace(args.out)
    killed = sum(r[1] == "killed" for r in rows)
    print(f"{killed} of {len(rows)} killed by: {' '.join(selection)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
