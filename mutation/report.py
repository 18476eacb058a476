"""Print the mutation score and the survivors from mutmut's results and :mod:`mutation.kernel`'s.

``python -m mutation.report [--root DIR] [--survivors FILE] [--diffs]``

Reads ``DIR/mutants/**/*.meta`` (mutmut's per-file results, each mutant's exit
code, read through mutmut's own ``status_by_exit_code``) and
``DIR/mutation/results/kernel.json``; prints one line per source file (killed,
survived, no tests, timeout, other, not checked) and the score

    killed / (total - not checked - no compile - equivalent)

where ``no compile`` is a kernel mutant numba refuses to compile (mutmut's
``caught by type check`` is counted the same way), and ``equivalent`` the
survivors :data:`CLASSIFICATION_FILE` argues cannot be told from Lucid by any
scenario.  ``no tests`` mutants (in code no probe reaches) stay in the
denominator: they are survivors the harness never exercised.  ``--survivors``
writes the survivors, one per line with the change and its classification.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CLASSIFICATION_FILE", "MutantResult", "main", "mutmut_results", "score"]

#: Survivors classified by hand: ``{mutant name: {"class": "equivalent" | "killable", "why": ...}}``.
CLASSIFICATION_FILE = Path(__file__).resolve().parent / "classification.json"
#: Statuses that are not counted at all: not run yet, or not a program at all.
UNCOUNTED = ("not checked", "no compile", "caught by type check")


@dataclass(frozen=True)
class MutantResult:
    """One mutant: its name, the file it mutates, its status, and (kernel mutants) the change and detail."""

    name: str
    path: str
    status: str
    change: str = ""
    detail: str = ""


def mutmut_results(root: Path) -> Iterator[MutantResult]:
    """Yield every mutant mutmut made under ``root/mutants``, with its status."""
    from mutmut.stats import status_by_exit_code

    for meta in sorted((root / "mutants").rglob("*.py.meta")):
        path = str(meta.relative_to(root / "mutants"))[: -len(".meta")]
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            yield MutantResult(name, path, status_by_exit_code[code])


def saved_results(path: Path) -> Iterator[MutantResult]:
    """Yield the mutants of a file written by ``--save``."""
    for r in json.loads(path.read_text()):
        yield MutantResult(**r)


def kernel_results(root: Path) -> Iterator[MutantResult]:
    """Yield the kernel mutants :mod:`mutation.kernel` ran, if it has."""
    results = root / "mutation" / "results" / "kernel.json"
    if results.exists():
        for name, r in json.loads(results.read_text()).items():
            yield MutantResult(name, "lucid/optim/_kernel_numba.py", r["status"], r["change"], r.get("detail", ""))


def score(results: list[MutantResult], equivalent: set[str]) -> tuple[int, int]:
    """Return (killed, counted): counted leaves out :data:`UNCOUNTED` mutants and ``equivalent`` survivors."""
    counted = [r for r in results if r.status not in UNCOUNTED and r.name not in equivalent]
    return sum(r.status == "killed" for r in counted), len(counted)


def _diff(root: Path, result: MutantResult) -> str:
    """Return the mutant's change as mutmut shows it (the changed lines only)."""
    if result.change:
        return result.change
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = Path.cwd()
    os.chdir(root)  # mutmut resolves its mutants/ directory from the working directory
    try:
        diff = get_diff_for_mutant(result.name, path=Path(result.path))
    finally:
        os.chdir(here)
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return " | ".join(" ".join(line.split()) for line in changed)


def main(argv: list[str] | None = None) -> int:
    """Print the per-file table and the score; optionally write the survivors."""
    parser = argparse.ArgumentParser(prog="python -m mutation.report", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="where mutants/ and mutation/ are")
    parser.add_argument("--survivors", type=Path, help="write the survivors (name, status, change, class) here")
    parser.add_argument("--save", type=Path, help="write every mutant's status (JSON) here, to report it later")
    parser.add_argument("--results", type=Path, help="report a file written by --save instead of DIR's results")
    args = parser.parse_args(argv)

    if args.results:
        results = list(saved_results(args.results))
    else:
        results = [*mutmut_results(args.root), *kernel_results(args.root)]
    if args.save:
        args.save.write_text(json.dumps([r.__dict__ for r in results], indent=0) + "\n")
    classes = json.loads(CLASSIFICATION_FILE.read_text()) if CLASSIFICATION_FILE.exists() else {}
    equivalent = {name for name, c in classes.items() if c["class"] == "equivalent"}
    statuses = ("killed", "survived", "no tests", "timeout")
    print(f"{'file':34s} {'total':>6s} " + " ".join(f"{s:>9s}" for s in statuses) + f" {'other':>6s} {'unrun':>6s}")
    for path in sorted({r.path for r in results}):
        counts = Counter(r.status for r in results if r.path == path)
        other = sum(n for s, n in counts.items() if s not in statuses and s not in UNCOUNTED)
        unrun = sum(counts[s] for s in UNCOUNTED)
        cells = " ".join(f"{counts[s]:9d}" for s in statuses)
        print(f"{path:34s} {sum(counts.values()):6d} {cells} {other:6d} {unrun:6d}")
    killed, counted = score(results, equivalent)
    raw_killed, raw_counted = score(results, set())
    share = killed / max(counted, 1)
    print(f"\nscore: {killed}/{counted} = {share:.1%} (equivalent survivors left out: {len(equivalent)})")
    print(f"raw score: {raw_killed}/{raw_counted} = {raw_killed / max(raw_counted, 1):.1%}")
    not_checked = sum(r.status == "not checked" for r in results)
    if not_checked:
        print(f"{not_checked} mutants not run yet")
    if args.survivors:
        lines = []
        for r in results:
            if r.status in ("survived", "no tests", "timeout", "suspicious", "segfault"):
                c = classes.get(r.name, {})
                lines.append(f"{r.name}\t{r.status}\t{_diff(args.root, r)}\t{c.get('class', '?')}\t{c.get('why', '')}")
        args.survivors.write_text("".join(line + "\n" for line in lines))
        print(f"{len(lines)} survivors -> {args.survivors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
