"""The MMLU pair under shift: APGR of each head on random, subject-out and reweighted folds.

Protocols as in :mod:`preroll.bench.route_shift`; ``group`` holds whole MMLU
subjects out (the source datasets are known here, so no clustering is
needed). Per fold the router is fitted with ``head="joint"`` and
``head="ensemble"`` (``average``: their mixture). Every head's gain score
``p_strong - p_weak`` is swept over the pooled held-out rows of a protocol
(APGR, RouteLLM's metric) and per fold (the worst fold is reported); ECE per
model on the pooled rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from preroll.bench import route_shift as rs
from preroll.route.specs import ModelSpec


@dataclass
class PairShiftConfig:
    models: list[ModelSpec]
    root: str | None = None
    folds: int = 5
    seeds: tuple[int, ...] = (0,)
    protocols: tuple[str, ...] = ("random", "group", "reweight")
    max_prompts: int | None = 3000
    encoder: Any = "minilm+lexical+stats"
    cluster_encoder: Any = "minilm"
    cache_dir: str | None = None
    heads: tuple[str, ...] = ("joint", "ensemble")
    alpha: float = 1.0
    reweight_k: int = 10
    max_folds: int | None = None


def run_pair_shift(cfg: PairShiftConfig, progress: Callable[[str], None] = lambda s: None,
                   checkpoint: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    from preroll.bench import route_metrics as metrics
    from preroll.bench.mmlu import load_mmlu
    from preroll.bench.route import random_subset
    from preroll.encoders import get_encoder
    from preroll.route import Router, rules
    from preroll.route.depth import average_beliefs

    data = random_subset(load_mmlu(cfg.root), cfg.max_prompts, 0)
    names = [m.name for m in cfg.models]
    col = [data.models.index(n) for n in names]
    Y_all = data.correct[:, col].astype(float)
    X_text = rs.text_embeddings(data.prompts, cfg.cluster_encoder, cfg.cache_dir)
    encoder = get_encoder(cfg.encoder, cache_dir=cfg.cache_dir)
    progress(f"MMLU pair: {len(data)} prompts, {len(set(data.subjects))} subjects")
    runs: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for seed in cfg.seeds:
        for proto in cfg.protocols:
            folds = rs.build_folds(proto, data.prompts, X_text, cfg.folds, seed, alpha=cfg.alpha,
                                   reweight_k=cfg.reweight_k, groups=data.subjects)
            folds = folds[:cfg.max_folds] if cfg.max_folds else folds
            scores: dict[str, list[np.ndarray]] = {}
            probs: dict[str, list[np.ndarray]] = {}
            ys: list[np.ndarray] = []
            fold_apgr: dict[str, list[float]] = {}
            for fold in folds:
                progress(f"pair, seed {seed}, {proto}, fold {fold.fold}: {len(fold.train)} history / "
                         f"{len(fold.test)} test")
                p_te = [data.prompts[i] for i in fold.test]
                beliefs = {}
                routers = []
                for head in cfg.heads:
                    r = Router(models=cfg.models, encoder=encoder, head=head, rule="gain", guard=False)
                    r.fit({n: h for n, h in data.histories(fold.train).items() if n in names})
                    routers.append(r)
                    beliefs[head] = r.predict_beta_embeddings(routers[0].embed(p_te))
                first = routers[0]
                if "joint" in beliefs and "ensemble" in beliefs:
                    beliefs["average"] = average_beliefs(beliefs["joint"], beliefs["ensemble"])
                strong = int(rules.strong_index(first.costs(p_te[:1]))[0])
                Y = Y_all[fold.test]
                ys.append(Y)
                for h, b in beliefs.items():
                    P = np.clip(b.p_success, 0, 1)
                    s = P[:, strong] - P[:, 1 - strong]
                    scores.setdefault(h, []).append(s)
                    probs.setdefault(h, []).append(P)
                    cur = metrics.routing_curve(s, Y[:, 1 - strong], Y[:, strong])
                    fold_apgr.setdefault(h, []).append(metrics.apgr(cur))
            Y = np.concatenate(ys)
            methods = {}
            for h, parts in scores.items():
                s = np.concatenate(parts)
                P = np.concatenate(probs[h])
                cur = metrics.routing_curve(s, Y[:, 1 - strong], Y[:, strong])
                methods[h] = {"apgr": metrics.apgr(cur), "fold_apgr": fold_apgr[h],
                              "ece": {n: rs.expected_calibration_error(P[:, j], Y[:, j]) for j, n in enumerate(names)}}
            runs.append({"protocol": proto, "seed": seed, "n_test_rows": len(Y), "methods": methods,
                         "folds": [{"fold": f.fold, "n_train": len(f.train), "n_test": len(f.test)}
                                   for f in folds]})
            cfg_out = {k: v for k, v in asdict(cfg).items() if k != "models"}
            cfg_out["models"] = [m.model_dump() for m in cfg.models]
            result = {"config": cfg_out, "n_prompts": len(data), "runs": runs, "summary": summarise_pair(runs)}
            if checkpoint is not None:
                checkpoint(result)
    return result


def summarise_pair(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for h in runs[0]["methods"]:
        apgr = {f"{r['protocol']}/s{r['seed']}": r["methods"][h]["apgr"] for r in runs}
        out.append({"name": h, "apgr": apgr, "worst_apgr": min(apgr.values()),
                    "worst_fold_apgr": min(min(r["methods"][h]["fold_apgr"]) for r in runs)})
    out.sort(key=lambda e: -e["worst_apgr"])
    return out
