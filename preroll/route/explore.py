"""Live routing from bandit feedback: Thompson sampling on the router's Beta beliefs.

A deployed router learns only the outcome of the model it chose. A router
that always takes its greedy choice never learns about a model it has stopped
choosing, so its beliefs about that model freeze wherever they were. This
module makes :class:`~preroll.route.Router` explore, within bounds:

* **Beliefs.** Between full fits, the fitted router's Beta belief per
  (prompt, model) -- its own head (by default, on its bandit outcomes, the
  shared-difficulty model of :mod:`preroll.route.pooled`), refitted on the accumulated bandit
  histories when due -- is updated by a cheap online correction: every
  outcome observed since the last fit adds pseudo-counts to the beliefs of
  prompts near it (a kNN-Beta update: the ``knn_k`` nearest observed prompts,
  each weighted ``exp(-(1 - cosine) / knn_tau)``, add ``w * y`` successes and
  ``w * (1 - y)`` failures to the model that answered). With no fit yet, the
  base belief is each model's prior ``Beta(prior_alpha, prior_beta)`` updated
  with that model's own outcomes, and prompts are compared through a view
  that needs no fit (hashed character n-grams), so a router with exploration
  on routes before it has any history.
* **Warm-up.** With ``warmup`` set (default 100), the first decisions are
  blind to the prompt: each goes to the model still in the running with the
  fewest warm-up decisions, until every such model has ``warmup`` outcomes
  from them. A model drops out once its mean utility over those outcomes,
  plus ``contenders_z`` standard errors, is below the best model's minus as
  many (successive elimination; never before 30 outcomes, unless its price
  alone rules it out), and Thompson then explores only the models left.
  Outcomes in the histories given to :meth:`Router.fit` count toward it (they
  were not chosen by this router's draws). Why:
  Thompson explores where the greedy model's draw is low, on hard prompts, so
  the outcomes it gathers understate every explored model and the greedy
  router can lock in on a worse one; outcomes of decisions that did not look
  at the prompt are unbiased (RESULTS.md, "Live routing, fourth round").
* **Thompson sampling.** One success rate is drawn per (prompt, model) from
  that belief plus the prior's pseudo-counts (a fitted belief centred on a
  base rate from four failures must not rule a model out for good); the model with the best sampled utility ``theta - lam * cost``
  is the exploring choice. ``explore=False`` takes the greedy choice on the
  same beliefs' means (the router's own rule).
* **Labelled histories.** A router fitted on labels (several models' outcomes per prompt; not a bandit
  log) explores only prompts its guard calls far from them (``explore_near_labels`` to explore everywhere):
  near its labels the greedy choice is already judged, and explored outcomes there only bias its heads.
* **Lam-aware.** A model whose optimistic utility (mean + ``exclude_z`` sd)
  is below the best model's pessimistic utility (mean - ``exclude_z`` sd) is
  never explored: its price makes it hopeless at this ``lam``. The default
  ``exclude_z = 1`` also keeps the draws among contenders: with 2, Thompson
  left the greedy choice on 47% of a stream's decisions and lost 2.3 points
  more over its last 3,000 (docs/route.md).
* **Contenders.** Without a warm-up and with ``contenders_z`` set (default 2), a model is explored only
  while its mean utility over all its outcomes, plus ``contenders_z`` standard
  errors, reaches the best model's minus as many. Thompson leaves the greedy
  choice where the greedy model's draw is low, on hard prompts, so explored
  models' histories are biased down; draws spent on models clearly worse on
  average add to that bias and teach the router little (RESULTS.md, "Live
  routing, third round").
* **Bounded.** A decision is *explored* when it differs from the greedy one.
  The warm-up makes at most ``warmup`` decisions per model (within the budget below). At every prefix
  of the stream, the other
  explored decisions are at most ``max_share`` of all decisions (after ``anneal_after`` decisions, at most ``max_share *
  sqrt(anneal_after * decisions)``: the beliefs' spread is a prompt's success
  rate's, which does not shrink with evidence, so Thompson's appetite for
  exploring would not fall by itself), and with ``budget_per_1k`` set, the extra spend over the
  greedy choices (net: exploring a cheaper model gives credit) is at most
  ``budget_per_1k`` per 1,000 decisions so far. An exploration that would
  break either takes the greedy choice instead.
* **Refits.** :meth:`Router.observe` is an O(d) append; a full refit of the
  router on the histories so far (per model the newest ``max_history``) runs when due
  (``refit="doubling"``: at ``first_refit`` outcomes, then each time the history a
  refit reads, the fit's histories plus the outcomes, doubles, at least every
  ``max_gap``; or every ``refit`` outcomes). A server passes ``refit=False`` and
  refits in the background instead (``refit_due`` says when).

Why kNN-Beta for the online part: it needs no fit, its pseudo-counts are on
the same scale as a kNN head's concentration (the neighbourhood's
effective number of rows), and an observation moves only the beliefs of
prompts like it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator


class ExploreSettings(BaseModel):
    """How a router explores (``Router(explore=ExploreSettings(...))``; ``explore=True`` is the defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int | None = Field(default=0, description="Seed of the Thompson draws; null: fresh entropy.")
    max_share: float = Field(default=0.25, ge=0, le=1, allow_inf_nan=False,
                             description="Most explored decisions (differing from the greedy choice) outside the "
                                         "warm-up, as a share of all decisions so far.")
    anneal_after: int | None = Field(
        default=1000, ge=1,
        description="After this many decisions the cap shrinks: explored decisions at most max_share * "
                    "sqrt(anneal_after * decisions) (a share falling as 1/sqrt(decisions)); null: a flat cap.")
    budget_per_1k: float | None = Field(
        default=None, ge=0, allow_inf_nan=False,
        description="Budget pacing: at most this extra spend over the greedy choices per 1,000 decisions "
                    "so far (in the models' price units); null: no budget.")
    refit: Literal["doubling"] | int = Field(
        default="doubling", description="Full refit schedule: 'doubling' (at first_refit outcomes, then each "
                                        "time the history a refit reads, fit histories plus outcomes, doubles) "
                                        "or every N outcomes.")
    first_refit: int = Field(default=32, ge=1, description="Outcomes before the first full fit.")
    max_gap: int | None = Field(
        default=1024, ge=1,
        description="With refit='doubling': at most this many outcomes between two refits (doubling until the "
                    "gap reaches it, then every max_gap); null: no cap. Why a cap: with doubling alone, traffic "
                    "whose mix moves after 3,000 outcomes waits until 4,096 for a refit, and the heads keep "
                    "routing the new topics by the old ones.")
    max_history: int | None = Field(
        default=16_384, ge=1,
        description="Per model, a refit reads at most this many outcomes, the newest (the fit history's, then "
                    "observed ones), and older observed outcomes leave memory; null: every outcome. Why: a "
                    "router that lives for months refits every max_gap outcomes, and a refit's cost grows faster "
                    "than its history (the shared-difficulty model: 1.4 s on 9,000 outcomes, 36 s on 147,000); "
                    "the newest outcomes also describe the model behind a name as it is now.")
    prior_alpha: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    prior_beta: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    exclude_z: float = Field(default=1.0, ge=0, allow_inf_nan=False,
                             description="Standard deviations of the lam-aware exclusion's bounds.")
    contenders_z: float | None = Field(
        default=2.0, ge=0, allow_inf_nan=False,
        description="Standard errors of the warm-up's elimination; without a warm-up, explore only contenders: "
                    "models whose mean utility over all their outcomes so far, plus contenders_z standard errors, "
                    "reaches the best model's minus as many; null: every model (and a warm-up rules out on the means alone).")
    warmup: int | None = Field(
        default=100, ge=1,
        description="Elimination warm-up: before Thompson sampling, send each decision, blind to the prompt, to "
                    "the model still in the running with the fewest warm-up decisions, until each has this many "
                    "outcomes from them or from its fit history; a model drops out once its mean utility on "
                    "them, plus contenders_z standard errors, is below the best model's minus as many. Thompson "
                    "then explores only the models left. Null: no warm-up.")
    explore_near_labels: bool = Field(
        default=False,
        description="With a labelled fit history (prompts carrying several models' outcomes, not a bandit log), "
                    "explore prompts near it too; false: explore only prompts the guard calls far from the "
                    "history, and take the greedy choice near it, where the labels already say which model wins "
                    "(exploring there cost a router fitted on labels more than it taught it; docs/route.md).")
    careful: bool = Field(
        default=False,
        description="Greedy choice by the 'confident' rule on every prompt when the router's rule is 'utility': "
                    "the model best on average unless another's gain is confident (a bandit history is thin "
                    "for every model but the one mostly chosen).")
    knn_k: int = Field(default=20, ge=1, description="Observed prompts since the last fit that update a belief.")
    knn_tau: float = Field(default=0.1, gt=0, allow_inf_nan=False,
                           description="Similarity scale of the online update: weight exp(-(1 - cos) / tau).")

    def refit_due(self, n: int, fitted_at: int, base: int = 0) -> bool:
        """Whether a full refit is due with ``n`` outcomes observed, the last fit having held ``fitted_at`` of
        them and the histories given to ``fit`` ``base`` outcomes.

        The doubling counts the whole history a refit reads (``base + fitted_at``). Why: a refit after 32
        outcomes on top of 22,500 labelled ones costs a full fit (15 s on nine models' 2,500 labelled
        prompts) and moves the heads by a fraction of a per cent of their rows; with an empty history the
        schedule is unchanged.
        """
        if n == 0 or n == fitted_at or n < self.first_refit:
            return False
        if self.refit == "doubling":
            held = base + fitted_at
            gap = held if self.max_gap is None else min(held, self.max_gap)
            return n >= fitted_at + gap
        return n - fitted_at >= int(self.refit)

    def share_cap(self, decisions: int) -> float:
        """Most explored decisions allowed among the first ``decisions`` (never above ``max_share * decisions``)."""
        if self.anneal_after is None or decisions <= self.anneal_after:
            return self.max_share * decisions
        return self.max_share * float(np.sqrt(self.anneal_after * decisions))

    @field_validator("refit")
    @classmethod
    def _refit_ok(cls, v: Any) -> Any:
        if isinstance(v, int) and (isinstance(v, bool) or v < 1):
            raise ValueError(f"refit must be 'doubling' or a number of outcomes >= 1, got {v!r}")
        return v


def resolve_settings(explore: Any) -> ExploreSettings | None:
    """``explore=`` as given to the router: ``None``/``False`` off, ``True`` defaults, a mapping or settings."""
    from preroll.route.errors import RouteConfigError
    from preroll.validation import switch_or_settings

    return switch_or_settings(explore, ExploreSettings, field="explore", error_cls=RouteConfigError)


@dataclass
class ExploreLedger:
    """What exploration has cost so far: decisions, explored decisions, extra spend over the greedy choices."""

    decisions: int = 0
    explored: int = 0
    extra_cost: float = 0.0           # net: sum of cost(chosen) - cost(greedy)
    greedy_cost: float = 0.0          # sum of cost(greedy) over all decisions
    capped: int = 0                   # explorations refused by the share cap or the budget
    warmup: int = 0                   # decisions made by the elimination warm-up (blind to the prompt)
    warmup_explored: int = 0          # of which differed from the greedy choice (outside the share cap)
    excluded: int = 0                 # (prompt, model) pairs left out as hopeless at the decision's lam
    observed: int = 0
    refits: int = 0
    refit_s: float = 0.0
    observe_s: float = 0.0            # incremental updates only (refits apart)

    def snapshot(self) -> dict[str, Any]:
        n = max(self.decisions, 1)
        return {"decisions": self.decisions, "explored": self.explored,
                "explored_share": self.explored / n, "extra_cost": self.extra_cost,
                "extra_cost_per_1k": 1000.0 * self.extra_cost / n, "greedy_cost": self.greedy_cost,
                "capped": self.capped, "warmup": self.warmup,
                "warmup_explored": self.warmup_explored, "excluded": self.excluded, "observed": self.observed,
                "refits": self.refits, "refit_s": round(self.refit_s, 3),
                "observe_ms_mean": 1000.0 * self.observe_s / max(self.observed, 1)}


@dataclass(frozen=True)
class Choices:
    """Per prompt of a batch: the chosen model's column, whether it left the greedy choice, whether the
    warm-up made it (a warm-up decision is bounded by ``warmup``, not by the share cap)."""

    columns: np.ndarray
    explored: np.ndarray
    warmup: np.ndarray


class ObserveReport(BaseModel):
    """What one :meth:`Router.observe` call did."""

    model_config = ConfigDict(frozen=True)

    observed: int
    total: int                 # outcomes observed since the router's last user fit
    refitted: bool
    refit_due: bool
    seconds: float


class HashedView:
    """Character 2-4-gram counts hashed to ``n_features`` dimensions, unit rows: a view that needs no fit."""

    def __init__(self, n_features: int = 2 ** 12) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self._vec = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=n_features,
                                      alternate_sign=False, norm="l2")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return self._vec.transform(list(texts)).toarray().astype(np.float32)


