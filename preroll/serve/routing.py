"""The server's router: fitted from the history store, batched, refitted on feedback.

Three things make a router usable behind an HTTP server:

* **Batching.** Embedding one prompt at a time wastes the encoder; concurrent
  requests are gathered (up to ``max_batch``) and routed in one call, on one
  worker thread so the event loop keeps serving.
* **Refits off the hot path.** Feedback lands in the store at once; after
  every ``refit_every`` new outcomes (with exploration on: when the router's
  own schedule says a refit is due, ``Router.refit_due``) a fresh router is
  fitted on a background thread and swapped in when ready. Requests keep
  using the old one meanwhile.
* **Clear start-up errors.** A backend without history is refused with the
  config field that would fix it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from preroll.data import Outcome
from preroll.serve.config import ConfigError, ServeConfig
from preroll.serve.stats import ServeStats
from preroll.serve.store import HistoryStore


@dataclass
class _Pending:
    prompt: str
    lam: float | None
    future: asyncio.Future
    arrived: float


@dataclass(frozen=True)
class Decided:
    """A decision and what it cost in time: the router call that made it, and the wait for it."""

    decision: Any  # preroll.route.RouteDecision
    call_ms: float  # wall time of the router call (a batch of ``batch`` prompts)
    wait_ms: float  # from arrival at the router to the decision (queueing + call)
    batch: int


def build_router(config: ServeConfig, store: HistoryStore, *, encoder=None):
    """A fitted :class:`preroll.route.Router` over every configured backend's stored history.

    Returns ``(router, {backend: outcomes fitted on})``.
    """
    from preroll.route import ModelSpec, Router

    from preroll.route.explore import resolve_settings

    histories: dict[str, list[Outcome]] = {}
    settings = resolve_settings(config.router.explore)
    exploring = settings is not None
    newest = settings.max_history if exploring else None  # a live router's refits read a bounded window
    for i, b in enumerate(config.backends):
        records = store.records(b.name, newest)
        n = config.limits.route_prefix_chars  # history is read as requests are: by the same prefix
        records = [r if len(r.prompt) <= n else r.model_copy(update={"prompt": r.prompt[:n]}) for r in records]
        if not records and not exploring:  # an exploring router starts from its prior and learns
            raise ConfigError(f"backend {b.name!r} has no history in the store ({store.path}); "
                              "list record files under its 'history' or add outcomes with `preroll feedback`",
                              field=f"backends[{i}].history")
        histories[b.name] = records
    specs = [ModelSpec(name=b.name, cost_per_call=b.cost_per_call, cost_per_1k_tokens=b.cost_per_1k_tokens,
                       output_tokens=b.output_tokens) for b in config.backends]
    s = config.router
    if encoder is None:
        from preroll.encoders import get_encoder

        try:
            encoder = get_encoder(s.encoder, cache_dir=s.cache_dir, num_threads=s.threads)
        except ValueError as exc:
            raise ConfigError(str(exc), field="router.encoder") from None
    router = Router(models=specs, cache_dir=s.cache_dir, **(s.router_kwargs() | {"encoder": encoder}))
    router.fit(histories)
    return router, {name: len(records) for name, records in histories.items()}


class RoutingService:
    """Owns the live router; thread-safe swaps, an asyncio batcher, background refits."""

    def __init__(self, config: ServeConfig, store: HistoryStore, stats: ServeStats, *, encoder=None) -> None:
        self.config = config
        self.store = store
        self.stats = stats
        self._encoder = encoder
        self._lock = threading.Lock()
        self.router = None
        self.fits = 0
        self.fitted_on: dict[str, int] = {}
        self.pending_outcomes = 0
        self._refitting = False
        self._route_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preroll-route")
        self.refit_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preroll-refit")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._batcher: asyncio.Task | None = None

    # -- fitting -----------------------------------------------------------------

    def refit(self) -> dict[str, int]:
        """Fit a new router on the store's current histories and swap it in (blocking).

        After the first fit, a refit reuses the live router's neural encoder (its
        weights stay loaded) with fresh fitted views (``fresh_views``).
        """
        with self._lock:
            taken = self.pending_outcomes  # outcomes stored before this point are in the fit
            live = self.router
        encoder = self._encoder
        if encoder is None and getattr(live, "encoder_", None) is not None:  # an exploring router may have none yet
            from preroll.encoders import fresh_views

            encoder = fresh_views(live.encoder_)
        router, counts = build_router(self.config, self.store, encoder=encoder)
        with self._lock:
            if live is not None:
                from preroll.route.explore import carry_over

                carry_over(live, router)  # the exploration ledger continues; outcomes the fit missed are kept
            self.router = router
            self.fits += 1
            self.fitted_on = counts
            self.pending_outcomes = max(0, self.pending_outcomes - taken)
        self.stats.count("refits")
        return counts

    def outcomes_added(self, n: int) -> bool:
        """Note ``n`` newly stored outcomes; start a background refit when enough have arrived.

        Returns whether a refit was started.
        """
        with self._lock:
            self.pending_outcomes += n
            start = self._refit_wanted() and not self._refitting
            if start:
                self._refitting = True
        if start:
            self.refit_pool.submit(self._background_refit)
        return start

    def _background_refit(self) -> None:
        # Loops while feedback keeps arriving faster than refits finish; a failed
        # refit stops the loop (the next feedback tries again) instead of spinning.
        while True:
            try:
                self.refit()
            except Exception as exc:  # keep serving with the old router; say so in /stats
                self.stats.error(f"refit: {type(exc).__name__}: {exc}")
                failed = True
            else:
                failed = False
            with self._lock:
                if failed or not self._refit_wanted():
                    self._refitting = False
                    return

    def _refit_wanted(self) -> bool:
        """Enough new outcomes for a refit (under ``self._lock``).

        With exploration on, the router's own schedule (``explore.refit``: doubling from ``first_refit``, at
        least every ``max_gap`` outcomes, by default) decides, counted over every outcome it observed since
        the server started; without, ``router.refit_every`` stored outcomes.
        """
        if self._exploring():
            return self.router is not None and self.router.refit_due
        return self.pending_outcomes >= self.config.router.refit_every

    def status(self) -> dict:
        with self._lock:
            out = {"fits": self.fits, "fitted_on": dict(self.fitted_on),
                   "pending_outcomes": self.pending_outcomes, "refit_every": self.config.router.refit_every,
                   "refitting": self._refitting, "queued": self.queued()}
            if self.router is not None and self._exploring():
                out["explore"] = self.router.explore_stats()  # explored decisions, extra cost vs greedy
            return out

    def _exploring(self) -> bool:
        from preroll.route.explore import resolve_settings

        return resolve_settings(self.config.router.explore) is not None

    async def observe(self, model: str, outcomes: list[Outcome]) -> None:
        """Feedback as bandit feedback: the live router's incremental update (refits stay in the background).

        Runs on the routing thread, between router calls. A failure is counted
        in ``/stats``; the outcomes are already stored and reach the next refit.
        """
        if not outcomes or self.router is None or not self._exploring():
            return
        await asyncio.get_running_loop().run_in_executor(self._route_pool, self._observe_now, model, outcomes)

    def _observe_now(self, model: str, outcomes: list[Outcome]) -> None:
        try:
            self.router.observe([o.prompt for o in outcomes], [model] * len(outcomes),
                                [o.successes / o.attempts for o in outcomes], refit=False)
        except Exception as exc:
            self.stats.error(f"observe: {type(exc).__name__}: {exc}")

    def queued(self) -> int:
        """Prompts waiting for the router (not yet in a router call)."""
        return 0 if self._queue is None else self._queue.qsize()

    # -- routing -----------------------------------------------------------------

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._batcher = asyncio.create_task(self._run_batcher())

    async def stop(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
            try:
                await self._batcher
            except asyncio.CancelledError:
                pass
        self._route_pool.shutdown(wait=True)
        self.refit_pool.shutdown(wait=True)

    async def decide(self, prompt: str, lam: float | None = None) -> Decided:
        """Route one prompt, batched with whatever else is waiting."""
        assert self._queue is not None, "RoutingService.start() was not awaited"
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(prompt, lam, future, time.perf_counter()))
        return await future

    async def _run_batcher(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        max_batch = self.config.router.max_batch
        while True:
            batch = [await queue.get()]
            while len(batch) < max_batch and not queue.empty():
                batch.append(queue.get_nowait())
            by_lam: dict[float | None, list[_Pending]] = {}
            for item in batch:
                by_lam.setdefault(item.lam, []).append(item)
            for lam, items in by_lam.items():
                try:
                    decisions, call_ms = await loop.run_in_executor(
                        self._route_pool, self._route_now, [i.prompt for i in items], lam)
                except Exception as exc:
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                self.stats.latency("decision_ms", call_ms)
                self.stats.batch(len(items))
                done = time.perf_counter()
                for item, decision in zip(items, decisions):
                    wait_ms = (done - item.arrived) * 1000
                    self.stats.latency("decision_wait_ms", wait_ms)
                    if not item.future.done():
                        item.future.set_result(Decided(decision, call_ms, wait_ms, len(items)))

    def _route_now(self, prompts: list[str], lam: float | None):
        router = self.router
        t0 = time.perf_counter()
        decisions = router.route(prompts, lam=lam)
        return decisions, (time.perf_counter() - t0) * 1000
