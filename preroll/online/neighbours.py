"""The semantic-neighbour part of the belief: a fixed k-NN graph over the dataset.

Why a fixed graph: the dataset's prompts do not change during training, only
what is known about them. So the cosine neighbours of every prompt are
computed once from the cached embeddings (one chunked matrix product,
:func:`preroll.heads.knn.nearest`), and a refit is a gather over that graph
(O(prompts x k), milliseconds), cheap enough to run every step.

A prompt's neighbour rate is the kNN-Beta head's formula restricted to
neighbours with own outcomes: the similarity-weighted mean of their
(drift-adjusted) rates, shrunk towards the global rate by a number of
pseudo-attempts that the book fits by likelihood. A prompt is never its own neighbour, so its own outcomes are
counted once (by the book), not twice.
"""

from __future__ import annotations

import numpy as np

from preroll.heads.knn import nearest, unit_rows


def neighbour_graph(embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (int32) and cosine similarities (float32) of each row's ``k`` nearest other rows."""
    X = unit_rows(embeddings)
    n = len(X)
    k = int(min(k, max(n - 1, 0)))
    if k == 0:
        return np.zeros((n, 0), np.int32), np.zeros((n, 0), np.float32)
    idx, sim = nearest(X, X, k + 1, return_similarity=True)
    # Drop self (usually the first column, but exact duplicates may tie with it).
    not_self = idx != np.arange(n)[:, None]
    # keep the first k non-self entries of each row
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(idx, order, axis=1).astype(np.int32),
            np.take_along_axis(sim, order, axis=1).astype(np.float32))


def neighbour_sums(graph_idx: np.ndarray, graph_sim: np.ndarray, rate: np.ndarray, weight: np.ndarray, *,
                   power: float) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: similarity-weighted sum of neighbours' rates and the sum of the weights.

    ``rate``/``weight``: each prompt's own (drift-adjusted) rate and effective
    attempts (0 for a prompt never seen: it contributes nothing). The
    neighbour rate shrunk by ``prior`` pseudo-attempts of the global rate g is
    ``(num + prior * g) / (den + prior)``; the book fits ``prior``.
    """
    if graph_idx.shape[1] == 0:
        n = len(rate)
        return np.zeros(n), np.zeros(n)
    w = np.clip(graph_sim, 0.0, None).astype(float) ** power * weight[graph_idx]
    return (w * rate[graph_idx]).sum(axis=1), w.sum(axis=1)
