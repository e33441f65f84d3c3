"""Per-backend circuit breakers: a dead backend is skipped at once instead of costing every request a timeout.

States, per backend:

* **closed**: requests go through; ``failures`` consecutive failures open it.
* **open**: the backend is skipped without a connection attempt for
  ``cooldown_s``; the request falls to the next backend in the router's ranking.
* **half-open**: after the cooldown exactly one request (the probe) is let
  through; its success closes the circuit, its failure re-opens it for another
  cooldown. Other requests keep skipping the backend while the probe is out.

The clock is injected (``time.monotonic`` by default) so tests step time
instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Literal

State = Literal["closed", "open", "half_open"]


@dataclass
class _Circuit:
    state: State = "closed"
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probe_out: bool = False
    opens: int = 0          # times this circuit has opened
    skipped: int = 0        # requests that skipped the backend because it was open


class CircuitBreakers:
    """One circuit per backend name. Thread-safe; every method is O(1)."""

    def __init__(self, names: Iterable[str], *, failures: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("failures must be >= 1 and cooldown_s > 0")
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self._circuits = {name: _Circuit() for name in names}
        self._lock = threading.Lock()

    def acquire(self, name: str) -> bool:
        """May a request go to ``name`` now? ``True`` for a closed circuit or the half-open probe.

        A caller that got ``True`` must report :meth:`success`, :meth:`failure`
        or :meth:`release` (neither: the request was abandoned).
        """
        with self._lock:
            c = self._circuits[name]
            if c.state == "open" and self.clock() - c.opened_at >= self.cooldown_s:
                c.state, c.probe_out = "half_open", False
            if c.state == "closed":
                return True
            if c.state == "half_open" and not c.probe_out:
                c.probe_out = True
                return True
            c.skipped += 1
            return False

    def success(self, name: str) -> None:
        with self._lock:
            c = self._circuits[name]
            c.state, c.consecutive_failures, c.probe_out = "closed", 0, False

    def failure(self, name: str) -> None:
        with self._lock:
            c = self._circuits[name]
            c.consecutive_failures += 1
            if c.state == "half_open" or (c.state == "closed" and c.consecutive_failures >= self.failures):
                c.state, c.opened_at, c.probe_out = "open", self.clock(), False
                c.opens += 1

    def release(self, name: str) -> None:
        """The request was abandoned before an outcome (e.g. the client went away): free the probe slot."""
        with self._lock:
            self._circuits[name].probe_out = False

    def state(self, name: str) -> State:
        with self._lock:
            c = self._circuits[name]
            if c.state == "open" and self.clock() - c.opened_at >= self.cooldown_s:
                return "half_open"  # the next acquire will let a probe through
            return c.state

    def retry_in(self, name: str) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        with self._lock:
            c = self._circuits[name]
            if c.state != "open":
                return 0.0
            return max(0.0, self.cooldown_s - (self.clock() - c.opened_at))

    def snapshot(self) -> dict[str, dict]:
        """For ``/stats``: each backend's state, consecutive failures, opens and skips."""
        out = {}
        for name in self._circuits:
            state, retry_in = self.state(name), self.retry_in(name)
            with self._lock:
                c = self._circuits[name]
                out[name] = {"state": state, "consecutive_failures": c.consecutive_failures, "opens": c.opens,
                             "skipped": c.skipped, "retry_in_s": round(retry_in, 3)}
        return out
