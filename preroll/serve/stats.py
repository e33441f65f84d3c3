"""Counters and latency percentiles for ``GET /stats``.

Latencies are kept in bounded windows (the most recent ``window`` samples),
so a long-running server reports how it behaves now and its memory stays flat.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Iterable

import numpy as np

#: The latency series the server records, in milliseconds.
LATENCY_SERIES = (
    "decision_ms",        # one router call (embedding + prediction for a batch of waiting prompts), no queueing
    "decision_wait_ms",   # from a request's arrival at the router to its decision (queueing + batch work)
    "upstream_ms",        # backend time to the response headers (non-streaming: the whole response)
    "total_ms",           # request in to response out (streaming: to the first upstream chunk)
)


class ServeStats:
    """Thread-safe counters and latency windows."""

    def __init__(self, window: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._by_model: Counter[str] = Counter()
        self._pinned: Counter[str] = Counter()
        self._fallbacks: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._lat = {name: deque(maxlen=window) for name in LATENCY_SERIES}
        self._batches: deque[int] = deque(maxlen=window)

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def served(self, model: str, *, pinned: bool) -> None:
        with self._lock:
            self._by_model[model] += 1
            if pinned:
                self._pinned[model] += 1

    def fallback(self, src: str, dst: str | None) -> None:
        with self._lock:
            self._fallbacks[f"{src}->{dst or 'none'}"] += 1

    def error(self, kind: str) -> None:
        with self._lock:
            self._errors[kind] += 1

    def latency(self, series: str, ms: float | Iterable[float]) -> None:
        values = [ms] if isinstance(ms, (int, float)) else list(ms)
        with self._lock:
            self._lat[series].extend(values)

    def batch(self, size: int) -> None:
        with self._lock:
            self._batches.append(size)

    def snapshot(self) -> dict:
        """A JSON-ready view: counts, per-model traffic, fallbacks, errors, p50/p99 per series."""
        with self._lock:
            lat = {name: _summary(list(values)) for name, values in self._lat.items()}
            batches = list(self._batches)
            return {
                "counts": dict(self._counts),
                "served_by_model": dict(self._by_model),
                "pinned_by_model": dict(self._pinned),
                "fallbacks": dict(self._fallbacks),
                "errors": dict(self._errors),
                "latency_ms": lat,
                "router_batch_size": {"n": len(batches), "prompts": sum(batches),
                                      "mean": float(np.mean(batches)) if batches else None,
                                      "max": max(batches) if batches else None},
            }


def _summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    arr = np.asarray(values, dtype=float)
    p50, p99 = np.percentile(arr, [50, 99])
    return {"n": int(arr.size), "p50": round(float(p50), 3), "p99": round(float(p99), 3),
            "max": round(float(arr.max()), 3)}