class _Buffer:
    """Outcomes observed since the last fit, in the current embedding space (grows by doubling)."""

    def __init__(self) -> None:
        self.n = 0
        self.X: np.ndarray | None = None
        self.j = np.zeros(0, dtype=np.int64)
        self.y = np.zeros(0)

    def add(self, X: np.ndarray, j: np.ndarray, y: np.ndarray) -> None:
        k = len(X)
        if self.X is None or self.X.shape[1] != X.shape[1]:
            self.X, self.j, self.y, self.n = np.zeros((max(64, k), X.shape[1]), np.float32), \
                np.zeros(max(64, k), np.int64), np.zeros(max(64, k)), 0
        if self.n + k > len(self.X):
            cap = max(2 * len(self.X), self.n + k)
            self.X = np.vstack([self.X, np.zeros((cap - len(self.X), self.X.shape[1]), np.float32)])
            self.j = np.concatenate([self.j, np.zeros(cap - len(self.j), np.int64)])
            self.y = np.concatenate([self.y, np.zeros(cap - len(self.y))])
        self.X[self.n:self.n + k], self.j[self.n:self.n + k], self.y[self.n:self.n + k] = X, j, y
        self.n += k


MIN_TO_RULE_OUT = 30   # warm-up outcomes a model needs before the elimination may drop it


