"""Progress for long commands: a bar with an ETA in a terminal, a plain line every ~10 s when piped.

Why its own module: a busy shared machine stretches a two-minute job to ten, and a
user (or a CI log) that sees nothing for minutes cannot tell slow from stuck. The
job states its work up front in *units* (roughly seconds of one quiet core, so the
bar moves evenly through unlike stages: loading a model, embedding prompts, fitting
folds), and reports units as they are done. The ETA starts from that prior (so it
is shown from the first second) and shifts toward the observed pace as work is done.

In a terminal the bar is drawn by rich on stderr. When stderr is not a terminal
(CI, ``| tee``), a line such as
``eval: 42% embedding prompts 1152/2722, 0:41 elapsed, about 0:57 left`` is written
every ``interval`` seconds (and at the start and the end) by a background thread, so
a stage that blocks for a minute still shows the job alive.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Callable


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class WorkProgress:
    """Report a job of ``total`` work units done stage by stage.

    ``advance(units, stage=...)`` adds done units and optionally names the current
    stage (e.g. ``"embedding prompts 640/2722"``); ``stage(text)`` names it without
    progress. Use as a context manager. ``log(message)`` prints a line above the bar
    (or plainly when piped). The ETA is ``(total - done) * pace`` less the time since
    the last advance, where ``pace`` is seconds per unit: the prior 1.0 blended with the
    observed one at the last advance (the prior weighs as ``prior_weight * total`` units
    of work, so it fades as the job advances).
    """

    def __init__(self, label: str, total: float | None, *, stage: str = "starting", stream: IO[str] | None = None,
                 interval: float = 10.0, tty: bool | None = None, prior_weight: float = 0.1,
                 clock: Callable[[], float] = time.monotonic):
        self.label = label
        self.known = total is not None  # None: a job that cannot measure itself shows only elapsed time
        self.total = max(float(total), 1e-9) if total is not None else 1.0
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.prior_weight = prior_weight
        self.clock = clock
        self.done = 0.0
        self.text = stage
        self._start = clock()
        self._advanced_at = 0.0  # elapsed seconds at the last advance
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar = None
        self._task = None

    # -- estimates -----------------------------------------------------------------

    def elapsed(self) -> float:
        return self.clock() - self._start

    def remaining(self) -> float:
        """Seconds left: the units left times the pace up to the last advance (the prior 1 s/unit
        blended with the observed one), counting down while a step runs. A step that overruns
        its share holds the estimate at a tenth of its value rather than at zero; the next
        advance brings the slower pace in."""
        k = self.prior_weight * self.total
        pace = (self._advanced_at + k) / (self.done + k)
        planned = (self.total - self.done) * pace
        return max(planned - (self.elapsed() - self._advanced_at), 0.1 * planned)

    def line(self) -> str:
        if not self.known:
            return f"{self.label}: {self.text}, {_clock(self.elapsed())} elapsed"
        pct = 100.0 * min(self.done / self.total, 1.0)
        return (f"{self.label}: {pct:3.0f}% {self.text}, {_clock(self.elapsed())} elapsed, "
                f"about {_clock(self.remaining())} left")

    # -- reporting -----------------------------------------------------------------

    def plan(self, total: float) -> None:
        """Set the job's total units once the job knows its size (after loading its data, say)."""
        with self._lock:
            self.known = True
            self.total = max(float(total), 1e-9)
            self.done = min(self.done, self.total)
        if self._bar is not None:
            self._bar.update(self._task, total=self.total)

    def stage(self, text: str) -> None:
        with self._lock:
            self.text = text
        self._refresh()

    def advance(self, units: float = 1.0, stage: str | None = None) -> None:
        with self._lock:
            if units:
                self._advanced_at = self.elapsed()
            self.done = min(self.total, self.done + float(units))
            if stage is not None:
                self.text = stage
        self._refresh()

    def log(self, message: str) -> None:
        if self._bar is not None:
            self._bar.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=self.stream, flush=True)

    def _refresh(self) -> None:
        if self._bar is not None and not self.known:
            self._bar.update(self._task, description=self.text)
        elif self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=self.text)

    def tick(self) -> bool:
        """Write the plain progress line if ``interval`` seconds passed since the last one (piped mode)."""
        now = self.clock()
        if now - self._last_line < self.interval:
            return False
        self._last_line = now
        print(self.line(), file=self.stream, flush=True)
        return True

    def _ticker(self) -> None:
        while not self._stop.wait(min(1.0, self.interval)):
            self.tick()

    def __enter__(self) -> "WorkProgress":
        self._start = self.clock()
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, ProgressColumn, TaskProgressColumn, TextColumn, \
                TimeElapsedColumn
            from rich.text import Text

            owner = self

            class _Eta(ProgressColumn):
                def render(self, task) -> Text:  # noqa: ARG002 (rich's signature)
                    return Text(f"about {_clock(owner.remaining())} left", style="progress.remaining")

            columns = [TextColumn(f"{self.label}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.description}"),
                       TimeElapsedColumn(), _Eta()] if self.known else [
                TextColumn(f"{self.label}"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
            self._bar = Progress(*columns, console=Console(file=self.stream), transient=False)
            self._bar.__enter__()
            self._task = self._bar.add_task(self.text, total=self.total if self.known else None)
        else:
            self._last_line = self._start - self.interval
            self.tick()
            self._thread = threading.Thread(target=self._ticker, name="preroll-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if exc[0] is None and self.known:
            self.advance(self.total, "done")
        elif exc[0] is None and self._bar is not None:
            self._bar.update(self._task, total=1.0, completed=1.0, description="done")
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._bar is not None:
            self._bar.__exit__(*exc)
        elif exc[0] is None:
            print(f"{self.label}: done in {_clock(self.elapsed())}", file=self.stream, flush=True)
