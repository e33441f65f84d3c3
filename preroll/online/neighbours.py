"""The semantic-neighbour part of the belief: a fixed k-NN graph over the dataset.

Why a fixed graph: the dataset's prompts do not change during training, only
what is known about them. So the cosine neighbours of every prompt are
computed once from the cached embeddings, and a refit is a sparse product over
that graph, cheap enough to run every step.

How the graph is built depends on the size (measured in docs/online.md, "A million prompts"):

- up to ``EXACT_MAX`` prompts: exact, one chunked matrix product
  (:func:`preroll.heads.knn.nearest`); seconds at 20k prompts;
- above: approximate, with faiss's inverted-file index (``IndexIVFFlat``,
  inner product on unit rows; the optional extra ``preroll[scale]``). The
  library was chosen by measurement against hnswlib, usearch and faiss's own
  HNSW on 100k prompts: the IVF index builds and queries a full self-join
  several times faster at a recall@32 of ~0.85-0.9, and its cost is set by
  ``nprobe``. Without faiss the exact product is used (about an hour at 250k
  prompts, with a warning).

A prompt's neighbour rate is the kNN-Beta head's formula restricted to
neighbours with own outcomes: the similarity-weighted mean of their
(drift-adjusted) rates, shrunk towards the global rate by a number of
pseudo-attempts that the book fits by likelihood. A prompt is never its own
neighbour, so its own outcomes are counted once (by the book), not twice.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from preroll.heads.knn import nearest, unit_rows

log = logging.getLogger(__name__)

#: Largest dataset whose neighbour graph is computed exactly (n x n cosine product, chunked).
EXACT_MAX = 50_000
#: Inverted lists probed per query by the approximate index (recall vs time; see the module docstring).
DEFAULT_NPROBE = 32
#: Inverted lists per sqrt(prompts): nlist = this * sqrt(n) (faiss's guideline is 4-16).
LISTS_PER_SQRT = 4
#: Rows per list that train the index's k-means (a sample: the centroids need not see every prompt).
TRAIN_PER_LIST = 40


def neighbour_graph(embeddings: np.ndarray, k: int, *, method: str = "auto", nprobe: int = DEFAULT_NPROBE,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (int32) and cosine similarities (float32) of each row's ``k`` nearest other rows.

    ``method``: ``"exact"``, ``"approximate"`` (faiss), or ``"auto"`` (exact up to
    ``EXACT_MAX`` rows). Rows an approximate search found fewer than ``k``
    neighbours for are padded with the row itself at similarity 0 (weight 0:
    it never counts).
    """
    X = np.ascontiguousarray(unit_rows(embeddings), dtype=np.float32)
    n = len(X)
    k = int(min(k, max(n - 1, 0)))
    if k == 0:
        return np.zeros((n, 0), np.int32), np.zeros((n, 0), np.float32)
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"method must be 'auto', 'exact' or 'approximate' (got {method!r})")
    if method == "approximate" or (method == "auto" and n > EXACT_MAX):
        if _faiss() is not None:
            idx, sim = approximate_search(X, k + 1, nprobe=nprobe, seed=seed)
            return _drop_self(idx, sim, k)
        warnings.warn(f"{n} prompts: the exact neighbour graph takes about n^2 work (an hour at 250k prompts on "
                      "one core); install the optional extra preroll[scale] (faiss-cpu) for the approximate one",
                      RuntimeWarning, stacklevel=2)
    idx, sim = nearest(X, X, k + 1, return_similarity=True)
    return _drop_self(idx, sim, k)


