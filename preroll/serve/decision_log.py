"""Write served requests' decisions to the store off the request path.

A decision is logged after its response is ready, so the log says who really
answered (after any fallback). Writes are gathered by one background thread
into one transaction per batch: a synced write per request would put a disk
flush on every response. The log is for grading later; a crash may lose the
last batch not yet written, never an acknowledged feedback outcome (those go
through :meth:`HistoryStore.add` before the reply).
"""

from __future__ import annotations

import queue
import threading

from preroll.serve.stats import ServeStats
from preroll.serve.store import Decision, HistoryStore

_STOP = object()


class DecisionLog:
    def __init__(self, store: HistoryStore, stats: ServeStats, *, max_batch: int = 512) -> None:
        self.store = store
        self.stats = stats
        self.max_batch = max_batch
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="preroll-decision-log", daemon=True)
        self._thread.start()

    def record(self, decision: Decision) -> None:
        self._queue.put(decision)

    def flush(self) -> None:
        """Block until everything recorded so far is written."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in batch)
            rows = [item for item in batch if item is not _STOP]
            try:
                if rows:
                    self.store.log_decisions(rows)
            except Exception as exc:  # logging must never take the proxy down; /stats shows it
                self.stats.error(f"decision_log: {type(exc).__name__}: {exc}")
            finally:
                for _ in batch:
                    self._queue.task_done()
            if stop:
                return
