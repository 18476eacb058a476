"""Write a drift result's reports as one set: all of them, from one run, or none.

``--out`` is checked before anything is measured (:func:`stage_reports`): it
must be a new directory, an empty one, or one that holds only a report set; a
staging directory is made next to it (same file system) and the space the
reports will need is reserved in it, so a full disk, an unwritable directory
or a file in the way fails the command at once instead of after the run.

:meth:`StagedReports.commit` writes every report into the staging directory
and then swaps it in with renames: the old ``--out`` is moved aside, the new
one renamed into its place, and only then is the old one removed.  A reader
sees the old set or the new one, never a mix; two runs into one ``--out``
leave one of the two whole sets.  Anything that stops a command before the
swap (an error, a full disk, Ctrl-C) removes the staging directory and leaves
``--out`` as it was; a process killed outright leaves at most a hidden
``.NAME.new-*`` directory beside it, which no reader takes for a report.

No run id is stamped into the files: the set is atomic by construction, and
``drift.json`` stays byte-identical across runs with the same seed.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["REPORT_FILES", "OutputError", "StagedReports", "reserve_size", "stage_reports", "write_reports"]

#: File names inside the output directory.
REPORT_FILES = {"json": "drift.json", "markdown": "drift.md", "html": "drift.html"}

_RESERVED = ".reserved"
#: Attempts at the swap when other runs keep replacing ``--out`` at the same moment.
_SWAP_ATTEMPTS = 100


class OutputError(Exception):
    """``--out`` cannot take a report set; the message names the path and the reason."""


def reserve_size(cases: int, steps: int, *, html: bool = True) -> int:
    """Return the bytes to reserve for the reports of ``cases`` cases of ``steps`` steps (an overestimate).

    Measured: a case's JSON line is about 700 bytes plus 12 per step (its
    free-running error curve); the Markdown is a few kilobytes; the HTML's four
    figures stay under a megabyte.  Half as much again covers the rest.
    """
    json_bytes = cases * (700 + 12 * steps)
    return int(1.5 * (json_bytes + 64 * 1024 + (1024 * 1024 if html else 0)))


def _unlink_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that cannot sync a directory
        pass
    finally:
        os.close(fd)


def _write(path: Path, text: str) -> Path:
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def _reserve(path: Path, size: int) -> None:
    """Allocate ``size`` bytes at ``path`` (ENOSPC now rather than after the run)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
            return
        except AttributeError:  # pragma: no cover - no posix_fallocate (macOS, Windows)
            pass
        except OSError as err:
            if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        block = b"\0" * (1 << 20)
        left = size
        while left > 0:
            left -= os.write(fd, block[: min(left, len(block))])
    finally:
        os.close(fd)


def _only_reports(path: Path, names: frozenset[str]) -> bool:
    try:
        return all(name in names for name in os.listdir(path))
    except OSError:
        return False


