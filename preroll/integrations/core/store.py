"""The book and the pool state in a checkpoint folder, local or remote (any fsspec URL: s3://, gs://, ...).

Why remote: trainers write checkpoints to shared or object storage (verl mirrors
each step to ``trainer.default_hdfs_dir``), and a book left behind on a local
disk is lost with the machine. Local folders are written atomically (a crash
leaves the previous file); a remote file is written from a complete local copy
in one upload (``put_file``) and read back the same way.

A remote folder holds the book in the graph-beside form (the book, and its
neighbour graph in ``<book>.graph-<sha>.npz``): the graph (256 MB at a million
prompts, computed once) is uploaded once per run, and each later checkpoint
folder gets it by a copy inside the store (:class:`RemoteGraph` remembers where
it went) instead of another upload of the same bytes. Every folder stays whole
on its own, and files arrive in the order graph, book, pool: a folder with a
pool file has its book, and a book its graph. A load from a remote folder does
the same in reverse: the downloaded graph file is kept for the next local save
to hard-link, and the next remote save copies the graph from where it was read.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from preroll.online import PromptBook
from preroll.online.book import saved_graph_name
from preroll.outputs import atomic_write_text

logger = logging.getLogger(__name__)

#: ``copy(source, remote_url)``: how a finished local file, or a file already in the same store (a URL),
#: reaches a remote folder (default: fsspec).
Uploader = Callable[[str, str], None]


@dataclass
class RemoteGraph:
    """Where the last remote save put the book's graph file (its name holds the graph's digest)."""

    name: str | None = None
    url: str | None = None


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


def fsspec_upload(source: str, url: str) -> None:
    """Copy a local file, or a file of the same store (a URL: copied inside the store, not through here), to ``url``."""
    fs, path = _fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    if is_remote(source):
        fs.copy(_fs(source)[1], path)
    else:
        fs.put_file(source, path)


def save_state(folder: str | os.PathLike, book: PromptBook, pool_state: dict, *, book_file: str, pool_file: str,
               upload: Uploader | None = None, graph: RemoteGraph | None = None) -> None:
    """Write ``book_file`` (the book) and ``pool_file`` (JSON) into ``folder``; a remote folder gets both through
    ``upload`` (fsspec by default), and the book's graph file too: copied from ``graph.url`` inside the store when
    the previous remote save put the same graph there, else uploaded (``graph`` is updated)."""
    if not is_remote(folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        book.save(folder / book_file)
        atomic_write_text(folder / pool_file, json.dumps(pool_state))
        _let_go_of_download(book)
        return
    upload = upload or fsspec_upload
    with tempfile.TemporaryDirectory(prefix="preroll-ckpt-") as tmp:
        local = Path(tmp) / book_file
        book.save(local, write_graph=False)     # names the graph file, which goes up by itself below
        (Path(tmp) / pool_file).write_text(json.dumps(pool_state))
        name = book.graph_name(local)
        if name is not None:
            _put_graph(book, local, join(folder, name), name, upload, graph)
        for file in (book_file, pool_file):     # the pool last: a folder with a pool file has its book
            upload(str(Path(tmp) / file), join(folder, file))


def _put_graph(book: PromptBook, local: Path, url: str, name: str, upload: Uploader,
               graph: RemoteGraph | None) -> None:
    """The graph file at ``url``: a copy inside the store of the one the last save (or the load) put there, else
    an upload from the book's local graph file, written beside ``local`` only when there is none."""
    if graph is not None and graph.name == name and graph.url is not None and graph.url != url:
        try:
            upload(graph.url, url)
            graph.url = url
            return
        except Exception as exc:   # noqa: BLE001  (the earlier folder may be gone; any store error: upload instead)
            logger.warning("could not copy %s to %s inside the store (%s); uploading it", graph.url, url, exc)
    source = book.graph_file or book.write_graph(local)
    assert source is not None   # the book named a graph file, so it has a graph
    upload(str(source), url)
    if graph is not None:
        graph.name, graph.url = name, url


def has_state(folder: str | os.PathLike, *, book_file: str) -> bool:
    if not is_remote(folder):
        return (Path(folder) / book_file).exists()
    fs, path = _fs(join(folder, book_file))
    return bool(fs.exists(path))


def load_state(folder: str | os.PathLike, book: PromptBook, *, book_file: str, pool_file: str,
               graph: RemoteGraph | None = None) -> tuple[PromptBook, dict | None] | None:
    """The book (over ``book``'s dataset) and the pool state saved in ``folder``; None when it holds no book.

    From a remote folder, the downloaded graph file stays on local disk while the book still names it (see
    :func:`_keep_download`), and ``graph`` learns where it lies in the store: the next local save hard-links
    that file and the next remote one copies it inside the store, instead of writing or uploading it again.
    """
    if not has_state(folder, book_file=book_file):
        return None
    if not is_remote(folder):
        pool_path = Path(folder) / pool_file
        pool = json.loads(pool_path.read_text()) if pool_path.exists() else None
        return PromptBook.load(Path(folder) / book_file, book.prompts, book.ids, embeddings=book._embeddings), pool
    tmp = Path(tempfile.mkdtemp(prefix="preroll-ckpt-"))
    loaded = None
    try:
        fs, path = _fs(join(folder, book_file))
        fs.get_file(path, str(tmp / book_file))
        graph_name = saved_graph_name(tmp / book_file)
        if graph_name is not None:     # the graph-beside form; a missing graph file is rebuilt (PromptBook.load)
            fs, path = _fs(join(folder, graph_name))
            if fs.exists(path):
                fs.get_file(path, str(tmp / graph_name))
        loaded = PromptBook.load(tmp / book_file, book.prompts, book.ids, embeddings=book._embeddings)
        fs, path = _fs(join(folder, pool_file))
        pool = json.loads(fs.cat_file(path)) if fs.exists(path) else None
    finally:
        (tmp / book_file).unlink(missing_ok=True)
        if loaded is None or loaded.graph_file is None:   # no graph file (or a stale one): nothing to keep
            shutil.rmtree(tmp, ignore_errors=True)
    if graph_name is not None and loaded.graph_file is not None:    # the download, verified against its digest
        _keep_download(loaded, tmp)
        if graph is not None:
            graph.name, graph.url = graph_name, join(folder, graph_name)
    return loaded, pool


#: The folders holding graph files a remote load downloaded, by book: each is removed once its book is gone
#: (garbage-collected, or at exit) or its graph lives in another local file (a local save linked it there).
_DOWNLOADS: weakref.WeakKeyDictionary[PromptBook, tuple[Path, weakref.finalize]] = weakref.WeakKeyDictionary()


def _keep_download(book: PromptBook, folder: Path) -> None:
    """Keep ``folder`` (the book's downloaded graph file) while the book names it: a local save then hard-links
    it (on the same filesystem) instead of writing the graph again, and a remote save whose copy inside the
    store fails uploads it from there."""
    _DOWNLOADS[book] = (folder, weakref.finalize(book, shutil.rmtree, str(folder), True))


def _let_go_of_download(book: PromptBook) -> None:
    """Remove the book's download folder once its graph is held by another local file (or it has a new graph)."""
    folder, remove = _DOWNLOADS.get(book, (None, None))
    if folder is None or remove is None:
        return
    current = book.graph_file
    if current is None or folder not in current.parents:
        remove()
        del _DOWNLOADS[book]
