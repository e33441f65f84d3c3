"""The table routing benchmark under shift: every protocol of :mod:`preroll.bench.route_shift`, several heads.

The table is LLMRouter's nine bundled models or a user's own (``preroll bench route --data DIR``, any number of
priced models, :func:`preroll.bench.llmrouter.load_llmrouter`).

Per fold the router is fitted twice (``head="joint"`` and ``head="ensemble"``);
the ``average`` head's belief is their moment-matched mixture
(:func:`preroll.route.depth.average_beliefs`, what ``head="average"`` does).
Each head is swept with the utility rule, and with the out-of-depth guard
(:class:`preroll.route.depth.DepthGuard`) at each ``guard_quantiles`` (``1``:
the ``confident`` rule on every prompt). The shrink recalibration (far
queries' probabilities pulled halfway to the model's base rate) is measured by
its ECE. The summary ranks every variant by its worst gain over protocols and
seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from preroll.bench import route_shift as rs


@dataclass
class ShiftBenchConfig:
    root: str | None = None
    folds: int = 5
    seeds: tuple[int, ...] = (0,)
    protocols: tuple[str, ...] = rs.PROTOCOLS
    max_prompts: int | None = None
    encoder: Any = "minilm+lexical+stats"
    cluster_encoder: Any = "minilm"        # embeddings the protocols' clusters are drawn on (texts only)
    cache_dir: str | None = None
    output_tokens: int = 256
    heads: tuple[str, ...] = ("joint", "ensemble")
    alpha: float = 1.0                     # Dirichlet concentration of the reweighted folds' cluster mix
    reweight_k: int = 10
    grid: int = 101
    guard_quantiles: tuple[float, ...] = (0.1, 0.25, 1.0)
    guard_z: float = 1.0
    shrink: float = 0.5                    # far queries' p pulled this share of the way to the base rate
    max_folds: int | None = None
    subset_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Fold:
    """What one fold leaves for the pooled sweep."""

    beliefs: dict[str, Any]
    C: np.ndarray
    Y: np.ndarray
    best: int
    base_rate: np.ndarray
    mean_cost: np.ndarray
    sim: np.ndarray
    thresholds: dict[float, float]
    graded: np.ndarray
    rows: np.ndarray


def _fit_fold(data, specs, fold: rs.ShiftFold, cfg: ShiftBenchConfig, encoder) -> tuple[_Fold, dict[str, float]]:
    from preroll.route import Router
    from preroll.route.depth import (
        DepthGuard,
        average_beliefs,
        far_threshold,
        max_similarity,
    )

    tr, te = fold.train, fold.test
    p_tr = [data.prompts[i] for i in tr]
    p_te = [data.prompts[i] for i in te]
    fitted, beliefs, times = {}, {}, {}
    for head in cfg.heads:
        t0 = time.perf_counter()
        r = Router(models=specs, encoder=encoder, head=head, rule="utility", lam=0.0, guard=False)
        r.fit(data.histories(tr))
        times[head] = time.perf_counter() - t0
        fitted[head] = r
    first = fitted[cfg.heads[0]]
    X_tr, X_te = first.embed(p_tr), first.embed(p_te)
    for head, r in fitted.items():
        beliefs[head] = r.predict_beta_embeddings(X_te)
    if "joint" in beliefs and "ensemble" in beliefs:
        beliefs["average"] = average_beliefs(beliefs["joint"], beliefs["ensemble"])
    sim = max_similarity(X_te, X_tr)
    thr = {q: far_threshold(X_tr, DepthGuard(far_quantile=q)) for q in cfg.guard_quantiles}
    Y_tr = data.scores[tr]
    return _Fold(beliefs=beliefs, C=first.costs(p_te), Y=data.scores[te], best=int(np.nanargmax(np.nanmean(Y_tr, 0))),
                 base_rate=first.base_rate_, mean_cost=first.history_mean_cost_, sim=sim, thresholds=thr,
                 graded=rs.graded_rows(data.scores[te]), rows=te), times


def _picks(fold: _Fold, head: str, grid: np.ndarray, q: float | None, z: float, shrink: float | None = None):
    from preroll.route import rules

    b = fold.beliefs[head]
    P = np.clip(b.p_success, 0, 1)
    far = fold.sim < fold.thresholds[q] if q is not None and q < 1.0 else np.ones(len(P), bool)
    if shrink is not None:
        P = np.where(far[:, None], fold.base_rate + (1 - shrink) * (P - fold.base_rate), P)
    out = []
    for lam in grid:
        plain = rules.choose("utility", P, fold.C, float(lam))
        if q is None:
            out.append(plain)
            continue
        d = rules.default_model(fold.base_rate, fold.mean_cost, float(lam))
        conf = rules.rank_confident(P, b.std, fold.C, float(lam), d, z=z)[:, 0]
        out.append(np.where(far, conf, plain))
    return out


def _evaluate(folds: list[_Fold], cfg: ShiftBenchConfig, names: list[str]) -> dict[str, Any]:
    from preroll.route import rules

    heads = list(folds[0].beliefs)
    P0 = np.concatenate([np.clip(f.beliefs[heads[0]].p_success, 0, 1) for f in folds])
    C = np.concatenate([f.C for f in folds])
    Y = np.concatenate([f.Y for f in folds])
    best = np.concatenate([np.full(len(f.Y), f.best) for f in folds])
    graded = np.concatenate([f.graded for f in folds])
    grid = rules.default_grid("utility", P0, C, n=cfg.grid)
    methods: dict[str, Any] = {}
    variants = [(h, None, None) for h in heads] + [(h, q, None) for h in heads for q in cfg.guard_quantiles]
    for head, q, shrink in variants:
        name = head if q is None else (f"{head}+confident" if q >= 1.0 else f"{head}+guard{q:g}")
        per_fold = [_picks(f, head, grid, q, cfg.guard_z, shrink) for f in folds]
        picks = [np.concatenate([pf[i] for pf in per_fold]) for i in range(len(grid))]
        m = rs.pooled_metrics(picks, Y, C, best, graded)
        m.pop("curve")
        m["fold_gains"] = [float(np.nanmean(f.Y[np.arange(len(f.Y)), pf[0]] - f.Y[:, f.best]))
                           for f, pf in zip(folds, per_fold)]
        if q is not None and q < 1.0:
            far = np.concatenate([f.sim < f.thresholds[q] for f in folds])
            m["far_share"] = float(far.mean())
        methods[name] = m
    ece = {}
    far = np.concatenate([f.sim < f.thresholds[min(cfg.guard_quantiles)] for f in folds])
    for head in heads:
        P = np.concatenate([np.clip(f.beliefs[head].p_success, 0, 1) for f in folds])
        base = np.concatenate([np.broadcast_to(f.base_rate, f.Y.shape) for f in folds])
        Ps = np.where(far[:, None], base + (1 - cfg.shrink) * (P - base), P)
        ece[head] = {"per_model": {n: rs.expected_calibration_error(P[:, j], Y[:, j]) for j, n in enumerate(names)},
                     "far_rows": {n: rs.expected_calibration_error(P[far, j], Y[far, j]) for j, n in enumerate(names)},
                     "far_rows_shrunk": {n: rs.expected_calibration_error(Ps[far, j], Y[far, j])
                                         for j, n in enumerate(names)},
                     "far_n": int(far.sum())}
    oracle = float(np.nanmean(np.nanmax(Y, axis=1)) - np.nanmean(Y[np.arange(len(Y)), best]))
    return {"n_test_rows": len(Y), "methods": methods, "ece": ece, "oracle_gain": oracle}


def run_shift_bench(cfg: ShiftBenchConfig, progress: Callable[[str], None] = lambda s: None,
                    checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every (seed, protocol): fit per fold, pool the held-out rows, measure every variant."""
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route import random_subset
    from preroll.encoders import get_encoder

    data = random_subset(load_llmrouter(cfg.root), cfg.max_prompts, cfg.subset_seed)
    specs = data.model_specs(cfg.output_tokens)
    names = data.models
    X_text = rs.text_embeddings(data.prompts, cfg.cluster_encoder, cfg.cache_dir)
    encoder = get_encoder(cfg.encoder, cache_dir=cfg.cache_dir)
    progress(f"{len(data)} prompts, {len(names)} models; protocols {', '.join(cfg.protocols)}; seeds "
             f"{', '.join(map(str, cfg.seeds))}")
    runs = []
    result: dict[str, Any] = {}
    for seed in cfg.seeds:
        for proto in cfg.protocols:
            folds = rs.build_folds(proto, data.prompts, X_text, cfg.folds, seed, alpha=cfg.alpha,
                                   reweight_k=cfg.reweight_k)
            if cfg.max_folds:
                folds = folds[:cfg.max_folds]
            done, fit_s = [], []
            for fold in folds:
                progress(f"seed {seed}, {proto}, fold {fold.fold}: {len(fold.train)} history / {len(fold.test)} test")
                f, times = _fit_fold(data, specs, fold, cfg, encoder)
                done.append(f)
                fit_s.append(times)
            ev = _evaluate(done, cfg, names)
            ev.update({"protocol": proto, "seed": seed, "fit_s": fit_s,
                       "folds": [{"fold": fd.fold, "n_train": len(fd.train), "n_test": len(fd.test),
                                  **fd.info} for fd in folds]})
            runs.append(ev)
            cfg_out = asdict(cfg)
            for k in ("encoder", "cluster_encoder"):
                cfg_out[k] = cfg_out[k] if isinstance(cfg_out[k], str) else type(getattr(cfg, k)).__name__
            result = {"config": cfg_out, "n_prompts": len(data), "models": names, "runs": runs,
                      "summary": summarise(runs)}
            if checkpoint is not None:
                checkpoint(result)
    return result


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: gain and cost to match per (protocol, seed), the worst of each, sorted by worst gain."""
    names = list(runs[0]["methods"])
    out = []
    for n in names:
        gains = {f"{r['protocol']}/s{r['seed']}": r["methods"][n]["gain"] for r in runs}
        ctm = {f"{r['protocol']}/s{r['seed']}": r["methods"][n]["cost_to_match"] for r in runs}
        graded = [r["methods"][n]["graded_gain"] for r in runs if r["methods"][n]["graded_gain"] is not None]
        worst_ctm = None if any(v is None for v in ctm.values()) else max(ctm.values())
        out.append({"name": n, "gain": gains, "cost_to_match": ctm, "worst_gain": min(gains.values()),
                    "mean_gain": float(np.mean(list(gains.values()))), "worst_cost_to_match": worst_ctm,
                    "graded_gain_mean": float(np.mean(graded)) if graded else None})
    out.sort(key=lambda e: -e["worst_gain"])
    return out