@dataclass
class StagedReports:
    """A staging directory beside ``out``, with space reserved, waiting for :meth:`commit`.

    Use it as a context manager: leaving the block without a commit (an
    exception, Ctrl-C) removes the staging directory.
    """

    out: Path
    staging: Path
    #: The file names a report set of this kind consists of.
    names: frozenset[str] = frozenset(REPORT_FILES.values())
    #: Old ``--out`` directories moved aside that held more than reports, so were kept.
    kept: list[Path] = field(default_factory=list)

    def __enter__(self) -> StagedReports:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.discard()

    def discard(self) -> None:
        """Remove the staging directory (nothing in ``out`` changes); a no-op after :meth:`commit`."""
        _unlink_tree(self.staging)

    def commit(self, result: dict[str, Any], *, html: bool = True) -> dict[str, Path]:
        """Validate ``result``, write its reports and swap them in as ``out``; return the paths by kind.

        Raises
        ------
        ValueError
            If ``result`` is not a valid drift result (nothing is written).
        OutputError
            If writing fails (a full disk), saying so; ``out`` keeps its old set.
        """
        from conformance.report.markdown import markdown_report
        from conformance.report.schema import dumps, validate

        validate(result)
        texts = {"json": dumps(result), "markdown": markdown_report(result)}
        if html:
            from conformance.report import html as html_page  # matplotlib is imported only here

            texts["html"] = html_page.html_report(result)
        written = self.commit_texts({REPORT_FILES[kind]: text for kind, text in texts.items()})
        return {kind: written[REPORT_FILES[kind]] for kind in texts}

    def commit_texts(self, texts: dict[str, str]) -> dict[str, Path]:
        """Write ``texts`` (by file name, each one of :attr:`names`) and swap them in as ``out``; return the paths.

        Raises
        ------
        OutputError
            If writing fails (a full disk), saying so; ``out`` keeps its old set.
        """
        unknown = sorted(set(texts) - self.names)
        if unknown:
            raise ValueError(f"not files of this report set: {', '.join(unknown)}")
        try:
            (self.staging / _RESERVED).unlink(missing_ok=True)  # give the reserved space to the reports
            for name, text in texts.items():
                _write(self.staging / name, text)
            _fsync_dir(self.staging)
            self._swap_in()
        except OSError as err:
            raise OutputError(
                f"--out {self.out}: writing the reports failed ({err.strerror or err}); "
                "its previous content is unchanged"
            ) from err
        return {name: self.out / name for name in texts}

    def _swap_in(self) -> None:
        asides: list[Path] = []
        try:
            for _ in range(_SWAP_ATTEMPTS):
                try:
                    os.rename(self.staging, self.out)  # atomic; fails while out is a non-empty directory
                    break
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                aside = self.out.with_name(f".{self.out.name}.old-{uuid.uuid4().hex[:12]}")
                try:
                    os.rename(self.out, aside)
                except FileNotFoundError:
                    continue  # another run moved it away first
                asides.append(aside)
            else:
                raise OSError(errno.EBUSY, f"other writers kept replacing it ({_SWAP_ATTEMPTS} attempts)", self.out)
        except BaseException:
            # Interrupted between the renames: put the last old set back rather than leave no --out.
            if asides and not self.out.exists():
                try:
                    os.rename(asides.pop(), self.out)
                except OSError:  # pragma: no cover - nothing better to do
                    pass
            raise
        finally:
            for aside in asides:
                if _only_reports(aside, self.names):
                    _unlink_tree(aside)
                elif aside.exists():
                    self.kept.append(aside)
        _fsync_dir(self.out.parent)


def stage_reports(
    out_dir: str | os.PathLike[str], *, reserve: int = 0, names: Collection[str] = tuple(REPORT_FILES.values())
) -> StagedReports:
    """Check that ``out_dir`` can take a report set and make the staging directory beside it.

    ``reserve`` bytes are allocated in it (:func:`reserve_size`) and freed for
    the reports at :meth:`StagedReports.commit`.  ``names`` are the files of
    the set (a drift report's by default; the diff report's for ``compare``):
    an existing ``out_dir`` may hold only those.

    Raises
    ------
    OutputError
        If ``out_dir`` is a file or lies below one, holds files that are not
        reports, contains the working directory, cannot be written, or its
        file system lacks the space (nothing is left behind).
    """
    shown = os.fspath(out_dir)
    out = Path(os.path.abspath(out_dir))
    if out.is_symlink():
        out = out.resolve()
    if Path.cwd() == out or out in Path.cwd().parents or out.parent == out:
        raise OutputError(f"--out {shown} is the working directory or above it; give a directory for the reports")
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {shown} exists and is not a directory")
    if out.is_dir():
        try:
            present = sorted(os.listdir(out))
        except OSError as err:
            raise OutputError(f"--out {shown}: cannot read it ({err.strerror})") from None
        foreign = [name for name in present if name not in names]
        if foreign:
            listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputError(
                f"--out {shown} holds files that are not its reports ({listed}); it is replaced as a whole, "
                f"so give a new or empty directory, or one holding only {', '.join(sorted(names))}"
            )
        if not os.access(out, os.W_OK | os.X_OK):
            raise OutputError(f"--out {shown}: not writable, so its old reports could not be replaced")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=parent))
    except OSError as err:
        raise OutputError(f"--out {shown}: cannot write in {parent}: {err.strerror or err}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; a report directory is an ordinary one
        if reserve:
            _reserve(staging / _RESERVED, reserve)
    except OSError as err:
        _unlink_tree(staging)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputError(
                f"--out {shown}: not enough space in {parent} for the reports "
                f"(about {reserve / 2**20:.1f} MiB needed): {err.strerror}"
            ) from None
        raise OutputError(f"--out {shown}: cannot write in {parent}: {err.strerror or err}") from None
    except BaseException:
        _unlink_tree(staging)
        raise
    return StagedReports(out, staging, frozenset(names))


def write_reports(result: dict[str, Any], out_dir: str | os.PathLike[str], *, html: bool = True) -> dict[str, Path]:
    """Validate ``result`` and write its JSON, Markdown and (optionally) HTML report as the set ``out_dir``.

    :func:`stage_reports` then :meth:`StagedReports.commit`; returns the paths written, by kind.
    """
    with stage_reports(out_dir) as staged:
        return staged.commit(result, html=html)
