"""The routing benchmark: RouteLLM's MMLU data, history/evaluation split, every baseline.

Protocol. Unique prompt texts are split at random (``history_frac`` to the
history, the rest to evaluation; a text never lands on both sides). The
router and the learned baselines see only the history's correctness of each
model; every metric is computed on the evaluation prompts:

* the router's ``gain`` rule (RouteLLM's threshold on predicted gain, swept
  over every cutoff), and its ``threshold`` and ``utility`` rules swept over
  their default grids;
* random mix (mean over ``random_repeats`` draws), each single model, a kNN
  router (k chosen by cross-validation on the history), an MLP router, and the
  oracle.

Metrics: APGR, AIQ (cost normalised between the single models), CPT(50%),
the strong share needed for 95% of the strong model's accuracy, and the
accuracy at a 50% strong share. See :mod:`preroll.bench.route_metrics`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from preroll.encoders.base import Encoder
from preroll.encoders.memo import MemoEncoder
from preroll.bench import route_baselines as baselines, route_metrics as metrics
from preroll.outputs import save_figure
from preroll.route.specs import ModelSpec


@dataclass
class RouteBenchConfig:
    """Everything that defines one benchmark run (recorded in the JSON output)."""

    models: list[ModelSpec]
    root: str | None = None               # MMLU data root (default: the bundled data)
    history_frac: float = 0.5
    seed: int = 0
    repeats: int = 1                      # independent splits (seed, seed+1, ...)
    max_prompts: int | None = None        # random subset, for a quick look
    encoder: Any = "minilm+lexical+stats"
    cache_dir: str | None = None
    head: Any = "auto"
    knn_ks: tuple[int, ...] = (5, 10, 20, 40, 80, 160)
    mlp: bool = True
    random_repeats: int = 20
    target_fraction: float = 0.95         # "share for 95% of the strong model's accuracy"


@dataclass
class RowResult:
    """One router's metrics on one split."""

    name: str
    apgr: float | None
    aiq: float | None
    cpt50: float | None
    share_for_target: float | None
    acc_at_half: float | None
    accuracy: float | None = None   # single models only: plain accuracy
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_encoder(encoder: Any, cache_dir: str | None) -> Encoder:
    from preroll.encoders import get_encoder

    return get_encoder(encoder, cache_dir=cache_dir)


def random_subset(data, max_prompts: int | None, seed: int):
    """``max_prompts`` rows of a benchmark's data drawn at random (in their original order), or all of it."""
    if max_prompts is None or max_prompts >= len(data):
        return data
    return data.subset(np.sort(np.random.default_rng(seed).permutation(len(data))[:max_prompts]))


