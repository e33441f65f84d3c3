"""The N-model routing benchmark: k-fold CV on a table of priced models (any number: LLMRouter's nine bundled
ones, or a user's own table from ``preroll bench route --data DIR``).

Protocol. Prompts are split into ``folds`` folds (identical texts never
straddle two). On each fold the router and every baseline see only the other
folds' scores; all metrics are on the held-out fold, and every router is a
score matrix swept by the same utility rule (``argmax score - lam * cost``)
over a grid of ``lam`` that spans most-likely to cheapest:

* quality at ``lam = 0`` (mean graded score of the chosen models) against the
  best single model (chosen on the training folds) and the oracle;
* the cost to match the best single model's quality: the cheapest point of
  the router's non-decreasing convex hull (a random mix of two operating
  points is always available) whose quality reaches it, as a fraction of
  the best single model's cost;
* AIQ: area under that hull with cost normalised between the cheapest and
  the dearest single model (RouterBench);
* fit time per fold and decision time per prompt (from ready embeddings);
* per-model ECE of the router's calibrated probabilities.

Baselines on the same embeddings and folds: kNN router (k by inner CV),
multi-output MLP, matrix factorisation (EmbedLLM-style), per-cluster best
model (KMeans on the embeddings, clusters by inner CV), independent
per-model heads (the router's previous default), random, best single.

Topic structure: prompts are grouped into ``topics`` KMeans clusters of the
embeddings of *all* prompts (labels only, no scores); per topic, the router is
compared with the topic's best model on the training folds, pooled over the
held-out predictions of all folds, with the paired standard error.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from preroll.bench import route_baselines as baselines
from preroll.bench import route_metrics as metrics
from preroll.bench.route import mean_std_by_row, random_subset
from preroll.outputs import save_figure


@dataclass
class MultiBenchConfig:
    root: str | None = None
    folds: int = 5
    seed: int = 0
    max_prompts: int | None = None
    encoder: Any = "minilm+lexical+stats"
    cache_dir: str | None = None
    output_tokens: int = 256               # expected completion tokens priced per call
    confidence: float = 1.0                # z of the 'confident' rule
    topics: int = 8
    independent: bool = True               # also run the per-model heads ("ensemble")
    mlp: bool = True
    latency_prompts: int = 200
    max_folds: int | None = None           # run only the first folds of the split (a quicker, noisier look)
    grid: int = 201


@dataclass
class MethodFold:
    name: str
    quality_at_zero: float
    aiq: float
    cost_to_match: float | None            # fraction of the best single model's mean cost (None: never matches)
    mean_cost_at_zero: float
    fit_s: float | None = None
    decide_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _lam_grid(P: np.ndarray, C: np.ndarray, n: int) -> np.ndarray:
    from preroll.route import rules

    return rules.default_grid("utility", P, C, n=n)


def _sweep(picks: list[np.ndarray], Y: np.ndarray, C: np.ndarray):
    rows = np.arange(len(Y))
    cost = np.array([C[rows, p].mean() for p in picks])
    qual = np.array([np.nanmean(Y[rows, p]) for p in picks])
    return cost, qual


def _cost_to_match(cost, qual, target: float, best_cost: float) -> float | None:
    """Cheapest cost on the non-decreasing hull reaching ``target`` quality, as a fraction of ``best_cost``."""
    x, y = metrics.upper_hull(cost, qual)
    hit = np.flatnonzero(y >= target - 1e-12)
    if hit.size == 0:
        return None
    i = hit[0]
    if i == 0:
        c = x[0]
    else:
        c = x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1])
    return float(c / best_cost)


def _method(name, picks, Y, C, single_cost, best_q, best_cost, **kw) -> tuple[MethodFold, dict]:
    cost, qual = _sweep(picks, Y, C)
    cheapest, dearest = float(single_cost.min()), float(single_cost.max())
    row = MethodFold(name=name, quality_at_zero=float(qual[0]),
                     aiq=metrics.aiq(cost, qual, cheapest=cheapest, dearest=dearest),
                     cost_to_match=_cost_to_match(cost, qual, best_q, best_cost),
                     mean_cost_at_zero=float(cost[0]), **kw)
    return row, {"cost": cost.tolist(), "quality": qual.tolist()}


def _utility_picks(P, C, grid):
    from preroll.route import rules

    return [rules.choose("utility", P, C, float(g)) for g in grid]


def fold_indices(prompts, folds: int, seed: int) -> list[np.ndarray]:
    """Test-row indices per fold; identical texts share a fold."""
    uniq = list(dict.fromkeys(prompts))
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[u]: i % folds for i, u in enumerate(order)}
    f = np.array([fold_of[p] for p in prompts])
    return [np.flatnonzero(f == i) for i in range(folds)]


def run_multi_bench(cfg: MultiBenchConfig, progress: Callable[[str], None] = lambda s: None,
                    checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the folds; ``checkpoint`` receives the result so far after each fold (e.g. to save it)."""
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.encoders import get_encoder
    from preroll.route import Router
    from preroll.route.joint import expected_calibration_error

    data = load_llmrouter(cfg.root)
    data = random_subset(data, cfg.max_prompts, cfg.seed)
    specs = data.model_specs(cfg.output_tokens)
    names = data.models
    progress(f"{len(data)} prompts, {len(names)} models, {cfg.folds}-fold CV")
    Y_all = data.scores
    tests = fold_indices(data.prompts, cfg.folds, cfg.seed)

    folds_out, curves0 = [], None
    pooled_pick = np.full(len(data), -1)
    pooled_conf = np.full(len(data), -1)
    pooled_best = np.full(len(data), -1)
    pooled_P = np.full(Y_all.shape, np.nan)
    topic_labels = None
    latency = None
    run_tests = tests[:cfg.max_folds] if cfg.max_folds else tests
    result: dict[str, Any] = {}
    for f, te in enumerate(run_tests):
        tr = np.setdiff1d(np.arange(len(data)), te)
        p_tr = [data.prompts[i] for i in tr]
        p_te = [data.prompts[i] for i in te]
        Y_tr, Y_te = Y_all[tr], Y_all[te]
        encoder = get_encoder(cfg.encoder, cache_dir=cfg.cache_dir)
        router = Router(models=specs, encoder=encoder, head="joint", rule="utility", lam=0.0,
                        confidence=cfg.confidence)
        progress(f"fold {f}: fitting the joint router on {len(tr)} prompts")
        t0 = time.perf_counter()
        router.fit(data.histories(tr), show_progress=True)
        fit_router = time.perf_counter() - t0
        X_tr = router.embed(p_tr)
        X_te = router.embed(p_te)
        C = router.costs(p_te)
        single_cost = C.mean(axis=0)
        best = int(np.nanargmax(np.nanmean(Y_tr, axis=0)))
        best_q, best_cost = float(np.nanmean(Y_te[:, best])), float(single_cost[best])
        pooled_best[te] = best

        t0 = time.perf_counter()
        belief = router.predict_beta_embeddings(X_te)
        P = np.clip(belief.p_success, 0, 1)
        router.rank_models(belief, C, "utility", 0.0)
        decide_ms = (time.perf_counter() - t0) * 1000 / len(te)
        grid = _lam_grid(P, C, cfg.grid)
        rows, curves = [], {}

        def add(row_curve):
            row, cur = row_curve
            rows.append(row)
            curves[row.name] = cur

        ece = {n: expected_calibration_error(P[:, j], Y_te[:, j]) for j, n in enumerate(names)}
        picks = _utility_picks(P, C, grid)
        add(_method("router (joint), utility", picks, Y_te, C, single_cost, best_q, best_cost, fit_s=fit_router,
                    decide_ms=decide_ms, extra={"ece": ece, "k": int(router.joint_.k_),
                                                "parts": router.joint_.part_names_,
                                                "weights": router.joint_.weights_.tolist()}))
        pooled_pick[te] = picks[0]
        pooled_P[te] = P
        conf_picks = [router.rank_models(belief, C, "confident", float(g))[:, 0] for g in grid]
        pooled_conf[te] = conf_picks[0]
        add(_method(f"router (joint), confident z={cfg.confidence:g}", conf_picks, Y_te, C, single_cost, best_q,
                    best_cost))

        if cfg.independent:
            progress(f"fold {f}: independent per-model heads")
            ind = Router(models=specs, encoder=encoder, head="ensemble", rule="utility", lam=0.0)
            t0 = time.perf_counter()
            ind.fit(data.histories(tr))
            fit_s = time.perf_counter() - t0
            Pi = ind.predict_proba_embeddings(X_te)
            add(_method("independent heads (ensemble, the default)", _utility_picks(Pi, C, grid), Y_te, C, single_cost,
                        best_q, best_cost, fit_s=fit_s))

        progress(f"fold {f}: baselines")
        t0 = time.perf_counter()
        k = baselines.select_knn_k_multi(X_tr, Y_tr, seed=cfg.seed)
        Pk = baselines.knn_multi_proba(X_tr, Y_tr, X_te, k)
        add(_method("kNN router (k by CV)", _utility_picks(Pk, C, grid), Y_te, C, single_cost, best_q, best_cost,
                    fit_s=time.perf_counter() - t0, extra={"k": k}))
        t0 = time.perf_counter()
        nc = baselines.select_clusters(X_tr, Y_tr, seed=cfg.seed)
        Pc = baselines.cluster_best_proba(X_tr, Y_tr, X_te, nc, seed=cfg.seed)
        add(_method("per-cluster best (KMeans, K by CV)", _utility_picks(Pc, C, grid), Y_te, C, single_cost,
                    best_q, best_cost, fit_s=time.perf_counter() - t0, extra={"clusters": nc}))
        t0 = time.perf_counter()
        Pf = baselines.mf_proba(X_tr, Y_tr, X_te, seed=cfg.seed)
        add(_method("matrix factorisation", _utility_picks(Pf, C, grid), Y_te, C, single_cost, best_q, best_cost,
                    fit_s=time.perf_counter() - t0))
        if cfg.mlp:
            t0 = time.perf_counter()
            Pm = baselines.mlp_multi_proba(X_tr, Y_tr, X_te, seed=cfg.seed)
            add(_method("MLP (multi-output)", _utility_picks(Pm, C, grid), Y_te, C, single_cost, best_q, best_cost,
                        fit_s=time.perf_counter() - t0))
        add(_method("oracle", _utility_picks(np.nan_to_num(Y_te), C, grid), Y_te, C, single_cost, best_q,
                    best_cost))
        rng = np.random.default_rng(cfg.seed + f)
        rand = rng.integers(0, len(names), size=len(te))
        add(_method("random", [rand], Y_te, C, single_cost, best_q, best_cost))
        add(_method("best single (training folds)", [np.full(len(te), best)], Y_te, C, single_cost, best_q,
                    best_cost, extra={"model": names[best]}))
        singles = {n: {"quality": float(np.nanmean(Y_te[:, j])), "cost": float(single_cost[j])}
                   for j, n in enumerate(names)}
        folds_out.append({"fold": f, "n_train": int(len(tr)), "n_test": int(len(te)), "best_single": names[best],
                          "best_single_quality": best_q, "oracle_quality": float(np.nanmax(Y_te, axis=1).mean()),
                          "rows": [asdict(r) for r in rows], "singles": singles})
        if f == 0:
            curves0 = curves
            if cfg.latency_prompts:
                progress(f"fold 0: route() latency, one unseen prompt per call ({cfg.latency_prompts} prompts)")
                latency = route_latency(router, p_te[:cfg.latency_prompts])

        if topic_labels is None:  # topics from the embeddings of all prompts (no scores), fixed for the run
            from sklearn.cluster import KMeans

            topic_labels = KMeans(cfg.topics, n_init=5, random_state=cfg.seed).fit_predict(router.embed(data.prompts))
        topics = topic_table(topic_labels, Y_all, run_tests[:f + 1], pooled_pick, pooled_conf, pooled_best, names,
                             cfg)
        cfg_out = asdict(cfg)
        cfg_out["encoder"] = cfg.encoder if isinstance(cfg.encoder, str) else type(cfg.encoder).__name__
        result = {"config": cfg_out, "n_prompts": len(data), "models": names,
                  "specs": [s.model_dump() for s in specs], "summary": _summarise(folds_out), "folds": folds_out,
                  "topics": topics, "latency_ms": latency, "curves_fold0": curves0}
        if checkpoint is not None:
            checkpoint(result)
    return result


