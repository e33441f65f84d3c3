"""Learning curves of the routing benchmarks: how the router's gain grows with its history.

Why. A router is only as good as the outcomes it has seen of each model. Someone deciding whether to label more
prompts per model (or whether a benchmark target is within reach of the data at hand) needs to know whether the
gain is still climbing at the history size they have, and roughly what the next doubling is worth. The curve
answers that with the benchmarks' own protocol: the evaluation prompts stay fixed, the router is refitted on
nested random subsets of its history (each smaller history is part of every larger one, so the fractions differ
in size only), and the same baselines are measured on the same subsets.

* A table of priced models (``table_curve``: LLMRouter's nine bundled ones, or a user's own with any number of
  models): per fold of the k-fold CV, the router's quality at ``lam = 0`` minus the best single model's (that
  model chosen on the same subset), in points; the kNN router beside it.
* The MMLU pair (``pair_curve``): per split, APGR of the router's gain rule and of the kNN router.

``per_doubling`` fits the mean over folds against ``log2`` of the history size (least squares); its slope is
what a doubling of the history has been worth, and its line is a rough extrapolation, nothing more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from preroll.bench import route_baselines as baselines
from preroll.bench import route_metrics as metrics
from preroll.outputs import save_figure


@dataclass(frozen=True)
class CurvePoint:
    """One refit: the router and the kNN router on one fold (or split) with a share of its history."""

    fold: int
    fraction: float
    n_history: int
    router: float          # a table: gain over the best single model at lam = 0, points; pair: APGR
    knn: float             # the same for the kNN router (k by inner CV)
    fit_s: float


@dataclass(frozen=True)
class CurveTrend:
    """Least-squares line of the per-fraction means against log2(history size)."""

    per_doubling: float    # what one doubling of the history added, on average
    intercept: float       # the line's value at a history of one prompt (log2 n = 0)

    def at(self, n_history: float) -> float:
        return float(self.intercept + self.per_doubling * np.log2(n_history))


def check_fractions(fractions: Sequence[float]) -> list[float]:
    """Sorted, distinct shares of the history in (0, 1]; a ``ValueError`` names a bad one."""
    out = sorted({float(f) for f in fractions})
    if not out:
        raise ValueError("give at least one history fraction")
    bad = [f for f in out if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"history fractions must lie in (0, 1]; got {bad[0]:g}")
    return out


def nested_subsets(rows: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Row subsets of ``rows``, one per fraction, each a prefix of the same random order (so they nest)."""
    order = np.random.default_rng(seed).permutation(np.asarray(rows))
    return [np.sort(order[:max(1, int(round(f * len(order))))]) for f in fractions]


def table_curve(cfg, fractions: Sequence[float],
                     progress: Callable[[str], None] = lambda s: None) -> list[CurvePoint]:
    """The table benchmark's folds (``cfg``: a ``MultiBenchConfig``; its ``root`` is the table, LLMRouter's nine
    when None), refitted on shares of each history."""
    import time

    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route import random_subset
    from preroll.bench.route_multi import _utility_picks, fold_indices
    from preroll.encoders import get_encoder
    from preroll.route import Router

    fractions = check_fractions(fractions)
    data = load_llmrouter(cfg.root)
    data = random_subset(data, cfg.max_prompts, cfg.seed)
    specs = data.model_specs(cfg.output_tokens)
    Y = data.scores
    tests = fold_indices(data.prompts, cfg.folds, cfg.seed)
    points = []
    for f, te in enumerate(tests[:cfg.max_folds] if cfg.max_folds else tests):
        tr_all = np.setdiff1d(np.arange(len(data)), te)
        p_te = [data.prompts[i] for i in te]
        for frac, tr in zip(fractions, nested_subsets(tr_all, fractions, cfg.seed * 1000 + f)):
            progress(f"fold {f}: router on {len(tr)} of {len(tr_all)} history prompts ({frac:g})")
            router = Router(models=specs, encoder=get_encoder(cfg.encoder, cache_dir=cfg.cache_dir), head="auto",
                            rule="utility", lam=0.0)
            t0 = time.perf_counter()
            router.fit(data.histories(tr))
            fit_s = time.perf_counter() - t0
            X_te = router.embed(p_te)
            X_tr = router.embed([data.prompts[i] for i in tr])
            C = router.costs(p_te)
            Y_tr, Y_te = Y[tr], Y[te]
            best = int(np.nanargmax(np.nanmean(Y_tr, axis=0)))
            best_q = float(np.nanmean(Y_te[:, best]))
            rows = np.arange(len(te))

            def gain(P):
                pick = _utility_picks(np.clip(P, 0, 1), C, [0.0])[0]
                return 100 * (float(np.nanmean(Y_te[rows, pick])) - best_q)

            P = router.predict_beta_embeddings(X_te).p_success
            k = baselines.select_knn_k_multi(X_tr, Y_tr, seed=cfg.seed)
            Pk = baselines.knn_multi_proba(X_tr, Y_tr, X_te, k)
            points.append(CurvePoint(fold=f, fraction=frac, n_history=int(len(tr)), router=gain(P), knn=gain(Pk),
                                     fit_s=fit_s))
    return points


