"""Evaluation under shift: fold builders and pooled metrics for the routing benchmarks.

Why: random K-fold CV tests a router on prompts drawn from the history's own
mix. Deployed, the mix moves: on LLMRouter's own test split the head that won
random folds by 0.3 points lost by 2.6. One shift protocol is not enough
either (a single 5-cluster hold-out did not reproduce that ordering), so
defaults are judged by the worst case over several protocols and fold seeds.

Protocols (each a list of :class:`ShiftFold`, test rows disjoint from train
rows, identical texts never on both sides):

* ``random``: K folds of unique texts at random (the old protocol);
* ``cluster<K>``: k-means with ``K`` clusters on embeddings of all prompts
  (texts only, no scores); whole clusters are held out, ``K / folds``
  clusters per fold, so a test fold's topics are absent from its history;
* ``group``: the same with given groups (e.g. MMLU's subjects);
* ``reweight``: per fold a Dirichlet draw of cluster weights; the test set
  (a ``1 / folds`` share of the texts) is sampled with those weights, the
  rest is the history, so the two mixes differ though both cover every topic.

Metrics pool the held-out rows of all folds of a protocol (every router is a
score matrix swept by the utility rule over one common ``lam`` grid):
quality at ``lam = 0`` minus the best single model's (chosen on each fold's
history), the cost to match that model's quality as a share of its cost (on
the non-decreasing convex hull), per-model ECE, and the same gain on the
graded-outcome rows (any score strictly between 0 and 1) as a slice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOLS = ("random", "cluster5", "cluster10", "reweight")


@dataclass(frozen=True)
class ShiftFold:
    """One fold of a protocol: row indices of history and test, and what was held out."""

    protocol: str
    seed: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def _text_ids(prompts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    uniq = list(dict.fromkeys(prompts))
    idx = {p: i for i, p in enumerate(uniq)}
    return uniq, np.array([idx[p] for p in prompts], dtype=int)


def _rows_of(text_mask: np.ndarray, text_of_row: np.ndarray) -> np.ndarray:
    return np.flatnonzero(text_mask[text_of_row])


def random_folds(prompts: Sequence[str], folds: int, seed: int) -> list[ShiftFold]:
    """K folds of unique texts at random."""
    uniq, t = _text_ids(prompts)
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = np.empty(len(uniq), dtype=int)
    fold_of[order] = np.arange(len(uniq)) % folds
    out = []
    for f in range(folds):
        te = _rows_of(fold_of == f, t)
        out.append(ShiftFold("random", seed, f, np.setdiff1d(np.arange(len(prompts)), te), te))
    return out


def text_embeddings(prompts: Sequence[str], encoder: Any, cache_dir: str | None = None) -> np.ndarray:
    """One row per unique text of ``prompts`` (first-seen order): what the protocols' clusters are drawn on.

    ``encoder`` is a name or an :class:`~preroll.encoders.base.Encoder`; one that learns a vocabulary
    (the lexical view) is fitted on these texts alone -- texts only, never scores.
    """
    from preroll.encoders import get_encoder

    uniq = list(dict.fromkeys(prompts))
    enc = get_encoder(encoder, cache_dir=cache_dir)
    if hasattr(enc, "fit"):
        enc.fit(uniq)
    return np.asarray(enc.encode(uniq), dtype=np.float32)


def text_clusters(X_text: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K-means labels of unique texts' embeddings (rows of ``X_text``)."""
    from sklearn.cluster import KMeans

    k = min(k, len(X_text))
    return KMeans(k, n_init=3, random_state=seed).fit_predict(np.asarray(X_text, dtype=np.float64))