def route_latency(router, prompts: list[str], warm_up: int = 0) -> dict[str, float]:
    """Wall time of ``router.route([p])`` per prompt on texts the encoder has not seen (a suffix makes them new).

    The first ``warm_up`` calls are timed but left out of the percentiles (first-call allocations, lazy imports).
    """
    stamp = f"{time.time_ns()}"
    times = []
    for i, p in enumerate(prompts):
        q = f"{p}\n[{stamp}-{i}]"
        t0 = time.perf_counter()
        router.route([q])
        times.append((time.perf_counter() - t0) * 1000)
    return latency_summary(times[warm_up:])


def latency_summary(times_ms) -> dict[str, float]:
    t = np.asarray(times_ms, dtype=float)
    return {"n": int(len(t)), "p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)),
            "p99": float(np.percentile(t, 99)), "mean": float(t.mean())}


def topic_table(labels, Y, tests, router_pick, conf_pick, best_pick, names, cfg) -> dict[str, Any]:
    """Per topic (``labels``: KMeans cluster of every prompt's embedding): router vs the topic's best model on the
    training folds, over the held-out rows of the folds in ``tests``.

    A topic none of whose prompts is held out yet (a small table, or the first of several folds) has nothing to
    compare: it gets no row and is listed in ``no_held_out``. A mean over rows none of which has a score is NaN.
    """
    done = np.concatenate(tests)
    topic_pick = np.full(len(Y), -1)
    for te in tests:
        tr = np.setdiff1d(np.arange(len(Y)), te)
        for t in range(cfg.topics):
            src = tr[labels[tr] == t]
            best_t = int(np.nanargmax(np.nanmean(Y[src], axis=0))) if src.size else int(best_pick[te[0]])
            topic_pick[te[labels[te] == t]] = best_t
    Y, labels, topic_pick = Y[done], labels[done], topic_pick[done]
    rows = np.arange(len(Y))
    got = {"router": Y[rows, router_pick[done]], "confident": Y[rows, conf_pick[done]],
           "topic_best": Y[rows, topic_pick], "best_single": Y[rows, best_pick[done]],
           "oracle": np.nanmax(Y, axis=1)}
    out = []
    empty = [t for t in range(cfg.topics) if not np.any(labels == t)]
    for t in [t for t in range(cfg.topics) if t not in empty] + ["all"]:
        sel = labels == t if t != "all" else np.ones(len(Y), bool)
        d = got["router"][sel] - got["topic_best"][sel]
        dc = got["confident"][sel] - got["topic_best"][sel]
        top = np.bincount(topic_pick[sel], minlength=len(names)).argmax()
        out.append({"topic": t, "n": int(sel.sum()),
                    **{k: _scored_mean(v[sel]) for k, v in got.items()},
                    "router_minus_topic_best": _scored_mean(d), "se": _scored_se(d, int(sel.sum())),
                    "confident_minus_topic_best": _scored_mean(dc), "se_confident": _scored_se(dc, int(sel.sum())),
                    "topic_best_model": names[int(top)]})
    return {"n_topics": cfg.topics, "rows": out, "no_held_out": empty}


