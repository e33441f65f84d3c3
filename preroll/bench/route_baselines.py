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