def pair_curve(cfg, fractions: Sequence[float],
               progress: Callable[[str], None] = lambda s: None) -> list[CurvePoint]:
    """The MMLU pair's splits (``cfg``: a ``RouteBenchConfig``), the router refitted on shares of each history."""
    import time

    from preroll.bench.mmlu import load_mmlu
    from preroll.bench.route import random_subset, resolve_encoder, split_prompts
    from preroll.encoders.memo import MemoEncoder
    from preroll.route import rules
    from preroll.route.router import Router

    fractions = check_fractions(fractions)
    data = load_mmlu(cfg.root)
    data = random_subset(data, cfg.max_prompts, cfg.seed)
    names = [m.name for m in cfg.models]
    Y = data.correct[:, [data.models.index(n) for n in names]].astype(float)
    encoder = MemoEncoder(resolve_encoder(cfg.encoder, cfg.cache_dir))
    points = []
    for r in range(cfg.repeats):
        seed = cfg.seed + r
        hist, ev = split_prompts(data.prompts, cfg.history_frac, seed)
        p_ev = [data.prompts[i] for i in ev]
        for frac, h in zip(fractions, nested_subsets(hist, fractions, seed * 1000 + r)):
            progress(f"split {seed}: router on {len(h)} of {len(hist)} history prompts ({frac:g})")
            router = Router(models=cfg.models, encoder=encoder, head=cfg.head, rule="gain")
            t0 = time.perf_counter()
            router.fit({n: v for n, v in data.subset(h).histories().items() if n in names})
            fit_s = time.perf_counter() - t0
            X_e = router.embed(p_ev)
            X_h = router.embed([data.prompts[i] for i in h])
            C = router.costs(p_ev)
            strong = int(rules.strong_index(C.mean(axis=0, keepdims=True))[0])
            weak = 1 - strong
            w, s = Y[ev, weak], Y[ev, strong]
            P = router.predict_proba_embeddings(X_e)
            k = baselines.select_knn_k(X_h, Y[h], ks=cfg.knn_ks, seed=seed, strong=strong, weak=weak)
            Pk = baselines.knn_proba(X_h, Y[h], X_e, k)
            points.append(CurvePoint(
                fold=r, fraction=frac, n_history=int(len(h)), fit_s=fit_s,
                router=metrics.apgr(metrics.routing_curve(P[:, strong] - P[:, weak], w, s)),
                knn=metrics.apgr(metrics.routing_curve(Pk[:, strong] - Pk[:, weak], w, s))))
    return points


def summarise(points: Sequence[CurvePoint]) -> list[dict[str, Any]]:
    """Per fraction: mean history size, the router's and the kNN router's mean, std and per-fold values."""
    out = []
    for frac in sorted({p.fraction for p in points}):
        at = sorted((p for p in points if p.fraction == frac), key=lambda p: p.fold)
        r = np.array([p.router for p in at])
        k = np.array([p.knn for p in at])
        out.append({"fraction": frac, "n_history": float(np.mean([p.n_history for p in at])),
                    "router": float(r.mean()), "router_std": float(r.std()), "router_per_fold": r.tolist(),
                    "knn": float(k.mean()), "knn_std": float(k.std()), "knn_per_fold": k.tolist(),
                    "fit_s": float(np.mean([p.fit_s for p in at]))})
    return out


def per_doubling(points: Sequence[CurvePoint], key: str = "router") -> CurveTrend | None:
    """The trend of the per-fraction means against log2(history size); None with fewer than two sizes."""
    rows = summarise(points)
    if len(rows) < 2:
        return None
    x = np.log2([r["n_history"] for r in rows])
    slope, intercept = np.polyfit(x, [r[key] for r in rows], 1)
    return CurveTrend(per_doubling=float(slope), intercept=float(intercept))


def curve_result(points: Sequence[CurvePoint], metric: str, config: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready record of a curve: config, every point, the summary and both trends."""
    trends = {k: per_doubling(points, k) for k in ("router", "knn")}
    return {"config": config, "metric": metric, "points": [asdict(p) for p in points],
            "summary": summarise(points),
            "trend": {k: None if t is None else asdict(t) for k, t in trends.items()}}


def plot_curve(result: dict[str, Any], path: str | Path) -> Path:
    """Router and kNN router against history size (log scale): per-fold points, the means and the router's trend."""
    from preroll._optional import require

    require("matplotlib", what="drawing a plot").use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    pts = result["points"]
    for key, colour, label in (("router", "C0", "router (joint)"), ("knn", "C1", "kNN router")):
        ax.scatter([p["n_history"] for p in pts], [p[key] for p in pts], s=12, color=colour, alpha=0.4)
        rows = result["summary"]
        ax.plot([r["n_history"] for r in rows], [r[key] for r in rows], color=colour, marker="o", label=label)
    trend = result["trend"]["router"]
    if trend is not None:
        n = np.array([min(p["n_history"] for p in pts), 2 * max(p["n_history"] for p in pts)], dtype=float)
        ax.plot(n, trend["intercept"] + trend["per_doubling"] * np.log2(n), color="C0", ls=":", lw=1,
                label=f"router trend: {trend['per_doubling']:+.3g} per doubling")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("history prompts per model (log scale)")
    ax.set_ylabel(result["metric"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
