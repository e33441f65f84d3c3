"""The live-routing benchmark: a labelled set replayed as a stream under bandit feedback.

Protocol (``preroll bench route --stream``). A share ``holdout`` of the unique
prompts of a table of priced models (LLMRouter's nine, or a user's own) is held out first. The rest arrive in
random order (``seed``), in batches of ``batch`` requests; every method starts
from an empty history, chooses a model per request, and then learns only the
score of the model it chose (bandit feedback). With ``labels`` (``--labels N``),
every method starts instead from every model's score on N prompts, and the
traffic is unlike them (``labels_from="topics"``: two of five topics are absent
from the labels; :mod:`preroll.bench.route_labels`); a router fitted on the
labels and never updated is replayed beside them. The same stream is replayed for:

* **explore router**: :class:`~preroll.route.Router` with ``explore=`` on
  (Thompson sampling on its Beta beliefs, online correction between refits,
  refits on a doubling schedule);
* **full-information router**: the same router, never exploring, that sees every
  model's score on every past request (an upper reference no bandit can beat
  for long), refitted on the same schedule;
* **epsilon-greedy** and **LinUCB** (disjoint, Li et al. 2010) on a ridge model per
  model of the chosen encoder's features (``baseline_features``: its parts that need no fit; hashed
  character n-grams when every part is fitted, e.g. ``lexical``), and **Thompson without context** (one
  Beta per model);
* **best single model in hindsight**: the model best on the stream (on the last
  ``last`` requests, the model best on those).

Reported: cumulative quality and cost; quality over the last ``last`` requests
against the best single model in hindsight on the same requests (exploration
included); then, frozen (the explore router refitted on its bandit histories,
greedy at ``lam``), quality on the held-out prompts against the best single
model in hindsight there and against the model best on the stream. Also the
exploration spend, the decision and observe times, and a regret-curve PNG
(cumulative score behind the best single model in hindsight).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from preroll.outputs import save_figure


@dataclass
class StreamBenchConfig:
    root: str | None = None
    seed: int = 0
    holdout: float = 0.2                  # share of unique prompts held out for the frozen evaluation
    max_prompts: int | None = None
    encoder: Any = "minilm+lexical+stats"
    head: Any = "auto"                    # the explore and full-information routers' head
    cache_dir: str | None = None
    output_tokens: int = 256
    lam: float = 0.0
    batch: int = 16                       # requests decided before their outcomes come back
    last: int = 3000
    explore: dict[str, Any] = field(default_factory=dict)   # ExploreSettings fields (seed defaults to the run's)
    full_info: bool = True
    baselines: bool = True
    baseline_encoder: str | None = None   # features of epsilon-greedy and LinUCB; None: baseline_features(encoder)
    epsilon: float = 0.1
    linucb_alpha: float = 0.5
    ridge: float = 1.0
    labels: int = 0                       # prompts whose every score fits the routers before the stream; 0: none
    labels_from: str = "topics"           # "topics": labels from three of five topics, traffic adds two new ones


class LinearBandit:
    """Per-model ridge regression of the score on the features (Sherman-Morrison updates), for two baselines.

    ``kind="linucb"``: argmax ``x.theta + alpha * sqrt(x A^-1 x) - lam * c``; ``kind="epsilon"``: argmax of the
    ridge mean minus ``lam * c``, a uniformly random model with probability ``epsilon``.
    """

    def __init__(self, m: int, d: int, *, kind: str, alpha: float = 0.5, epsilon: float = 0.1, ridge: float = 1.0,
                 seed: int = 0) -> None:
        self.kind, self.alpha, self.epsilon = kind, alpha, epsilon
        self.A_inv = np.stack([np.eye(d) / ridge for _ in range(m)])
        self.b = np.zeros((m, d))
        self.rng = np.random.default_rng(seed)

    def choose(self, X: np.ndarray, C: np.ndarray, lam: float) -> np.ndarray:
        theta = np.einsum("mde,me->md", self.A_inv, self.b)
        mean = X @ theta.T
        if self.kind == "linucb":
            width = np.sqrt(np.maximum(np.einsum("nd,mde,ne->nm", X, self.A_inv, X), 0.0))
            return np.argmax(mean + self.alpha * width - lam * C, axis=1)
        pick = np.argmax(mean - lam * C, axis=1)
        rand = self.rng.random(len(X)) < self.epsilon
        pick[rand] = self.rng.integers(0, C.shape[1], size=int(rand.sum()))
        return pick

    def update(self, X: np.ndarray, picks: np.ndarray, y: np.ndarray) -> None:
        for x, j, v in zip(X, picks, y):
            Ax = self.A_inv[j] @ x
            self.A_inv[j] -= np.outer(Ax, Ax) / (1.0 + x @ Ax)
            self.b[j] += v * x


LABELS_ONLY = "fitted on labels, never updated"


def baseline_features(encoder: Any) -> str:
    """The encoder spec of the linear baselines' features: the parts of the router's ``encoder`` that need no fit,
    or ``"hashed"`` (character n-grams, the explore router's own view before its first fit) when none is left.

    Why not the encoder as given: its fitted views (lexical, stats) are fitted on a history's texts, and the
    baselines start from an empty history and never refit; fitting them on the stream's own prompts would show
    each baseline the text of requests it has not yet served.
    """
    from preroll.encoders import _FITTED

    if not isinstance(encoder, str):
        return "hashed"
    parts = [p.strip() for p in encoder.split("+") if p.strip() and p.strip().lower() not in _FITTED]
    return "+".join(parts) if parts else "hashed"


def _features(prompts: list[str], encoder: str, cache_dir: str | None) -> np.ndarray:
    """Unit rows plus a bias column, from a view that needs no fit ("hashed": hashed character n-grams)."""
    if encoder == "hashed":
        from preroll.route.explore import HashedView

        X = HashedView(2 ** 9).encode(prompts).astype(float)
    else:
        from preroll.encoders import get_encoder

        X = np.asarray(get_encoder(encoder, cache_dir=cache_dir).encode(prompts), dtype=float)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    return np.hstack([X, np.ones((len(X), 1))])


def run_stream_bench(cfg: StreamBenchConfig, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route import random_subset, split_prompts
    from preroll.encoders import get_encoder
    from preroll.route import ExploreSettings, Router

    data = random_subset(load_llmrouter(cfg.root), cfg.max_prompts, cfg.seed)
    specs = data.model_specs(cfg.output_tokens)
    names = data.models
    m = len(names)
    Y = np.nan_to_num(data.scores, nan=0.0)
    hist_idx = np.zeros(0, dtype=int)
    label_info: dict[str, Any] | None = None
    if cfg.labels:
        from preroll.bench.route_labels import labelled_split

        split = labelled_split(data.prompts, cfg.seed, history=cfg.labels, source=cfg.labels_from,
                               holdout=cfg.holdout, cache_dir=cfg.cache_dir)
        hist_idx, order, held_idx = split.history, split.stream, split.held
        label_info = {"n": len(hist_idx), "from": cfg.labels_from, "new_topics": list(split.new_topics),
                      "new_share": split.new_share}
        progress(f"labels: every model's score on {len(hist_idx)} prompts ({cfg.labels_from}"
                 + (f"; {100 * split.new_share:.0f}% of the traffic from topics {split.new_topics}, absent from "
                    "them)" if split.new_topics else ")"))
    else:
        stream_idx, held_idx = split_prompts(data.prompts, 1.0 - cfg.holdout, cfg.seed)
        order = np.random.default_rng(cfg.seed).permutation(stream_idx)
    labels = data.histories(hist_idx) if len(hist_idx) else None
    n = len(order)
    prompts = [data.prompts[i] for i in order]
    Ys = Y[order]
    C = Router(specs).costs(data.prompts)
    Cs = C[order]
    last = min(cfg.last, n)
    progress(f"{len(data)} prompts, {m} models: stream of {n}, {len(held_idx)} held out; batches of {cfg.batch}, "
             f"lam {cfg.lam:g}")

    settings = ExploreSettings.model_validate({"seed": cfg.seed, **cfg.explore})
    encoder = get_encoder(cfg.encoder, cache_dir=cfg.cache_dir)
    batches = [np.arange(s, min(s + cfg.batch, n)) for s in range(0, n, cfg.batch)]
    picks: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {}

    # -- the explore router -------------------------------------------------------------------------
    router = Router(specs, encoder=encoder, head=cfg.head, lam=cfg.lam, explore=settings)
    if labels is not None:
        router.fit(labels)
    pick = np.zeros(n, dtype=int)
    greedy = np.zeros(n, dtype=int)      # what the router would have chosen without exploring
    explored = np.zeros(n, dtype=bool)
    route_s = observe_s = 0.0
    t_start = time.perf_counter()
    for b_i, rows in enumerate(batches):
        batch_prompts = [prompts[i] for i in rows]
        t0 = time.perf_counter()
        ds = router.route(batch_prompts)
        route_s += time.perf_counter() - t0
        pick[rows] = [names.index(d.model) for d in ds]
        explored[rows] = [d.explored for d in ds]
        # An explored decision's fallbacks are the greedy ranking without the chosen model: the first is greedy.
        greedy[rows] = [names.index(d.fallback[0] if d.explored else d.model) for d in ds]
        t0 = time.perf_counter()
        report = router.observe(batch_prompts, [d.model for d in ds], Ys[rows, pick[rows]])
        if not report.refitted:
            observe_s += time.perf_counter() - t0
        if report.refitted:
            progress(f"explore router: refit on {report.total} outcomes ({time.perf_counter() - t0:.1f} s)")
    stats = router.explore_stats()
    picks["explore router"] = pick
    info["explore router"] = {
        **stats, "seconds": time.perf_counter() - t_start,
        "route_ms_per_prompt": 1000 * route_s / n,
        "observe_ms_per_outcome_incremental": 1000 * observe_s / n,
        "observe_ms_per_outcome_with_refits": 1000 * (observe_s + stats["refit_s"]) / n,
        "settings": settings.model_dump()}

    # Frozen: one refit on every bandit outcome, then greedy on the held-out prompts.
    from preroll.route.explore import refit_now

    progress("explore router: final refit for the frozen evaluation")
    refit_now(router)
    held_prompts = [data.prompts[i] for i in held_idx]
    Yh, Ch = Y[held_idx], C[held_idx]
    frozen_pick = np.array([names.index(d.model) for d in router.route(held_prompts, explore=False, lam=cfg.lam)])
    tail_rows = np.arange(n - min(cfg.last, n), n)
    got = Ys[np.arange(n), pick]
    progress(f"explore router: quality {got.mean():.4f}; last {len(tail_rows)}: {got[tail_rows].mean():.4f} vs best "
             f"single there {Ys[tail_rows].mean(axis=0).max():.4f}; frozen on held-out "
             f"{Yh[np.arange(len(held_idx)), frozen_pick].mean():.4f} vs best single {Yh.mean(axis=0).max():.4f}; "
             f"explored {100 * stats['explored_share']:.1f}%")

    # -- fitted on the labels and never updated (how offline-trained routers are deployed) -------------
    labelled_frozen_pick = None
    if labels is not None:
        progress("router fitted on the labels, never updated")
        fixed = Router(specs, encoder=encoder, head=cfg.head, lam=cfg.lam).fit(labels)
        picks[LABELS_ONLY] = np.array([names.index(d.model) for d in fixed.route(prompts)])
        labelled_frozen_pick = np.array([names.index(d.model) for d in fixed.route(held_prompts)])

    # -- full information ---------------------------------------------------------------------------
    full_pick = None
    if cfg.full_info:
        progress("full-information router")
        due = settings.refit_due
        full = None if labels is None else Router(specs, encoder=encoder, head=cfg.head, lam=cfg.lam).fit(labels)
        fitted_at = 0
        full_pick = np.zeros(n, dtype=int)
        t_start = time.perf_counter()
        for rows in batches:
            if full is None:
                seen = Ys[:rows[0]]
                full_pick[rows] = int(np.argmax(seen.mean(axis=0) - cfg.lam * Cs[rows].mean(axis=0))) \
                    if len(seen) else int(np.argmin(Cs[rows].mean(axis=0)))
            else:
                full_pick[rows] = [names.index(d.model) for d in full.route([prompts[i] for i in rows])]
            done = int(rows[-1]) + 1
            if due(done, fitted_at):
                full = Router(specs, encoder=encoder, head=cfg.head, lam=cfg.lam).fit(
                    data.histories(np.concatenate([hist_idx, order[:done]])))
                fitted_at = done
        picks["full-information router"] = full_pick
        info["full-information router"] = {"seconds": time.perf_counter() - t_start}
        full_frozen = Router(specs, encoder=encoder, head=cfg.head, lam=cfg.lam).fit(
            data.histories(np.concatenate([hist_idx, order])))
        full_frozen_pick = np.array([names.index(d.model) for d in full_frozen.route(held_prompts)])

    # -- baselines ----------------------------------------------------------------------------------
    if cfg.baselines:
        features = cfg.baseline_encoder or baseline_features(cfg.encoder)
        info["baselines"] = {"features": features}
        progress(f"baselines on {features} features: epsilon-greedy, LinUCB, Thompson without context")
        F = _features(prompts, features, cfg.cache_dir)
        # With labels, every baseline starts from them too: each labelled score is an observed outcome.
        FL = _features([data.prompts[i] for i in hist_idx], features, cfg.cache_dir) if len(hist_idx) else None
        seen = np.isfinite(data.scores[hist_idx])
        for label, kind in ((f"epsilon-greedy (eps {cfg.epsilon:g})", "epsilon"),
                            (f"LinUCB (alpha {cfg.linucb_alpha:g})", "linucb")):
            bandit = LinearBandit(m, F.shape[1], kind=kind, alpha=cfg.linucb_alpha, epsilon=cfg.epsilon,
                                  ridge=cfg.ridge, seed=cfg.seed)
            if FL is not None:
                for j in range(m):
                    bandit.update(FL[seen[:, j]], np.full(int(seen[:, j].sum()), j), Y[hist_idx[seen[:, j]], j])
            p = np.zeros(n, dtype=int)
            for rows in batches:
                p[rows] = bandit.choose(F[rows], Cs[rows], cfg.lam)
                bandit.update(F[rows], p[rows], Ys[rows, p[rows]])
            picks[label] = p
        rng = np.random.default_rng(cfg.seed)
        ab = np.ones((m, 2))
        ab[:, 0] += np.where(seen, Y[hist_idx], 0.0).sum(axis=0)
        ab[:, 1] += np.where(seen, 1.0 - Y[hist_idx], 0.0).sum(axis=0)
        p = np.zeros(n, dtype=int)
        for rows in batches:
            theta = rng.beta(ab[:, 0], ab[:, 1], size=(len(rows), m))
            p[rows] = np.argmax(theta - cfg.lam * Cs[rows], axis=1)
            y = Ys[rows, p[rows]]
            np.add.at(ab[:, 0], p[rows], y)
            np.add.at(ab[:, 1], p[rows], 1 - y)
        picks["Thompson without context"] = p

    # -- metrics ------------------------------------------------------------------------------------
    r = np.arange(n)
    best = int(np.argmax(Ys.mean(axis=0) - cfg.lam * Cs.mean(axis=0)))
    tail = r[n - last:]
    best_tail = int(np.argmax(Ys[tail].mean(axis=0) - cfg.lam * Cs[tail].mean(axis=0)))
    picks[f"best single in hindsight ({names[best]})"] = np.full(n, best)
    rows_out = []
    curves = {}
    for label, p in picks.items():
        got = Ys[r, p]
        rows_out.append({"method": label, "quality": float(got.mean()), "cost": float(Cs[r, p].mean()),
                         "quality_last": float(got[tail].mean()),
                         "vs_best_single_last": float(got[tail].mean() - Ys[tail, best_tail].mean()),
                         "cost_last": float(Cs[tail, p[tail]].mean()),
                         "picks": {names[j]: int(c) for j, c in enumerate(np.bincount(p, minlength=m)) if c}})
        curves[label] = np.cumsum(Ys[r, best] - got)[::max(1, n // 400)].tolist()
    greedy_last = float(Ys[tail, greedy[tail]].mean())
    hr = np.arange(len(held_idx))
    best_held = int(np.argmax(Yh.mean(axis=0) - cfg.lam * Ch.mean(axis=0)))
    frozen = {"n": len(held_idx), "router": float(Yh[hr, frozen_pick].mean()),
              "router_cost": float(Ch[hr, frozen_pick].mean()),
              "best_single_in_hindsight": names[best_held], "best_single_quality": float(Yh[:, best_held].mean()),
              "best_on_stream": names[best], "best_on_stream_quality": float(Yh[:, best].mean()),
              "best_on_stream_cost": float(Ch[:, best].mean()),
              "vs_best_single": float(Yh[hr, frozen_pick].mean() - Yh[:, best_held].mean()),
              "picks": {names[j]: int(c) for j, c in enumerate(np.bincount(frozen_pick, minlength=m)) if c}}
    if full_pick is not None:
        frozen["full_information_router"] = float(Yh[hr, full_frozen_pick].mean())
    if labelled_frozen_pick is not None:
        frozen["labels_only_router"] = float(Yh[hr, labelled_frozen_pick].mean())
    return {"config": {**asdict(cfg), "encoder": cfg.encoder if isinstance(cfg.encoder, str) else
                       type(cfg.encoder).__name__},
            "models": names, "n_stream": n, "labels": label_info, "last": last, "best_single": names[best],
            "best_single_last": names[best_tail], "best_single_last_quality": float(Ys[tail, best_tail].mean()),
            "rows": rows_out, "frozen": frozen, "info": info,
            "regret_curves": {"step": max(1, n // 400), "curves": curves},
            "explored_last_share": float(explored[tail].mean()),
            # Where the explore router's points on the last requests go: its greedy choices' quality there
            # (what it had learnt) and what exploring cost on top (greedy minus chosen, per request).
            "greedy_quality_last": greedy_last,
            "explore_cost_last": greedy_last - float(Ys[tail, pick[tail]].mean())}


def plot_regret(result: dict[str, Any], path: str | Path) -> Path:
    """Cumulative score behind the best single model in hindsight, per method, against requests served."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = result["regret_curves"]["step"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, cur in result["regret_curves"]["curves"].items():
        if label.startswith("best single"):
            continue
        x = np.arange(len(cur)) * step + 1
        ax.plot(x, cur, lw=1.8 if label.startswith(("explore", "full")) else 1.1, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(result["n_stream"] - result["last"], color="grey", ls=":", lw=1)
    start = "an empty history" if not result.get("labels") else f"labels of {result['labels']['n']} prompts"
    ax.set_xlabel(f"requests served (bandit feedback from {start})")
    ax.set_ylabel("cumulative score behind the best single model")
    models = "LLMRouter nine models" if result["config"].get("root") is None else f"{len(result['models'])} models"
    ax.set_title(f"{models}, stream of {result['n_stream']}, lam {result['config']['lam']:g}, "
                 f"seed {result['config']['seed']}: regret vs best single in hindsight ({result['best_single']}); "
                 "below 0: ahead of it", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
