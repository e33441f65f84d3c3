"""The book and the pool state in a checkpoint folder, local or remote (any fsspec URL: s3://, gs://, ...).

Why remote: trainers write checkpoints to shared or object storage (verl mirrors
each step to ``trainer.default_hdfs_dir``), and a book left behind on a local
disk is lost with the machine. Local folders are written atomically (a crash
leaves the previous file); a remote file is written from a complete local copy
in one upload (``put_file``) and read back the same way.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from preroll.online import PromptBook
from preroll.outputs import atomic_write_text

#: ``copy(local_file, remote_url)``: how a finished local file reaches a remote folder (default: fsspec).
Uploader = Callable[[str, str], None]


def is_remote(folder: str | os.PathLike) -> bool:
    """A URL with a protocol other than ``file://`` (``s3://b/k``, ``memory://x``, ``hdfs://...``)."""
    text = os.fspath(folder)
    return "://" in text and not text.startswith("file://")


def join(folder: str | os.PathLike, name: str) -> str:
    text = os.fspath(folder)
    return f"{text.rstrip('/')}/{name}" if is_remote(text) else os.path.join(text, name)


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


def fsspec_upload(local: str, url: str) -> None:
    fs, path = _fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(local, path)


def save_state(folder: str | os.PathLike, book: PromptBook, pool_state: dict, *, book_file: str, pool_file: str,
               upload: Uploader | None = None) -> None:
    """Write ``book_file`` (the book) and ``pool_file`` (JSON) into ``folder``; a remote folder gets both through
    ``upload`` (fsspec by default)."""
    if not is_remote(folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        book.save(folder / book_file)
        atomic_write_text(folder / pool_file, json.dumps(pool_state))
        return
    upload = upload or fsspec_upload
    with tempfile.TemporaryDirectory(prefix="preroll-ckpt-") as tmp:
        book.save(Path(tmp) / book_file, graph_beside=False)   # one file to upload: the graph inside it
        (Path(tmp) / pool_file).write_text(json.dumps(pool_state))
        for name in (book_file, pool_file):     # the pool last: a folder with a pool file has its book
            upload(str(Path(tmp) / name), join(folder, name))


def has_state(folder: str | os.PathLike, *, book_file: str) -> bool:
    if not is_remote(folder):
        return (Path(folder) / book_file).exists()
    fs, path = _fs(join(folder, book_file))
    return bool(fs.exists(path))


def load_state(folder: str | os.PathLike, book: PromptBook, *, book_file: str,
               pool_file: str) -> tuple[PromptBook, dict | None] | None:
    """The book (over ``book``'s dataset) and the pool state saved in ``folder``; None when it holds no book."""
    if not has_state(folder, book_file=book_file):
        return None
    if not is_remote(folder):
        pool_path = Path(folder) / pool_file
        pool = json.loads(pool_path.read_text()) if pool_path.exists() else None
        return PromptBook.load(Path(folder) / book_file, book.prompts, book.ids, embeddings=book._embeddings), pool
    with tempfile.TemporaryDirectory(prefix="preroll-ckpt-") as tmp:
        fs, path = _fs(join(folder, book_file))
        fs.get_file(path, str(Path(tmp) / book_file))
        loaded = PromptBook.load(Path(tmp) / book_file, book.prompts, book.ids, embeddings=book._embeddings)
        fs, path = _fs(join(folder, pool_file))
        pool = json.loads(fs.cat_file(path)) if fs.exists(path) else None
    return loaded, pool