def _reaching_the_best(a: np.ndarray, b: np.ndarray, price: np.ndarray, z: float,
                       keep: np.ndarray) -> tuple[np.ndarray, float]:
    """Per model, from Beta(a, b) counts of its outcomes: whether its mean utility plus ``z`` standard errors
    reaches the best kept model's mean utility minus as many; and that best lower bound.

    The one bound of both eliminations (the warm-up's and, without one, the contender test's)."""
    mu = a / (a + b)
    se = np.sqrt(mu * (1.0 - mu) / (a + b + 1.0))
    u = mu - price
    best_lo = float(np.max(np.where(keep, u - z * se, -np.inf)))
    return np.asarray(keep, bool) & (u + z * se >= best_lo), best_lo


class Warmup:
    """The elimination warm-up's tally: outcomes of decisions drawn independently of the prompt.

    Thompson explores a model where the greedy model's draw is low, on hard
    prompts, so every explored model's own outcomes understate it. Decisions
    made without looking at the prompt give each model an unbiased mean, so
    models can be ruled out (successive elimination) on evidence that
    selection has not bent.
    """

    def __init__(self, m: int) -> None:
        self.sums = np.zeros((m, 2))              # per model: successes, outcomes (warm-up decisions only)
        self.pending: dict[tuple[str, int], int] = {}   # (prompt, column) -> warm-up decisions awaiting outcome
        self.n_pending = np.zeros(m)
        self.cost_sum = np.zeros(m)
        self.cost_n = 0

    def running(self, z: float, lam: float, keep: np.ndarray) -> np.ndarray:
        """Models not ruled out: mean utility + ``z`` s.e. reaches the best model's mean utility - ``z`` s.e."""
        price = lam * self.cost_sum / max(self.cost_n, 1)
        successes, outcomes = self.sums[:, 0], self.sums[:, 1]
        reach, best_lo = _reaching_the_best(1.0 + successes, 1.0 + outcomes - successes, price, z, keep)
        # Too few outcomes to rule a model out on its mean: the normal bounds are loose at a handful, and the
        # test is repeated at every decision (with 8 outcomes the best of nine models was ruled out on a real
        # stream). Its price alone may: a model that could not catch up even if it always succeeded.
        young = (outcomes < MIN_TO_RULE_OUT) & (1.0 - price >= best_lo)
        return np.asarray(keep, bool) & (reach | young)

    def load(self) -> np.ndarray:
        """Per model, warm-up decisions so far: outcomes back plus those awaited."""
        return self.sums[:, 1] + self.n_pending

    def pick(self, open_: np.ndarray, rng: np.random.Generator) -> int:
        """The open model with the fewest warm-up decisions (ties at random): a choice blind to the prompt."""
        load = np.where(open_, self.load(), np.inf)
        least = np.flatnonzero(load == load.min())
        return int(least[rng.integers(len(least))])

    def sent(self, prompt: str, j: int) -> None:
        """A warm-up decision sent ``prompt`` to column ``j``: its outcome is awaited."""
        key = (prompt, int(j))
        self.pending[key] = self.pending.get(key, 0) + 1
        self.n_pending[j] += 1

    def observed(self, prompt: str, j: int, y: float) -> None:
        """An outcome came back: it counts if a warm-up decision sent ``prompt`` to column ``j`` (once each)."""
        key = (prompt, int(j))
        left = self.pending.get(key)
        if left is None:
            return
        if left <= 1:
            del self.pending[key]
        else:
            self.pending[key] = left - 1
        self.n_pending[j] -= 1
        self.sums[j] += (y, 1.0)


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, np.float32)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)


