"""Outputs never destroy inputs: one check before any work, one atomic write after it.

Why up front: a fit can take minutes; finding out after it that ``--out`` is
in a missing folder, or *is* the history file, wastes the work or the data.
Paths are compared after resolving symlinks, so a link to the history is
refused like the history itself. Files are written to a temporary sibling and
renamed, so an interrupted write never leaves half a file behind. The renamed
file gets the permissions an ordinary ``open()`` would have given it (the
temporary file is private, mode 0600), or keeps those of the file it replaces.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from preroll.errors import OutputError


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``os.umask`` alone must set one)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def _same_or_inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def check_output(out: str | Path, *, inputs: Iterable[str | Path | None] = (), force: bool = False,
                 folder: bool = False, option: str = "--out") -> Path:
    """Validate an output path before any work; return it. Raises :class:`OutputError`.

    - ``out`` must not be (a link to) any of ``inputs``; a ``folder`` output must not contain one;
    - an existing output *file* is refused unless ``force`` (a folder of results is reused);
    - the parent folder (or the folder itself) is created now, so a bad location fails in a second.
    """
    out = Path(out).expanduser()
    target = out.resolve()
    for inp in inputs:
        if inp is None:
            continue
        src = Path(inp).expanduser().resolve()
        if target == src or (folder and target in src.parents):
            raise OutputError(f"{option} {out} would overwrite the input {inp}; choose another path")
    if folder:
        if target.exists() and not target.is_dir():
            raise OutputError(f"{option} {out} is a file, expected a folder")
        _mkdir(target, out, option)
        return out
    if target.is_dir():
        raise OutputError(f"{option} {out} is a folder, expected a file path")
    if target.exists() and not target.is_file():
        # a device, FIFO or socket: the atomic rename would replace the node itself (/dev/null, as root)
        raise OutputError(f"{option} {out} is not a regular file; it is never replaced, even with --force")
    if target.exists() and not force:
        raise OutputError(f"{option} {out} already exists; pass --force to overwrite it")
    _mkdir(target.parent, out.parent, option)
    return out


def _mkdir(target: Path, shown: Path, option: str) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{option}: cannot create the folder {shown}: {exc.strerror or exc}") from None
    if not os.access(target, os.W_OK):
        raise OutputError(f"{option}: the folder {shown} is not writable")


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` only on success.

    The data is flushed to disk before the rename: a resumable run (``preroll score``) trusts every file it
    finds after a crash, so a renamed file must never be a truncated one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fchmod(fh.fileno(), _final_mode(path))
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def save_figure(fig, path: str | Path, *, dpi: int = 120) -> Path:
    """Write a matplotlib figure atomically (format from the suffix, PNG by default), creating the folder, and
    close it: a long benchmark that plots many figures must not keep them all in memory."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, dpi=dpi, format=path.suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
    return path
