"""A durable embedding cache in front of any encoder.

Encoding is the slow step of a prediction (tens of prompts per second for a
transformer on CPU), while a training loop or a router sees the same prompts
again and again. Vectors are therefore stored on disk, keyed by
``(encoder.name, sha256(prompt))``: the encoder's name pins weights and
settings, so two models or settings never share a slot.

Storage is one SQLite file (standard library, transactional): a crash in the
middle of a write loses at most that batch, never what was stored before, and
several processes may read and write it at once (WAL mode). A bounded
in-memory layer answers repeated prompts without touching SQLite.

Every new vector is still committed at once; only the WAL checkpoint (copying
the log into the database file, with an fsync) runs on a background thread of
its own connection instead of inside whichever commit crossed SQLite's
threshold. Measured: that commit took 15-85 ms, once in about 200 writes, where
a commit takes 0.04 ms, and on a router that writes one vector per new prompt it
landed on a request. Nothing waits in memory for the thread: a crash loses no
vector (a checkpoint not yet run is redone from the log at the next open).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from preroll.encoders.base import Encoder
from preroll.encoders.errors import EmbeddingCacheError
from preroll.encoders.fingerprint import text_sha256
from preroll.encoders.sentence import check_texts

_log = logging.getLogger("preroll.encoders.cache")

CACHE_FILENAME = "embeddings.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS vectors (
    encoder TEXT NOT NULL,
    text_sha256 TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (encoder, text_sha256)
) WITHOUT ROWID
"""
#: SQLite's default limit on bound parameters is 999 on old builds; stay under it.
_QUERY_CHUNK = 900
#: Vectors written between two background checkpoints (SQLite's own default, 1,000 log pages, came to
#: about 200 vectors of 384 floats).
CHECKPOINT_EVERY = 200