class ExploreState:
    """A router's exploration state: histories, the online correction, the ledger, the random stream.

    Held by the router as ``explore_state_``; every method takes the lock, so a
    server may route on one thread and observe on another.
    """

    def __init__(self, settings: ExploreSettings, names: list[str]) -> None:
        self.settings = settings
        self.names = list(names)
        self.rng = np.random.default_rng(settings.seed)
        self.lock = threading.RLock()
        self.ledger = ExploreLedger()
        self.base: dict[str, list] = {n: [] for n in names}       # the user's fit histories
        self.n_base = 0                                            # their outcomes (records), all models
        self.observed: dict[str, list] = {n: [] for n in names}   # outcomes since (Outcome records)
        self.n_observed = 0
        self.fitted_at = 0              # n_observed at the last full fit
        self.phase = 0                  # embedding space id: changes at every full fit
        self.partial: Any = None        # a Router over the models with history, when some have none
        self.partial_cols: np.ndarray | None = None
        self.counts = np.zeros((len(names), 2))   # per model, successes and failures observed (prior phase)
        self.warm = Warmup(len(names))
        self.buffer = _Buffer()
        self.recent: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        self._view: HashedView | None = None
        self.refitting = False

    # ----------------------------------------------------------------- beliefs

    def view(self) -> HashedView:
        if self._view is None:
            self._view = HashedView()
        return self._view

    def embed(self, router, prompts: list[str]) -> np.ndarray:
        """Embeddings in the current space: the fitted router's (or partial router's), else the hashed view."""
        if _is_fitted(router):
            return router.embed(prompts)
        if self.partial is not None:
            return self.partial.embed(prompts)
        return self.view().encode(prompts)

    def base_belief(self, router, X: np.ndarray):
        """``(alpha, beta)`` arrays (n, m) before the online correction, and the guard's far flags of a fitted
        router (``None`` without a fit): both from the router's one pass over its history."""
        n, m = len(X), len(self.names)
        if _is_fitted(router):
            b, far = router._belief_and_far(np.asarray(X, dtype=np.float32), far=True)
            return np.array(b.alpha, float), np.array(b.beta, float), far
        s = self.settings
        alpha = np.broadcast_to(s.prior_alpha + self.counts[:, 0], (n, m)).copy()
        beta = np.broadcast_to(s.prior_beta + self.counts[:, 1], (n, m)).copy()
        if self.partial is not None:
            b = self.partial.predict_beta_embeddings(X)
            alpha[:, self.partial_cols], beta[:, self.partial_cols] = b.alpha, b.beta
        return alpha, beta, None

    def correct(self, alpha: np.ndarray, beta: np.ndarray, X: np.ndarray) -> None:
        """Add the kNN-Beta pseudo-counts of the outcomes observed since the last fit (in place)."""
        buf = self.buffer
        if buf.n == 0 or buf.X is None or buf.X.shape[1] != X.shape[1]:
            return
        S = X @ buf.X[:buf.n].T
        k = min(self.settings.knn_k, buf.n)
        # Among (near-)equally similar rows the newest win: the latest evidence on a prompt counts first.
        rank = S + 1e-4 * np.arange(buf.n) / buf.n
        idx = np.argpartition(-rank, k - 1, axis=1)[:, :k] if k < buf.n else np.broadcast_to(np.arange(buf.n), S.shape)
        s = np.take_along_axis(S, idx, axis=1)
        w = np.exp(-(1.0 - np.minimum(s, 1.0)) / self.settings.knn_tau)
        rows = np.broadcast_to(np.arange(len(X))[:, None], idx.shape)
        cols = buf.j[idx]
        y = buf.y[idx]
        np.add.at(alpha, (rows, cols), w * y)
        np.add.at(beta, (rows, cols), w * (1.0 - y))

    def belief(self, router, prompts: list[str]):
        """The corrected Beta belief of every model on ``prompts``, the embeddings (remembered for observe), and
        the far flags of a fitted router's guard (``None`` without a fit)."""
        from preroll.beliefs import BetaPrediction

        raw = self.embed(router, prompts)
        alpha, beta, far = self.base_belief(router, raw)
        X = _unit(raw)
        self.correct(alpha, beta, X)
        for p, x in zip(prompts, X):
            self.recent[p] = (self.phase, x)
            self.recent.move_to_end(p)
        while len(self.recent) > 4096:
            self.recent.popitem(last=False)
        return BetaPrediction(alpha, beta), X, far

    # --------------------------------------------------------------- decisions

    def choose(self, belief, C: np.ndarray, greedy: np.ndarray, lam: float | None, keep: np.ndarray,
               explore: bool, prompts: Sequence[str], explorable: np.ndarray | None = None) -> Choices:
        """Per prompt, the chosen column and whether it was explored (the warm-up, then Thompson within the
        bounds). ``prompts`` name the decisions, so that their outcomes can be matched to the warm-up's;
        ``explorable`` (per prompt; ``None``: all) says where Thompson may leave the greedy choice."""
        s = self.settings
        # Draws and bounds read the belief plus the prior's pseudo-counts: a fitted belief is centred on each
        # model's base rate, and a base rate from a handful of outcomes (0 of 4) must not rule a model out.
        a, b = belief.alpha + s.prior_alpha, belief.beta + s.prior_beta
        P = a / (a + b)
        S = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1.0)))
        n, m = P.shape
        chosen = greedy.copy()
        explored = np.zeros(n, dtype=bool)
        warmed = np.zeros(n, dtype=bool)
        ledger = self.ledger
        if not explore:
            ledger.decisions += n
            ledger.greedy_cost += float(C[np.arange(n), greedy].sum())
            return Choices(chosen, explored, warmed)
        theta = self.rng.beta(a, b)
        lam_ = 0.0 if lam is None else float(lam)
        U = theta - lam_ * C
        allowed = np.broadcast_to(keep, (n, m)).copy()
        if lam is not None:
            hi = np.minimum(P + s.exclude_z * S, 1.0) - lam_ * C
            lo = np.maximum(P - s.exclude_z * S, 0.0) - lam_ * C
            best_lo = np.max(np.where(allowed, lo, -np.inf), axis=1, keepdims=True)
            hopeless = allowed & (hi < best_lo)
            ledger.excluded += int(hopeless.sum())
            allowed &= ~hopeless
        open_ = np.zeros(m, dtype=bool)   # models the warm-up still owes decisions to
        if s.warmup is not None:
            w = self.warm
            w.cost_sum += C.sum(axis=0)
            w.cost_n += n
            running = w.running(float(s.contenders_z or 0.0), lam_, keep)
            allowed &= running[None, :]
            # Blind to the prompt, so not the per-prompt hopeless test: the elimination is the warm-up's lam test.
            open_ = running & (w.load() < s.warmup)
        elif s.contenders_z is not None:
            allowed &= self.contenders(C, lam_, keep)[None, :]
        if explorable is not None:
            allowed[~np.asarray(explorable, dtype=bool)] = False
        allowed[np.arange(n), greedy] = True
        ts = np.argmax(np.where(allowed, U, -np.inf), axis=1)
        for i in range(n):
            g, t = int(greedy[i]), int(ts[i])
            if open_.any():
                t_warm = self.warm.pick(open_, self.rng)
                if self._within_budget(float(C[i, t_warm] - C[i, g])):
                    self.warm.sent(prompts[i], t_warm)
                    open_ &= self.warm.load() < s.warmup
                    warmed[i] = True
                    ledger.warmup += 1
                    ledger.warmup_explored += t_warm != g
                    self._decide(i, g, t_warm, C, chosen, explored)
                    continue
            ok = t == g or (ledger.explored - ledger.warmup_explored + 1 <= s.share_cap(ledger.decisions + 1) + 1e-9
                            and self._within_budget(float(C[i, t] - C[i, g])))
            ledger.capped += not ok
            self._decide(i, g, t if ok else g, C, chosen, explored)
        return Choices(chosen, explored, warmed)

    def _within_budget(self, delta: float) -> bool:
        """Whether ``delta`` more spend over the greedy choice keeps to ``budget_per_1k`` at the next decision."""
        s, ledger = self.settings, self.ledger
        return s.budget_per_1k is None or \
            ledger.extra_cost + delta <= s.budget_per_1k * (ledger.decisions + 1) / 1000.0 + 1e-12

    def _decide(self, i: int, g: int, t: int, C: np.ndarray, chosen: np.ndarray, explored: np.ndarray) -> None:
        """Record decision ``i``: column ``t`` where the greedy choice was ``g``."""
        ledger = self.ledger
        if t != g:
            chosen[i], explored[i] = t, True
            ledger.explored += 1
            ledger.extra_cost += float(C[i, t] - C[i, g])
        ledger.decisions += 1
        ledger.greedy_cost += float(C[i, g])

    def contenders(self, C: np.ndarray, lam: float, keep: np.ndarray) -> np.ndarray:
        """Models whose mean utility over all their outcomes is within ``contenders_z`` s.e. of the best's."""
        s = self.settings
        return _reaching_the_best(s.prior_alpha + self.counts[:, 0], s.prior_beta + self.counts[:, 1],
                                  lam * C.mean(axis=0), float(s.contenders_z or 0.0), keep)[0]

    # ----------------------------------------------------------------- observe

    def refit_due(self) -> bool:
        return self.settings.refit_due(self.n_observed, self.fitted_at, self.n_base)

    def newest(self, records: list) -> list:
        """The newest ``max_history`` of ``records`` (oldest first), or all of them without a cap."""
        cap = self.settings.max_history
        return records if cap is None else records[-cap:]

    def histories(self) -> dict[str, list]:
        """What a refit reads: per model, the fit history then the observed outcomes, the newest ``max_history``."""
        return {name: self.newest(self.base[name] + self.observed[name]) for name in self.names}

    def keep_recent(self, name: str) -> None:
        """Drop ``name``'s observed outcomes older than the newest ``max_history`` (amortised: at twice that)."""
        cap, kept = self.settings.max_history, self.observed[name]
        if cap is not None and len(kept) > 2 * cap:
            del kept[:-cap]