def _scored_mean(values: np.ndarray) -> float:
    """Mean over the rows that have a score (NaN: a model without a score on that prompt); NaN when none has."""
    scored = values[~np.isnan(values)]
    return float(scored.mean()) if scored.size else math.nan


def _scored_se(values: np.ndarray, n: int) -> float:
    """Standard error of :func:`_scored_mean` as the table has always reported it (spread over the scored rows,
    divided by the root of the topic's rows); NaN when no row has a score."""
    scored = values[~np.isnan(values)]
    return float(scored.std() / math.sqrt(max(n, 1))) if scored.size else math.nan


_KEYS = ("quality_at_zero", "aiq", "cost_to_match", "mean_cost_at_zero", "fit_s", "decide_ms")


def _summarise(folds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = mean_std_by_row(folds, _KEYS)
    for i, entry in enumerate(out):
        entry["vs_best_single"] = [f["rows"][i]["quality_at_zero"] - f["best_single_quality"] for f in folds]
    return out


def plot_multi_frontier(result: dict[str, Any], path: str | Path) -> Path:
    """Quality against mean cost on fold 0: every single model as a point, each router's hull."""
    from preroll._optional import require

    require("matplotlib", what="drawing a plot").use("Agg")
    import matplotlib.pyplot as plt

    fold = result["folds"][0]
    fig, ax = plt.subplots(figsize=(9, 6))
    for name, cur in result["curves_fold0"].items():
        if len(cur["cost"]) < 2:
            continue
        x, y = metrics.upper_hull(cur["cost"], cur["quality"])
        ax.plot(x, y, lw=1.6 if name.startswith("router") else 1.0, label=name,
                ls="-" if name.startswith("router") or name == "oracle" else "--")
    for n, s in fold["singles"].items():
        ax.scatter([s["cost"]], [s["quality"]], s=30, color="black", zorder=5)
        ax.annotate(n, (s["cost"], s["quality"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(fold["best_single_quality"], color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per prompt (example prices, log scale)")
    ax.set_ylabel("mean graded score on held-out prompts")
    models = "LLMRouter nine models" if result["config"].get("root") is None else f"{len(result['models'])} models"
    ax.set_title(f"{models}, fold 0 ({fold['n_train']} train / {fold['n_test']} test): "
                 "non-decreasing hull of each router's utility sweep", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