def _drop_self(idx: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(idx)
    rows = np.arange(n)[:, None]
    missing = idx < 0
    if missing.any():
        idx = np.where(missing, rows, idx)
        sim = np.where(missing, 0.0, sim)
    # Drop self (usually the first column, but exact duplicates may tie with it); keep the first k others.
    not_self = idx != rows
    order = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    out_idx = np.take_along_axis(idx, order, axis=1).astype(np.int32)
    out_sim = np.take_along_axis(sim, order, axis=1).astype(np.float32)
    # A row with fewer than k others found keeps itself in the tail: weight 0.
    out_sim[out_idx == np.arange(n, dtype=np.int32)[:, None]] = 0.0
    return out_idx, out_sim


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def approximate_search(X: np.ndarray, k: int, *, nprobe: int = DEFAULT_NPROBE, seed: int = 0,
                       chunk: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most inner-product-similar rows of ``X`` to each row of ``X`` (self included), via faiss IVF.

    The coarse k-means is trained on ``TRAIN_PER_LIST`` rows per list drawn with
    ``seed``; queries go in chunks so the result arrays are the only large
    allocation.
    """
    faiss = _faiss()
    if faiss is None:
        raise ImportError("the approximate neighbour graph needs faiss: pip install 'preroll[scale]' (faiss-cpu)")
    n, d = X.shape
    nlist = max(1, min(n // TRAIN_PER_LIST, int(LISTS_PER_SQRT * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    train = X[np.sort(rng.choice(n, min(n, TRAIN_PER_LIST * nlist), replace=False))]
    index.cp.seed = int(seed)
    index.cp.niter = 10
    index.train(train)
    index.add(X)
    index.nprobe = int(min(nprobe, nlist))
    idx = np.empty((n, k), np.int64)
    sim = np.empty((n, k), np.float32)
    for start in range(0, n, chunk):
        sims, ids = index.search(X[start:start + chunk], k)
        sim[start:start + chunk], idx[start:start + chunk] = sims, ids
    return idx, sim


def graph_recall(embeddings: np.ndarray, graph_idx: np.ndarray, *, sample: int = 1000, seed: int = 0) -> float:
    """Share of each sampled row's exact ``k`` nearest other rows that the graph holds (recall@k).

    Why a sample: the exact neighbours of a few thousand rows cost one
    (sample x n) product, while the whole exact graph is what the
    approximate one avoids.
    """
    X = np.ascontiguousarray(unit_rows(embeddings), dtype=np.float32)
    n, k = graph_idx.shape
    if k == 0 or n < 2:
        return float("nan")
    rows = np.random.default_rng(seed).choice(n, min(sample, n), replace=False)
    # Small query chunks: a chunk x n similarity block is the largest allocation (64 x 1M floats = 256 MB).
    idx, _ = nearest(X[rows], X, k + 1, chunk=max(1, min(1024, 2 ** 24 // max(n, 1))), return_similarity=True)
    hits = []
    for r, cand in zip(rows, idx, strict=True):
        truth = [c for c in cand if c != r][:k]
        hits.append(len(set(truth) & set(graph_idx[r].tolist())) / len(truth))
    return float(np.mean(hits))


def reverse_weights(graph_idx: np.ndarray, graph_sim: np.ndarray, power: float):
    """The graph's weights ``max(cos, 0) ** power`` as a sparse (neighbour x prompt) CSR matrix.

    Row j lists the prompts that have j among their neighbours. A refit then
    touches only the rows of prompts with outcomes (``matrix[seen].T @ x``),
    so its cost grows with what the book has seen, not with the dataset: the
    first epoch of a million-prompt run costs little.
    """
    import scipy.sparse as sp

    n, k = graph_idx.shape
    w = np.clip(graph_sim, 0.0, None).astype(np.float32) ** np.float32(power)
    forward = sp.csr_matrix((w.ravel(), graph_idx.ravel(), np.arange(0, n * k + 1, k, dtype=np.int64)),
                            shape=(n, n))
    return forward.T.tocsr()


def neighbour_sums(graph_idx: np.ndarray, graph_sim: np.ndarray, rate: np.ndarray, weight: np.ndarray, *,
                   power: float, reverse=None, seen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: similarity-weighted sum of neighbours' rates and the sum of the weights.

    ``rate``/``weight``: each prompt's own (drift-adjusted) rate and effective
    attempts (0 for a prompt never seen: it contributes nothing). The
    neighbour rate shrunk by ``prior`` pseudo-attempts of the global rate g is
    ``(num + prior * g) / (den + prior)``; the book fits ``prior``.

    With ``reverse`` (:func:`reverse_weights`) and ``seen`` (indices of the
    prompts with outcomes; ``rate``/``weight`` then hold only their values), the
    sums come from the seen prompts' rows alone.
    """
    n = len(graph_idx)
    if graph_idx.shape[1] == 0:
        return np.zeros(n), np.zeros(n)
    if reverse is not None and seen is not None:
        if len(seen) == 0:
            return np.zeros(n), np.zeros(n)
        part = reverse[seen].T.tocsr()
        both = part @ np.stack([np.asarray(weight, float) * rate, np.asarray(weight, float)], axis=1)
        return both[:, 0], both[:, 1]
    w = np.clip(graph_sim, 0.0, None).astype(float) ** power * weight[graph_idx]
    return (w * rate[graph_idx]).sum(axis=1), w.sum(axis=1)