def _is_fitted(router) -> bool:
    return hasattr(router, "specs_") and hasattr(router, "heads_")


# ----------------------------------------------------------------------- router glue


def state(router) -> ExploreState:
    """The router's exploration state, created on first use."""
    st = getattr(router, "explore_state_", None)
    if st is None:
        settings = resolve_settings(router.explore) or ExploreSettings()
        st = ExploreState(settings, [s.name for s in router._specs()])
        router.explore_state_ = st
    return st


def on_fit(router, histories) -> bool:
    """Called at the start of :meth:`Router.fit` when exploring. Returns True when the fit was handled here.

    A user's fit resets what was observed (the histories given replace it);
    an internal refit (``state.refitting``) keeps it. When some models have no
    history yet, a router over the others is fitted and the rest keep their prior.
    """
    st = state(router)
    if not st.refitting:
        from preroll.route.router import _as_outcomes

        st.base = {n: _as_outcomes(n, histories.get(n) or []) if hasattr(histories, "get") else [] for n in st.names}
        st.n_base = sum(len(v) for v in st.base.values())
        st.observed = {n: [] for n in st.names}
        st.n_observed = st.fitted_at = 0
        st.counts[:] = 0.0
        st.warm = Warmup(len(st.names))
        for j, n in enumerate(st.names):
            for r in st.base[n]:
                st.counts[j] += (r.successes, r.attempts - r.successes)
                # The user's own histories were not chosen by this router's draws: they count toward the warm-up.
                st.warm.sums[j] += (r.successes / r.attempts, 1.0)
    missing = [n for n in st.names if not (histories.get(n) if hasattr(histories, "get") else None)]
    st.partial, st.partial_cols = None, None
    _new_phase(st)
    if not missing:
        return False
    for attr in ("specs_", "heads_", "joint_", "encoder_"):
        if hasattr(router, attr):
            delattr(router, attr)
    present = [j for j, n in enumerate(st.names) if n not in missing]
    if present:
        from preroll.route.router import Router

        specs = router._specs()
        sub = Router(models=[specs[j] for j in present], encoder=router.encoder, head=router.head,
                     rule=router.rule, lam=router.lam, threshold=router.threshold, cache_dir=router.cache_dir,
                     confidence=router.confidence, margin=router.margin, guard=router.guard)
        sub.fit({st.names[j]: histories[st.names[j]] for j in present})
        st.partial, st.partial_cols = sub, np.array(present)
    return True


