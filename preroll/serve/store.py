"""Durable per-model outcome histories in SQLite.

The router's predictions are only as current as the histories it reads, and
graded feedback arrives one request at a time while the server runs. SQLite in
WAL mode with ``synchronous=FULL`` gives the guarantee the feedback endpoint
promises: :meth:`HistoryStore.add` returns only after its transaction is
committed and synced, so a crash afterwards loses nothing acknowledged, and a
crash *during* an add leaves none of that batch behind (one transaction per
call).

The same file keeps a log of served requests' decisions, so a grader can
report an outcome by request id instead of repeating the prompt and model. An
outcome graded by request id carries that id under a UNIQUE constraint: the
same request graded again *replaces* its earlier grade (a correction) instead
of adding a row, so one served request is never more than one row of history.
Stores written before that column existed are migrated in place when opened
(the column is added; every stored row is kept, with no request id).

A store that cannot write (disk full, ``SQLITE_FULL``, an I/O error, a lock
held too long) raises :class:`~preroll.serve.errors.StoreUnavailableError`,
with the transaction rolled back, so the server can answer 507/503 and carry
on routing; when space returns, writes succeed again on the same connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from preroll.data import Outcome, load_records
from preroll.serve.errors import StoreError, StoreUnavailableError

#: ``PRAGMA user_version`` of the current schema (2: ``outcomes.request_id`` UNIQUE).
SCHEMA_VERSION = 2

#: SQLite's INTEGER range (a signed 64-bit integer).
INT64_MIN, INT64_MAX = -(2 ** 63), 2 ** 63 - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    model      TEXT NOT NULL,
    prompt     TEXT NOT NULL,
    successes  REAL NOT NULL,
    attempts   REAL NOT NULL,
    policy     TEXT,
    step       INTEGER,
    record_id  TEXT,
    added_at   REAL NOT NULL,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_by_model ON outcomes (model, seq);
CREATE TABLE IF NOT EXISTS decisions (
    request_id  TEXT PRIMARY KEY,
    at          REAL NOT NULL,
    prompt      TEXT,
    how         TEXT NOT NULL,
    routed_to   TEXT,
    answered_by TEXT,
    p_success   TEXT,
    fallback    TEXT
);
CREATE TABLE IF NOT EXISTS imports (
    model      TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    path       TEXT NOT NULL,
    n_records  INTEGER NOT NULL,
    added_at   REAL NOT NULL,
    PRIMARY KEY (model, sha256)
);
"""


@dataclass(frozen=True)
class Decision:
    """What the server did with one request, kept so its outcome can be graded later by request id."""

    request_id: str
    at: float
    prompt: str | None
    how: str                     # "routed" or "pinned"
    routed_to: str | None        # the router's first choice (None when pinned)
    answered_by: str | None      # the backend that answered (None if none could)
    p_success: dict[str, float] | None
    fallback: str | None         # the x-preroll-fallback header, if any


