"""Baseline routers to compare against, on the same embeddings as the router.

Each two-model baseline yields a score per evaluation prompt (higher: send to
the strong model), so all of them are swept and measured the same way
(:mod:`preroll.bench.route_metrics`):

* random: i.i.d. uniform scores (its expected curve is the diagonal, APGR 0.5);
* oracle: the true gain ``strong_correct - weak_correct`` (an upper bound no
  router can beat);
* kNN (RouterBench-style): each model's mean correctness over the ``k``
  nearest history prompts, ``k`` chosen by cross-validation on the history;
* MLP: one small scikit-learn MLP classifier per model.
"""

from __future__ import annotations

import numpy as np

from preroll.bench import route_metrics as metrics


def random_scores(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n)


def oracle_scores(weak_correct, strong_correct) -> np.ndarray:
    return np.asarray(strong_correct, float) - np.asarray(weak_correct, float)


def random_apgr(weak_correct, strong_correct, *, repeats: int = 20, seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation of APGR over ``repeats`` random routers."""
    vals = [metrics.apgr(metrics.routing_curve(random_scores(len(weak_correct), seed + r),
                                               weak_correct, strong_correct))
            for r in range(repeats)]
    return float(np.mean(vals)), float(np.std(vals))


def knn_proba(X_hist, Y_hist, X_eval, k: int) -> np.ndarray:
    """Per-model mean correctness of the ``k`` nearest history prompts (cosine)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=min(k, len(X_hist)), metric="cosine").fit(X_hist)
    idx = nn.kneighbors(X_eval, return_distance=False)
    return np.asarray(Y_hist, float)[idx].mean(axis=1)


def select_knn_k(X_hist, Y_hist, *, ks=(5, 10, 20, 40, 80, 160), n_splits: int = 4, seed: int = 0,
                 strong: int = 1, weak: int = 0) -> int:
    """The ``k`` with the best cross-validated APGR on the history alone."""
    from sklearn.model_selection import KFold

    Y_hist = np.asarray(Y_hist, float)
    scores = np.zeros(len(ks))
    for tr, te in KFold(n_splits, shuffle=True, random_state=seed).split(X_hist):
        for i, k in enumerate(ks):
            P = knn_proba(X_hist[tr], Y_hist[tr], X_hist[te], k)
            curve = metrics.routing_curve(P[:, strong] - P[:, weak], Y_hist[te, weak], Y_hist[te, strong])
            scores[i] += metrics.apgr(curve)
    return int(ks[int(np.argmax(scores))])


def mlp_proba(X_hist, Y_hist, X_eval, *, seed: int = 0) -> np.ndarray:
    """One early-stopped MLP classifier per model."""
    from sklearn.neural_network import MLPClassifier

    Y_hist = np.asarray(Y_hist)
    cols = []
    for j in range(Y_hist.shape[1]):
        y = Y_hist[:, j].astype(int)
        if np.all(y == y[0]):
            cols.append(np.full(len(X_eval), float(y[0])))
            continue
        clf = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-2, early_stopping=True, max_iter=300,
                            random_state=seed).fit(X_hist, y)
        cols.append(clf.predict_proba(X_eval)[:, 1])
    return np.stack(cols, axis=1)


# ----------------------------------------------------------------- N models
# Each N-model baseline returns a score matrix (n_eval, n_models): the utility
# rule (argmax score - lam * cost) is swept over it exactly as over the
# router's probabilities, so every router is measured by the same frontier.

def _quality_at_zero(P, Y) -> float:
    Y = np.asarray(Y, float)
    pick = np.argmax(P, axis=1)
    v = Y[np.arange(len(Y)), pick]
    return float(np.nanmean(v))


def _fill_missing(Y) -> np.ndarray:
    """Missing entries replaced by the model's mean (baselines that need a full matrix)."""
    Y = np.asarray(Y, float)
    return np.where(np.isfinite(Y), Y, np.nanmean(Y, axis=0, keepdims=True))


def knn_multi_proba(X_hist, Y_hist, X_eval, k: int) -> np.ndarray:
    """Each model's mean score over the ``k`` cosine-nearest history prompts (RouterBench's kNN router)."""
    from preroll.heads.knn import nearest, unit_rows

    idx = nearest(unit_rows(X_eval), unit_rows(X_hist), k)
    return _fill_missing(Y_hist)[idx].mean(axis=1)