def _new_phase(st: ExploreState) -> None:
    st.phase += 1
    st.buffer = _Buffer()
    st.recent.clear()


def explorable(router, settings: ExploreSettings, far: np.ndarray) -> np.ndarray | None:
    """Where Thompson may leave the greedy choice: everywhere, unless the router is fitted on labels.

    Why: a router fitted on a labelled history (several models' outcomes per prompt, e.g. a benchmark's
    table) already knows which model wins near that history; exploring there spends requests on models the
    labels have judged, and the explored outcomes, drawn where the greedy model's draw was low, bias the
    per-model heads it refits. On traffic whose topic mix had moved from its labelled history (eight untouched
    streams), exploring only prompts far from the history (the guard's far flags) gained 0.8 points over the
    stream and 0.7 frozen against exploring everywhere, which had been 0.6 behind the same router never
    updated (RESULTS.md, "Live routing, eighth round"). A bandit log (a live router's own outcomes) is not
    labels: there it explores everywhere.
    """
    if settings.explore_near_labels or getattr(router, "bandit_log_", True):
        return None
    return np.asarray(far, dtype=bool)


def route(router, prompts, *, explore: bool, rule, lam, threshold, exclude, n_tokens):
    """:meth:`Router.route` with exploration settings (fitted or not)."""
    from preroll.route import rules as _rules
    from preroll.route.router import _check_prompts
    from preroll.route.specs import RouteDecision

    st = state(router)
    if isinstance(prompts, str):
        prompts = [prompts]
    rule, param = router._rule_param(rule, lam, threshold)
    names = st.names
    keep = _rules.eligible(names, exclude)
    prompts = _check_prompts(prompts)
    with st.lock:
        belief, X, far = st.belief(router, prompts)
        C = router.costs(prompts, n_tokens)
        P = np.clip(belief.p_success, 0.0, 1.0)
        cols = np.flatnonzero(keep)
        if rule == "gain" and len(cols) != 2:
            from preroll.route.errors import RouteError

            raise RouteError(f"the 'gain' rule routes between exactly two models ({len(cols)} eligible)")
        if _is_fitted(router):
            ranked_by = "confident" if st.settings.careful and rule == "utility" else rule
            order = router.rank_models(belief, C, ranked_by, param, cols, far=far)
        else:  # no base rates yet: the 'confident' rule's default is undefined, rank by utility
            r = "utility" if rule == "confident" else rule
            order = cols[_rules.rank(r, P[:, cols], C[:, cols], param)]
        lam_for = param if rule in ("utility", "confident") else None
        picked = st.choose(belief, C, order[:, 0], lam_for, keep, explore, prompts,
                           explorable=None if far is None else explorable(router, st.settings, far))
        chosen, explored = picked.columns, picked.explored
    out = []
    for i in range(len(prompts)):
        rest = [names[j] for j in order[i] if j != chosen[i]]
        out.append(RouteDecision(model=names[chosen[i]], p_success={n: float(P[i, j]) for j, n in enumerate(names)},
                                 expected_cost=float(C[i, chosen[i]]), fallback=rest, rule=rule, param=param,
                                 explored=bool(explored[i])))
    return out