def split_prompts(prompts: Sequence[str], history_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of history and evaluation; identical texts stay on one side."""
    if not 0.0 < history_frac < 1.0:
        raise ValueError(f"history_frac must lie in (0, 1), got {history_frac}")
    uniq = list(dict.fromkeys(prompts))
    rng = np.random.default_rng(seed)
    n_hist = int(round(history_frac * len(uniq)))
    if n_hist == 0 or n_hist == len(uniq):
        raise ValueError(f"{len(uniq)} prompts are too few to split {history_frac:g}/{1 - history_frac:g}")
    hist_text = {uniq[i] for i in rng.permutation(len(uniq))[:n_hist]}
    in_hist = np.array([p in hist_text for p in prompts])
    return np.flatnonzero(in_hist), np.flatnonzero(~in_hist)


def _row(name: str, curve: metrics.RoutingCurve, cheapest: float, dearest: float, target: float,
         **extra) -> RowResult:
    return RowResult(
        name=name,
        apgr=metrics.apgr(curve),
        aiq=metrics.aiq(curve.cost, curve.accuracy, cheapest=cheapest, dearest=dearest),
        cpt50=metrics.cpt(curve, 0.5),
        share_for_target=metrics.share_for_accuracy(curve, target),
        acc_at_half=metrics.accuracy_at_share(curve, 0.5),
        extra=extra)


def run_split(data, cfg: RouteBenchConfig, encoder: Encoder, seed: int,
              progress: Callable[[str], None] = lambda s: None) -> tuple[list[RowResult], dict[str, Any]]:
    """Fit on one split's history, evaluate every router on its evaluation prompts."""
    from preroll.route.router import Router, frontier_points
    from preroll.route import rules

    names = [m.name for m in cfg.models]
    col = [data.models.index(n) for n in names]
    Y_all = data.correct[:, col].astype(float)
    hist, ev = split_prompts(data.prompts, cfg.history_frac, seed)
    p_hist = [data.prompts[i] for i in hist]
    p_ev = [data.prompts[i] for i in ev]
    Y_h, Y_e = Y_all[hist], Y_all[ev]

    router = Router(models=cfg.models, encoder=encoder, head=cfg.head, rule="gain")
    progress(f"split {seed}: fitting the router on {len(hist)} history prompts "
             "(neural embeddings are cached on disk: the first run encodes, later runs read)")
    router.fit({n: h for n, h in data.subset(hist).histories().items() if n in names}, show_progress=True)
    X_h = router.embed(p_hist)
    progress(f"split {seed}: encoding {len(ev)} evaluation prompts")
    X_e = router.embed(p_ev, show_progress=True)
    P = router.predict_proba_embeddings(X_e)
    C = router.costs(p_ev)

    # Weak/strong by mean price over the evaluation prompts.
    strong = int(rules.strong_index(C.mean(axis=0, keepdims=True))[0])
    if len(names) != 2:
        raise ValueError(f"the benchmark compares two models (got {len(names)})")
    weak = 1 - strong
    w, s = Y_e[:, weak], Y_e[:, strong]
    cw, cs = C[:, weak], C[:, strong]
    cheapest, dearest = float(cw.mean()), float(cs.mean())
    tgt = cfg.target_fraction

    def scored(name, score, **extra):
        return _row(name, metrics.routing_curve(score, w, s, weak_cost=cw, strong_cost=cs),
                    cheapest, dearest, tgt, **extra)

    rows: list[RowResult] = []
    curves: dict[str, metrics.RoutingCurve] = {}

    def add(row: RowResult, curve: metrics.RoutingCurve):
        rows.append(row)
        curves[row.name] = curve

    c = metrics.routing_curve(P[:, strong] - P[:, weak], w, s, weak_cost=cw, strong_cost=cs)
    add(scored("router, gain rule", P[:, strong] - P[:, weak]), c)

    for rule in ("threshold", "utility"):
        grid = rules.default_grid(rule, P, C, n=201)
        pts = frontier_points(P, C, Y_e, rule, grid, names)
        cur = metrics.curve_from_points([p.share[names[strong]] for p in pts], [p.quality for p in pts],
                                        float(w.mean()), float(s.mean()), cost=[p.cost for p in pts],
                                        weak_cost=cheapest, strong_cost=dearest)
        add(_row(f"router, {rule} rule", cur, cheapest, dearest, tgt), cur)

    progress(f"split {seed}: baselines")
    k = baselines.select_knn_k(X_h, Y_h, ks=cfg.knn_ks, seed=seed, strong=strong, weak=weak)
    Pk = baselines.knn_proba(X_h, Y_h, X_e, k)
    sc = Pk[:, strong] - Pk[:, weak]
    add(scored("kNN router (k by CV)", sc, k=k), metrics.routing_curve(sc, w, s, weak_cost=cw, strong_cost=cs))
    if cfg.mlp:
        Pm = baselines.mlp_proba(X_h, Y_h, X_e, seed=seed)
        sc = Pm[:, strong] - Pm[:, weak]
        add(scored("MLP router", sc), metrics.routing_curve(sc, w, s, weak_cost=cw, strong_cost=cs))

    rand = [scored("random", baselines.random_scores(len(ev), seed * 1000 + r)) for r in range(cfg.random_repeats)]
    rows.append(RowResult(
        name=f"random mix (mean of {cfg.random_repeats})",
        apgr=float(np.mean([r.apgr for r in rand])), aiq=float(np.mean([r.aiq for r in rand])),
        cpt50=float(np.mean([r.cpt50 for r in rand])),
        share_for_target=float(np.nanmean([r.share_for_target for r in rand])),
        acc_at_half=float(np.mean([r.acc_at_half for r in rand])),
        extra={"apgr_std": float(np.std([r.apgr for r in rand]))}))
    curves["random mix (one draw)"] = metrics.routing_curve(baselines.random_scores(len(ev), seed * 1000), w, s,
                                                  weak_cost=cw, strong_cost=cs)
    sc = baselines.oracle_scores(w, s)
    add(scored("oracle", sc), metrics.routing_curve(sc, w, s, weak_cost=cw, strong_cost=cs))
    for j, label in ((weak, "weak"), (strong, "strong")):
        acc = float(Y_e[:, j].mean())
        rows.append(RowResult(name=f"only {names[j]} ({label})", apgr=None, aiq=None, cpt50=None,
                              share_for_target=(0.0 if acc >= tgt * s.mean() else None) if j == weak else 1.0,
                              acc_at_half=None, accuracy=acc,
                              extra={"mean_cost": float(C[:, j].mean())}))
    info = {"seed": seed, "n_history": int(len(hist)), "n_eval": int(len(ev)), "weak": names[weak],
            "strong": names[strong], "weak_acc": float(w.mean()), "strong_acc": float(s.mean()),
            "weak_mean_cost": cheapest, "strong_mean_cost": dearest,
            "curves": {k: {"share": v.share.tolist(), "accuracy": v.accuracy.tolist(),
                           "cost": None if v.cost is None else v.cost.tolist()} for k, v in curves.items()}}
    return rows, info


def run_route_bench(cfg: RouteBenchConfig, progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Load the data, run every split, and aggregate (mean and std over splits)."""
    from preroll.bench.mmlu import load_mmlu

    data = load_mmlu(cfg.root)
    for m in cfg.models:
        if m.name not in data.models:
            from preroll.route.errors import UnknownModelError

            raise UnknownModelError(m.name, data.models, where="not a column of the MMLU response files")
    data = random_subset(data, cfg.max_prompts, cfg.seed)
    progress(f"{len(data)} prompts ({data.n_excluded} contaminated excluded), models {', '.join(data.models)}")
    encoder = MemoEncoder(resolve_encoder(cfg.encoder, cfg.cache_dir))  # each split encodes a prompt once

    splits = []
    for r in range(cfg.repeats):
        rows, info = run_split(data, cfg, encoder, cfg.seed + r, progress)
        splits.append({"rows": [asdict(x) for x in rows], **info})
    summary = mean_std_by_row(splits, _METRICS)
    cfg_out = {k: v for k, v in asdict(cfg).items() if k != "models"}
    cfg_out["models"] = [m.model_dump() for m in cfg.models]
    cfg_out["encoder"] = cfg.encoder if isinstance(cfg.encoder, str) else type(cfg.encoder).__name__
    cfg_out["head"] = cfg.head if isinstance(cfg.head, str) else type(cfg.head).__name__
    return {"config": cfg_out, "n_prompts": len(data), "n_excluded": data.n_excluded,
            "summary": summary, "splits": splits}


_METRICS = ("apgr", "aiq", "cpt50", "share_for_target", "acc_at_half", "accuracy")


def mean_std_by_row(splits: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Mean, standard deviation and count of each metric per router over splits (rows matched by position).

    A metric a router could not reach on a split (``None`` or NaN) is left out of that router's mean.
    """
    out = []
    for i, first in enumerate(splits[0]["rows"]):
        rows = [s["rows"][i] for s in splits]
        entry: dict[str, Any] = {"name": first["name"]}
        for m in keys:
            vals = [r[m] for r in rows if r[m] is not None and not (isinstance(r[m], float) and math.isnan(r[m]))]
            entry[m] = float(np.mean(vals)) if vals else None
            entry[m + "_std"] = float(np.std(vals)) if len(vals) > 1 else None
            entry[m + "_n"] = len(vals)
        out.append(entry)
    return out


def plot_frontier(result: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against strong-call share and against normalised cost (first split), as PNG."""
    from preroll._optional import require

    require("matplotlib", what="drawing a plot").use("Agg")
    import matplotlib.pyplot as plt

    split = result["splits"][0]
    cheap, dear = split["weak_mean_cost"], split["strong_mean_cost"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for name, cur in split["curves"].items():
        sh = np.asarray(cur["share"])
        acc = np.asarray(cur["accuracy"])
        axes[0].plot(sh, acc, label=name, lw=1.4)
        if cur["cost"] is not None:
            x, y = metrics.upper_hull(metrics.normalise_cost(cur["cost"], cheap, dear), acc)
            axes[1].plot(x, y, label=name, lw=1.4)
    for ax in axes:
        ax.axhline(split["strong_acc"], color="grey", ls=":", lw=1)
        ax.axhline(split["weak_acc"], color="grey", ls=":", lw=1)
        ax.axhline(0.95 * split["strong_acc"], color="red", ls="--", lw=0.8)
        ax.set_ylabel("accuracy on evaluation prompts")
        ax.grid(alpha=0.3)
    axes[0].set_xlabel(f"share of calls to the strong model ({split['strong']})")
    axes[0].set_title("accuracy vs strong-call share (threshold sweep)")
    axes[1].set_xlabel("normalised cost (0: only weak, 1: only strong)")
    axes[1].set_title("non-decreasing convex hull (AIQ = area)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"MMLU routing, {split['n_history']} history / {split['n_eval']} evaluation prompts")
    fig.tight_layout()
    return save_figure(fig, path)