def select_knn_k_multi(X_hist, Y_hist, *, ks=(10, 25, 50, 100, 200), n_splits: int = 3, seed: int = 0) -> int:
    """The ``k`` whose argmax routing scores best under cross-validation on the history alone."""
    from sklearn.model_selection import KFold

    ks = [k for k in ks if k < len(X_hist) * (n_splits - 1) / n_splits] or [1]
    score = np.zeros(len(ks))
    for tr, te in KFold(n_splits, shuffle=True, random_state=seed).split(X_hist):
        for i, k in enumerate(ks):
            score[i] += _quality_at_zero(knn_multi_proba(X_hist[tr], Y_hist[tr], X_hist[te], k), Y_hist[te])
    return int(ks[int(np.argmax(score))])


def cluster_best_proba(X_hist, Y_hist, X_eval, n_clusters: int, *, seed: int = 0) -> np.ndarray:
    """Per-cluster best model: KMeans on the history embeddings, each cluster's mean score per model."""
    from sklearn.cluster import KMeans

    Yf = _fill_missing(Y_hist)
    km = KMeans(n_clusters=min(n_clusters, len(X_hist)), n_init=3, random_state=seed).fit(X_hist)
    means = np.stack([Yf[km.labels_ == c].mean(axis=0) if np.any(km.labels_ == c) else Yf.mean(axis=0)
                      for c in range(km.n_clusters)])
    return means[km.predict(X_eval)]


def select_clusters(X_hist, Y_hist, *, choices=(5, 10, 20, 40, 80), n_splits: int = 3, seed: int = 0) -> int:
    """Number of clusters with the best cross-validated argmax routing on the history."""
    from sklearn.model_selection import KFold

    choices = [c for c in choices if c < len(X_hist) // n_splits] or [1]
    score = np.zeros(len(choices))
    for tr, te in KFold(n_splits, shuffle=True, random_state=seed).split(X_hist):
        for i, c in enumerate(choices):
            score[i] += _quality_at_zero(cluster_best_proba(X_hist[tr], Y_hist[tr], X_hist[te], c, seed=seed),
                                         Y_hist[te])
    return int(choices[int(np.argmax(score))])


def mlp_multi_proba(X_hist, Y_hist, X_eval, *, seed: int = 0) -> np.ndarray:
    """One early-stopped multi-output MLP regressor on all models' scores."""
    from sklearn.neural_network import MLPRegressor

    reg = MLPRegressor(hidden_layer_sizes=(128,), alpha=1e-2, early_stopping=True, max_iter=300,
                       random_state=seed).fit(X_hist, _fill_missing(Y_hist))
    return np.asarray(reg.predict(X_eval)).reshape(len(X_eval), -1)


def mf_proba(X_hist, Y_hist, X_eval, *, rank: int = 32, epochs: int = 40, seed: int = 0) -> np.ndarray:
    """Matrix factorisation (EmbedLLM-style): a linear prompt projection scored against learned model vectors.

    ``logit = (x A) . e_model + b_model``, trained on observed cells only with
    cross-entropy on graded scores.
    """
    import torch

    torch.manual_seed(seed)
    Y = np.asarray(Y_hist, float)
    M = np.isfinite(Y)
    Xt = torch.as_tensor(np.asarray(X_hist, np.float32))
    Yt = torch.as_tensor(np.where(M, Y, 0.0), dtype=torch.float32)
    Mt = torch.as_tensor(M, dtype=torch.float32)
    proj = torch.nn.Linear(Xt.shape[1], rank, bias=False)
    emb = torch.nn.Parameter(torch.randn(Y.shape[1], rank) * 0.1)
    bias = torch.nn.Parameter(torch.logit(torch.as_tensor(np.nanmean(Y, axis=0), dtype=torch.float32)
                                          .clamp(0.02, 0.98)))
    opt = torch.optim.Adam([*proj.parameters(), emb, bias], lr=3e-3, weight_decay=1e-5)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(Xt), generator=gen)
        for b in range(0, len(Xt), 128):
            r = perm[b:b + 128]
            z = proj(Xt[r]) @ emb.T + bias
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, Yt[r], reduction="none") * Mt[r]).sum()
            loss = loss / Mt[r].sum().clamp_min(1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return torch.sigmoid(proj(torch.as_tensor(np.asarray(X_eval, np.float32))) @ emb.T + bias).numpy()