def observe(router, prompts, models, outcomes, *, refit: bool | None = None) -> ObserveReport:
    """:meth:`Router.observe`: append the outcomes, update the online correction, refit when due."""
    from preroll.data.records import Outcome
    from preroll.route.errors import RouteError, UnknownModelError
    from preroll.route.router import _check_prompts

    t0 = time.perf_counter()
    st = state(router)
    prompts = _check_prompts([prompts] if isinstance(prompts, str) else prompts)
    models = [models] if isinstance(models, str) else list(models)
    y = np.asarray([outcomes] if np.ndim(outcomes) == 0 else outcomes, dtype=float)
    if not len(prompts) == len(models) == len(y):
        raise RouteError(f"observe needs one model and one outcome per prompt: {len(prompts)} prompts, "
                         f"{len(models)} models, {len(y)} outcomes")
    if not np.all(np.isfinite(y)) or (y.size and (y.min() < 0 or y.max() > 1)):
        raise RouteError("outcomes must be success rates in [0, 1]")
    index = {n: j for j, n in enumerate(st.names)}
    for m in models:
        if m not in index:
            raise UnknownModelError(str(m), st.names, where="in observe")
    j = np.array([index[m] for m in models], dtype=np.int64)
    with st.lock:
        known: dict[int, np.ndarray] = {}
        for i, p in enumerate(prompts):
            hit = st.recent.get(p)
            if hit is not None and hit[0] == st.phase:
                known[i] = hit[1]
        missing = [i for i in range(len(prompts)) if i not in known]
        if missing:
            known.update(zip(missing, _unit(st.embed(router, [prompts[i] for i in missing]))))
        X = np.stack([known[i] for i in range(len(prompts))]) if prompts else np.zeros((0, 0), np.float32)
        if len(prompts):
            st.buffer.add(X, j, y)
        for p, m, v, jj in zip(prompts, models, y, j):
            st.observed[m].append(Outcome(prompt=p, successes=float(v), attempts=1.0, policy=m))
            st.keep_recent(m)
            st.counts[jj] += (v, 1.0 - v)
            st.warm.observed(p, int(jj), float(v))
        st.n_observed += len(prompts)
        st.ledger.observed += len(prompts)
        st.ledger.observe_s += time.perf_counter() - t0
        due = st.refit_due()
    refitted = False
    if due and (refit is None or refit):
        refit_now(router)
        refitted = True
    return ObserveReport(observed=len(prompts), total=st.n_observed, refitted=refitted,
                         refit_due=st.refit_due(), seconds=time.perf_counter() - t0)