class HistoryStore:
    """Append-only outcome histories, one per model name.

    Safe to share between threads (one connection behind a lock): the server
    writes feedback from request handlers while a background refit reads.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT),
        # so "acknowledged" means exactly "our COMMIT returned".
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the history store: {exc}", path=self.path) from None
        try:
            with self._lock:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.executescript(_SCHEMA)
                self._transaction(_migrate)
        except sqlite3.DatabaseError as exc:  # e.g. "file is not a database"
            self._conn.close()
            raise StoreError(f"not a usable SQLite history store ({exc})", path=self.path) from None

    # -- writing -----------------------------------------------------------------

    def add(self, model: str, outcomes: Iterable[Outcome]) -> int:
        """Append ``outcomes`` to ``model``'s history in one transaction; return how many.

        All or nothing: if anything fails (or the process dies) before the
        commit, none of the batch is stored.
        """
        model = _check_model(model)
        rows = [_row(model, o) for o in outcomes]
        with self._lock:
            self._transaction(lambda c: c.executemany(_INSERT, rows))
        return len(rows)

    def grade(self, model: str, outcome: Outcome, request_id: str) -> bool:
        """Store the grade of one served request; return ``True`` if new, ``False`` if it replaced one.

        The request's row keeps its place in the history; its counts, step and
        time are the latest grade's. Committed before returning, like :meth:`add`.
        """
        model = _check_model(model)
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be non-empty text, got {request_id!r}")
        row = (*_row(model, outcome), request_id)
        new = False

        def work(c: sqlite3.Connection) -> None:
            nonlocal new
            new = c.execute("SELECT 1 FROM outcomes WHERE request_id=?", (request_id,)).fetchone() is None
            c.execute(_INSERT_GRADED + " ON CONFLICT (request_id) DO UPDATE SET model=excluded.model, "
                      "prompt=excluded.prompt, successes=excluded.successes, attempts=excluded.attempts, "
                      "policy=excluded.policy, step=excluded.step, record_id=excluded.record_id, "
                      "added_at=excluded.added_at", row)

        with self._lock:
            self._transaction(work)
        return new

    def import_file(self, model: str, path: str | Path) -> int:
        """Add a record file to ``model``'s history once; return rows added (0 if seen before).

        Files are recognised by content hash, so a server that imports its
        configured starting histories at every start-up does not duplicate them,
        while an edited file (new content) is imported again.
        """
        model = _check_model(model)
        path = Path(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with self._lock, self._unavailable():
            if self._conn.execute("SELECT 1 FROM imports WHERE model=? AND sha256=?",
                                  (model, digest)).fetchone():
                return 0
        records = load_records(path)  # raises RecordError naming file, line, field
        rows = [_row(model, o) for o in records]

        def work(c: sqlite3.Connection) -> None:
            c.executemany(_INSERT, rows)
            c.execute("INSERT INTO imports VALUES (?, ?, ?, ?, ?)",
                      (model, digest, str(path), len(rows), time.time()))

        with self._lock:
            self._transaction(work)
        return len(rows)

    def _transaction(self, work) -> None:
        c = self._conn
        with self._unavailable():
            c.execute("BEGIN IMMEDIATE")
            try:
                work(c)
                c.execute("COMMIT")
            except BaseException:
                # SQLite may already have rolled back (SQLITE_FULL does): a second ROLLBACK would
                # raise "no transaction is active" and hide the real error.
                if c.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        c.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _unavailable(self):
        """Turn SQLite's "cannot do this now" errors into :class:`StoreUnavailableError`."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            primary = None if code is None else code & 0xFF
            full = primary == _SQLITE_FULL or "full" in str(exc)
            if primary in _UNAVAILABLE or full:
                raise StoreUnavailableError(str(exc), full=full, path=self.path) from None
            raise

    def log_decisions(self, decisions: Iterable[Decision]) -> int:
        """Append served requests' decisions (one transaction); return how many."""
        rows = [(d.request_id, d.at, d.prompt, d.how, d.routed_to, d.answered_by,
                 None if d.p_success is None else json.dumps(d.p_success), d.fallback) for d in decisions]
        with self._lock:
            self._transaction(lambda c: c.executemany(
                "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows))
        return len(rows)

    # -- reading -----------------------------------------------------------------

    def decision(self, request_id: str) -> Decision | None:
        """The logged decision of one request, or ``None``."""
        with self._lock, self._unavailable():
            row = self._conn.execute("SELECT * FROM decisions WHERE request_id=?", (request_id,)).fetchone()
        if row is None:
            return None
        rid, at, prompt, how, routed_to, answered_by, p, fallback = row
        return Decision(rid, at, prompt, how, routed_to, answered_by, None if p is None else json.loads(p), fallback)

    def decision_count(self) -> int:
        with self._lock, self._unavailable():
            return self._conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]

    def records(self, model: str, newest: int | None = None) -> list[Outcome]:
        """``model``'s history in the order it was added (empty if unknown); with ``newest``, only that many of
        its most recent outcomes (the rest stay stored)."""
        with self._lock, self._unavailable():
            if newest is None:
                rows = self._conn.execute(
                    "SELECT prompt, successes, attempts, policy, step, record_id FROM outcomes "
                    "WHERE model=? ORDER BY seq", (model,)).fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT prompt, successes, attempts, policy, step, record_id FROM outcomes "
                    "WHERE model=? ORDER BY seq DESC LIMIT ?", (model, int(newest))).fetchall()[::-1]
        return [Outcome(prompt=p, successes=s, attempts=a, policy=pol, step=st, id=rid)
                for p, s, a, pol, st, rid in rows]

    def models(self) -> list[str]:
        """Model names with at least one stored outcome, sorted."""
        with self._lock, self._unavailable():
            return [m for (m,) in self._conn.execute("SELECT DISTINCT model FROM outcomes ORDER BY model")]

    def count(self, model: str | None = None) -> int:
        """Stored outcomes for ``model`` (all models if ``None``)."""
        with self._lock, self._unavailable():
            if model is None:
                return self._conn.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0]
            return self._conn.execute("SELECT COUNT(*) FROM outcomes WHERE model=?", (model,)).fetchone()[0]

    # -- lifecycle ---------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "HistoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HistoryStore({str(self.path)!r})"


#: SQLite primary result codes meaning "not now" rather than "wrong": BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL,
#: CANTOPEN, PROTOCOL.
_SQLITE_FULL = 13
_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 13, 14, 15})

_INSERT = ("INSERT INTO outcomes (model, prompt, successes, attempts, policy, step, record_id, added_at) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_GRADED = ("INSERT INTO outcomes (model, prompt, successes, attempts, policy, step, record_id, added_at, "
                  "request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _migrate(c: sqlite3.Connection) -> None:
    """Bring an older store up to :data:`SCHEMA_VERSION` (inside a transaction; rows are only ever kept)."""
    columns = {row[1] for row in c.execute("PRAGMA table_info(outcomes)")}
    if "request_id" not in columns:
        c.execute("ALTER TABLE outcomes ADD COLUMN request_id TEXT")
    # NULLs are distinct under UNIQUE: rows not graded by request id are unconstrained.
    c.execute("CREATE UNIQUE INDEX IF NOT EXISTS outcomes_by_request ON outcomes (request_id)")
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _check_model(model: str) -> str:
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model name must be non-empty text, got {model!r}")
    return model


def _row(model: str, o: Outcome) -> tuple:
    if not isinstance(o, Outcome):
        raise TypeError(f"expected preroll.data.Outcome records, got {type(o).__name__}")
    if o.step is not None and not INT64_MIN <= o.step <= INT64_MAX:
        raise StoreError(f"step {o.step} is outside SQLite's integer range [-2**63, 2**63 - 1]", field="step")
    return (model, o.prompt, o.successes, o.attempts, o.policy, o.step, o.id, time.time())