def group_out_folds(prompts: Sequence[str], groups: Sequence[Any], folds: int, seed: int,
                    protocol: str = "group") -> list[ShiftFold]:
    """Whole groups held out: groups are dealt to ``folds`` folds at random (balanced by count of groups).

    ``groups`` is one label per row; rows of one text must carry one label.
    """
    uniq, t = _text_ids(prompts)
    g_text = np.empty(len(uniq), dtype=object)
    for r, g in zip(t, groups):
        g_text[r] = g
    labels = list(dict.fromkeys(g_text.tolist()))
    if len(labels) < folds:
        raise ValueError(f"{len(labels)} groups cannot fill {folds} folds")
    order = np.random.default_rng(seed).permutation(len(labels))
    fold_of_group = {labels[g]: i % folds for i, g in enumerate(order)}
    fold_of = np.array([fold_of_group[g] for g in g_text])
    out = []
    for f in range(folds):
        te = _rows_of(fold_of == f, t)
        held = sorted((str(g) for g, ff in fold_of_group.items() if ff == f))
        out.append(ShiftFold(protocol, seed, f, np.setdiff1d(np.arange(len(prompts)), te), te,
                             {"held_out": held}))
    return out


def cluster_out_folds(prompts: Sequence[str], X_text: np.ndarray, k: int, folds: int, seed: int) -> list[ShiftFold]:
    """Whole k-means clusters of the texts held out (``X_text``: one row per unique text, in first-seen order)."""
    uniq, t = _text_ids(prompts)
    if len(X_text) != len(uniq):
        raise ValueError(f"X_text has {len(X_text)} rows for {len(uniq)} unique texts")
    lab = text_clusters(X_text, k, seed)
    return group_out_folds(prompts, lab[t], min(folds, len(set(lab.tolist()))), seed, protocol=f"cluster{k}")