def refit_now(router) -> None:
    """Full refit on the user's histories plus every outcome observed (blocking)."""
    st = state(router)
    with st.lock:
        histories = st.histories()
        at = st.n_observed
    if not any(histories.values()):
        return
    t0 = time.perf_counter()
    st.refitting = True
    try:
        router.fit(histories)
    finally:
        st.refitting = False
    with st.lock:
        st.fitted_at = at
        st.ledger.refits += 1
        st.ledger.refit_s += time.perf_counter() - t0


def carry_over(old, new) -> None:
    """Give a freshly fitted router ``new`` the exploration state of the live ``old`` one it replaces.

    The ledger and the random stream continue; outcomes ``old`` observed that
    ``new``'s histories do not hold (they arrived during its fit) are observed
    again by ``new``'s online correction. Used by ``preroll serve``'s background refits.
    """
    so = getattr(old, "explore_state_", None)
    if so is None or resolve_settings(new.explore) is None:
        return
    sn = state(new)
    with so.lock:
        sn.ledger, sn.rng, sn.warm = so.ledger, so.rng, so.warm
        held = {(r.prompt, n) for n in sn.names for r in sn.base.get(n, [])}
        late = [(r.prompt, n, r.successes / r.attempts) for n in so.names if n in sn.names
                for r in so.newest(so.observed[n]) if (r.prompt, n) not in held]
        # The refit schedule continues where the live router stood: ``new`` was fitted on every outcome
        # observed so far but the late ones (else a doubling schedule would restart at first_refit).
        sn.n_observed = sn.fitted_at = max(so.n_observed - len(late), 0)
        # ``new``'s fit histories hold the outcomes ``old`` observed: only ``old``'s own base counts as base.
        sn.n_base = so.n_base
    if late:
        observe(new, [p for p, _, _ in late], [m for _, m, _ in late], [v for _, _, v in late], refit=False)
        sn.ledger.observed -= len(late)


__all__ = ["Choices", "ExploreLedger", "ExploreSettings", "ExploreState", "HashedView", "ObserveReport", "resolve_settings"]