class _Checkpointer:
    """A daemon thread with its own connection that runs a passive WAL checkpoint when asked.

    Passive: it copies what no reader still needs and never blocks a writer or a reader, so a commit
    on the request path does not wait for it. It holds no reference to the encoder, so an encoder
    that is dropped is collected (and closes it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs = 0  # checkpoints done (for tests and diagnostics)
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="preroll-cache-checkpoint", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def request(self) -> None:
        self._wake.set()

    def close(self) -> None:
        """Let the thread finish its checkpoint, if one runs, and end (without waiting for it: a close
        at interpreter exit must not block)."""
        self._stop = True
        self._wake.set()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=60.0, check_same_thread=False, isolation_level=None)
        except (sqlite3.DatabaseError, OSError) as exc:  # pragma: no cover - the request path opened it
            _log.warning("embedding cache %s: no background checkpoints (%s)", self.path, exc)
            return
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except sqlite3.DatabaseError as exc:
                    _log.warning("embedding cache %s: checkpoint failed (%s); retried later", self.path, exc)
        finally:
            conn.close()


def default_cache_dir() -> Path:
    """``$PREROLL_CACHE`` if set, else ``~/.cache/preroll``."""
    env = os.environ.get("PREROLL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "preroll"


class CachedEncoder(Encoder):
    """Wraps ``encoder`` so each (model, prompt) pair is encoded once, ever.

    Parameters
    ----------
    encoder:
        The encoder whose vectors are cached; its ``name`` is the cache namespace.
    cache_dir:
        Directory of the SQLite file; ``None`` means ``default_cache_dir()``.
    memory_items:
        Vectors kept in memory (oldest dropped first); 0 disables the memory layer.
    """

    def __init__(self, encoder: Encoder, cache_dir: str | Path | None = None, *, memory_items: int = 100_000) -> None:
        self.encoder = encoder
        self.cache_dir = cache_dir
        self.memory_items = memory_items

    # -- plumbing -------------------------------------------------------------------

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.encoder.name

    @property
    def path(self) -> Path:
        """The SQLite file."""
        directory = Path(self.cache_dir).expanduser() if self.cache_dir is not None else default_cache_dir()
        return directory / CACHE_FILENAME

    def _state(self) -> tuple[sqlite3.Connection, threading.Lock, OrderedDict]:
        conn: sqlite3.Connection | None = getattr(self, "_conn", None)
        if conn is None:
            path = self.path
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, timeout=60.0, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run on _Checkpointer's thread
                conn.execute(_SCHEMA)
            except (sqlite3.DatabaseError, OSError) as exc:
                raise EmbeddingCacheError(
                    f"cannot open the embedding cache {path}: {exc}. It was left as is; move it away "
                    "(or pass another cache_dir) to start a fresh cache") from exc
            self._conn: sqlite3.Connection | None = conn
            self._lock = threading.Lock()
            self._memory: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
            self._written = 0
            self._checkpointer: _Checkpointer | None = None
        return conn, self._lock, self._memory

    def _wrote(self, n: int) -> None:
        """Count committed vectors; past ``CHECKPOINT_EVERY``, ask the background thread for a checkpoint
        (started on the first one, so a short-lived encoder never starts it). Called under the lock."""
        self._written += n
        if self._written < CHECKPOINT_EVERY:
            return
        self._written = 0
        if self._checkpointer is None or not self._checkpointer.alive:  # not started yet, or lost in a fork
            self._checkpointer = _Checkpointer(self.path)
        self._checkpointer.request()

    def close(self) -> None:
        """Close the SQLite connection and stop the checkpoint thread (both restart on next use)."""
        checkpointer = getattr(self, "_checkpointer", None)
        if checkpointer is not None:
            checkpointer.close()
            self._checkpointer = None
        conn = getattr(self, "_conn", None)
        if conn is not None:
            conn.close()
            self._conn = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self) -> dict:
        # A connection cannot cross processes; the copy reopens its own.
        return {k: v for k, v in self.__dict__.items()
                if k not in {"_conn", "_lock", "_memory", "_written", "_checkpointer"}}

    # -- encoder interface ----------------------------------------------------------

    def fit(self, texts: Sequence[str]) -> "CachedEncoder":
        self.encoder.fit(texts)
        return self

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        texts = check_texts(texts)
        if not texts:
            return self.encoder.encode([])
        name = self.encoder.name
        keys = [text_sha256(t) for t in texts]
        found = self._lookup(name, set(keys))
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            found.update(self._encode_and_store(name, missing, show_progress))
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    # -- storage ----------------------------------------------------------------------

    def _remember(self, memory: OrderedDict, key: tuple[str, str], vector: np.ndarray) -> None:
        if self.memory_items <= 0:
            return
        memory[key] = vector
        while len(memory) > self.memory_items:
            memory.popitem(last=False)

    def _lookup(self, name: str, keys: set[str]) -> dict[str, np.ndarray]:
        conn, lock, memory = self._state()
        found: dict[str, np.ndarray] = {}
        with lock:
            for key in keys:
                vector = memory.get((name, key))
                if vector is not None:
                    found[key] = vector
            rest = [k for k in keys if k not in found]
            for start in range(0, len(rest), _QUERY_CHUNK):
                chunk = rest[start:start + _QUERY_CHUNK]
                marks = ",".join("?" * len(chunk))
                try:
                    rows = conn.execute(
                        f"SELECT text_sha256, dim, vector FROM vectors WHERE encoder = ? AND text_sha256 IN ({marks})",
                        (name, *chunk)).fetchall()
                except sqlite3.DatabaseError as exc:
                    raise EmbeddingCacheError(f"embedding cache {self.path} is unreadable: {exc}") from exc
                for key, dim, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if vector.shape != (dim,):
                        raise EmbeddingCacheError(
                            f"embedding cache {self.path}: entry ({name!r}, {key}) holds {vector.size} floats, "
                            f"expected {dim}; the file is damaged")
                    found[key] = vector
                    self._remember(memory, (name, key), vector)
        return found

    def _encode_and_store(self, name: str, missing: dict[str, str], show_progress: bool) -> dict[str, np.ndarray]:
        keys = list(missing)
        vectors = np.asarray(self.encoder.encode([missing[k] for k in keys], show_progress=show_progress))
        if vectors.ndim != 2 or vectors.shape[0] != len(keys):
            raise ValueError(f"encoder {name!r} returned shape {vectors.shape} for {len(keys)} texts")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise ValueError(f"encoder {name!r} returned NaN or infinite values; nothing was cached")
        conn, lock, memory = self._state()
        rows = [(name, key, vectors.shape[1], vectors[i].tobytes()) for i, key in enumerate(keys)]
        with lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:  # SQLITE_FULL has already rolled back; a 2nd ROLLBACK would raise
                        conn.execute("ROLLBACK")
                    raise
                self._wrote(len(rows))
            except sqlite3.OperationalError as exc:
                # Disk full, an I/O error, a lock held too long: the vectors are right, only keeping them
                # failed. A cache is a shortcut, so the caller (a live router among them) gets its answer.
                _log.warning("embedding cache %s not written (%s); %d vectors kept in memory only",
                             self.path, exc, len(rows))
            except sqlite3.DatabaseError as exc:
                raise EmbeddingCacheError(f"could not write to the embedding cache {self.path}: {exc}") from exc
            out = {}
            for i, key in enumerate(keys):
                vector = vectors[i].copy()
                out[key] = vector
                self._remember(memory, (name, key), vector)
        return out

    def missing(self, texts: Sequence[str]) -> list[str]:
        """The distinct ``texts`` not stored yet: what an ``encode`` would have to compute (so a
        caller can say how much work is ahead, and encode it in chunks under a progress bar)."""
        texts = list(dict.fromkeys(check_texts(texts)))
        if not texts:
            return []
        keys = {t: text_sha256(t) for t in texts}
        found = self._lookup(self.encoder.name, set(keys.values()))
        return [t for t in texts if keys[t] not in found]

    def cached_count(self, name: str | None = None) -> int:
        """Vectors stored on disk for ``name`` (all encoders when None)."""
        conn, lock, _ = self._state()
        with lock:
            if name is None:
                return conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
            return conn.execute("SELECT COUNT(*) FROM vectors WHERE encoder = ?", (name,)).fetchone()[0]

    def __repr__(self) -> str:
        return f"CachedEncoder({self.encoder!r}, cache_dir={str(self.path.parent)!r})"