def reweighted_folds(prompts: Sequence[str], X_text: np.ndarray, k: int, folds: int, seed: int,
                     alpha: float = 1.0) -> list[ShiftFold]:
    """Test sets drawn with a Dirichlet(``alpha``) mix of ``k`` clusters; the other texts are the history.

    Each fold draws its own weights ``w`` and samples ``len(texts) / folds``
    texts without replacement, a text of cluster ``c`` with probability
    proportional to ``w_c / size_c``, so the test mix follows ``w`` (as far as
    the clusters' sizes allow) while the history keeps the rest.
    """
    uniq, t = _text_ids(prompts)
    if len(X_text) != len(uniq):
        raise ValueError(f"X_text has {len(X_text)} rows for {len(uniq)} unique texts")
    lab = text_clusters(X_text, k, seed)
    kk = int(lab.max()) + 1
    size = np.bincount(lab, minlength=kk).astype(float)
    rng = np.random.default_rng(seed + 7919)
    n_test = max(1, len(uniq) // folds)
    out = []
    for f in range(folds):
        w = rng.dirichlet(np.full(kk, alpha))
        p = w[lab] / size[lab]
        p = np.maximum(p, 1e-12)
        chosen = rng.choice(len(uniq), size=n_test, replace=False, p=p / p.sum())
        mask = np.zeros(len(uniq), dtype=bool)
        mask[chosen] = True
        te = _rows_of(mask, t)
        test_mix = np.bincount(lab[chosen], minlength=kk) / n_test
        train_mix = np.bincount(lab[~mask], minlength=kk) / max(1, (~mask).sum())
        out.append(ShiftFold("reweight", seed, f, np.setdiff1d(np.arange(len(prompts)), te), te,
                             {"weights": w.round(4).tolist(), "test_mix": test_mix.round(4).tolist(),
                              "train_mix": train_mix.round(4).tolist(),
                              "tv_distance": float(0.5 * np.abs(test_mix - train_mix).sum())}))
    return out


def build_folds(protocol: str, prompts: Sequence[str], X_text: np.ndarray | None, folds: int, seed: int, *,
                alpha: float = 1.0, reweight_k: int = 10, groups: Sequence[Any] | None = None) -> list[ShiftFold]:
    """Folds of one protocol by name: ``random``, ``cluster<K>``, ``reweight``, ``group``."""
    if protocol == "random":
        return random_folds(prompts, folds, seed)
    if protocol == "group":
        if groups is None:
            raise ValueError("the 'group' protocol needs groups (e.g. MMLU subjects)")
        return group_out_folds(prompts, groups, folds, seed)
    if X_text is None:
        raise ValueError(f"protocol {protocol!r} needs embeddings of the prompts")
    if protocol.startswith("cluster") and protocol[7:].isdigit():
        return cluster_out_folds(prompts, X_text, int(protocol[7:]), folds, seed)
    if protocol == "reweight":
        return reweighted_folds(prompts, X_text, reweight_k, folds, seed, alpha=alpha)
    raise ValueError(f"unknown protocol {protocol!r}; choose random, cluster<K> (e.g. cluster5), reweight or group")


def check_protocols(names: Sequence[str]) -> list[str]:
    out = []
    for n in names:
        n = n.strip()
        if not n:
            continue
        if n not in ("random", "reweight", "group") and not (n.startswith("cluster") and n[7:].isdigit()
                                                             and int(n[7:]) >= 2):
            raise ValueError(f"unknown protocol {n!r}; choose random, cluster<K> (K >= 2), reweight or group")
        out.append(n)
    if not out:
        raise ValueError("no protocol given")
    return out


# ------------------------------------------------------------------ metrics


def expected_calibration_error(p: np.ndarray, y: np.ndarray, *, bins: int = 10) -> float:
    """ECE of predicted rates against (graded) outcomes: count-weighted mean |mean p - mean y| over equal-width bins."""
    from preroll.route.joint import expected_calibration_error as ece

    return ece(p, y, bins=bins)


def graded_rows(Y: np.ndarray) -> np.ndarray:
    """Rows with any score strictly between 0 and 1 (partial credit)."""
    Y = np.asarray(Y, float)
    return np.any((Y > 0) & (Y < 1) & np.isfinite(Y), axis=1)


def hull_cost_to_match(cost: np.ndarray, qual: np.ndarray, target: float, ref_cost: float) -> float | None:
    """Cheapest cost on the non-decreasing convex hull of (cost, quality) reaching ``target``, over ``ref_cost``."""
    from preroll.bench import route_metrics as metrics

    x, y = metrics.upper_hull(np.asarray(cost, float), np.asarray(qual, float))
    hit = np.flatnonzero(y >= target - 1e-12)
    if hit.size == 0:
        return None
    i = hit[0]
    c = x[0] if i == 0 else x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1])
    return float(c / ref_cost)


def pooled_metrics(picks: Sequence[np.ndarray], Y: np.ndarray, C: np.ndarray, best: np.ndarray,
                   graded: np.ndarray) -> dict[str, Any]:
    """Gain at the first pick vector (``lam = 0``), cost to match and the graded slice, over pooled test rows.

    ``picks``: chosen column per row at each ``lam`` of the sweep (first: ``lam = 0``); ``best``: the best
    single model's column per row (chosen on that row's fold history).
    """
    rows = np.arange(len(Y))
    cost = np.array([C[rows, p].mean() for p in picks])
    qual = np.array([np.nanmean(Y[rows, p]) for p in picks])
    best_q = float(np.nanmean(Y[rows, best]))
    best_c = float(C[rows, best].mean())
    d = Y[rows, picks[0]] - Y[rows, best]
    g = np.asarray(graded, bool)
    return {"quality_at_zero": float(qual[0]), "best_single_quality": best_q,
            "gain": float(np.nanmean(d)), "gain_se": float(np.nanstd(d) / np.sqrt(max(1, np.isfinite(d).sum()))),
            "cost_to_match": hull_cost_to_match(cost, qual, best_q, best_c),
            "graded_n": int(g.sum()), "graded_gain": float(np.nanmean(d[g])) if g.any() else None,
            "curve": {"cost": cost.tolist(), "quality": qual.tolist()}}
