"""Neighbour rates over a difficulty shared by every model: a router's model for bandit histories.

Why: a live router learns only the outcome of the model it chose, and it leaves its greedy choice mostly
where that model looks weak, on hard prompts. Each explored model's outcomes then come from harder prompts
than the greedy model's, and a head fitted on one model's outcomes alone reads "this model is weak" where
the truth is "these prompts are hard" (on one stream the best model's history mean was 0.44 against a true
0.61). Here a prompt's difficulty is learnt from *every* model's outcomes near it, and each model is judged
by how it did against that difficulty:

``p(q, j) = b_j + d(q) + e_j(q)``

* ``d(q)``: the similarity-weighted mean residual ``y - b_model`` of the ``k`` history prompts nearest to
  ``q``, over all models' outcomes, shrunk to 0 by ``prior`` attempts. For the history's own prompts it is
  taken leave-one-out, so a row does not explain itself.
* ``b_j``: model ``j``'s mean of ``y - d(row)`` over its outcomes, i.e. its rate on a prompt of average
  difficulty; ``b`` and the rows' ``d`` are refined in turn ``iterations`` times (backfitting). A model
  explored on hard prompts is no longer read as a weak model.
* ``e_j(q)``: what is left for model ``j``, ``y - b_j - d(row)``, pooled over the ``k`` nearest of *its*
  outcomes and shrunk to 0 the same way: where a model is better or worse than the prompts' difficulty says.

Neighbours are weighted by ``max(cosine, 0) ** weight_power``, as in :class:`preroll.heads.KNNBetaHead`.
The belief per (prompt, model) is a Beta with that mean and concentration the model's own attempts near the
prompt, each weighted as above, plus ``prior``: a model rarely tried near a prompt keeps a wide belief, which
Thompson sampling and the spread-reading rules read.

A long-lived router's history outgrows a search of every row against every row: the difficulty's
leave-one-out search makes a fit ``n^2`` (at the refit window's 147,000 rows for nine models, six to ten
minutes extrapolated). Past ``max_reference`` rows that search reads a seeded uniform sample of the rows
instead, which bounds a fit at ``n * max_reference`` (36 s at 147,000 rows). The per-model residuals still
read every row of their own: on the streams' logs, thinning them too cost a router most of its gain (a
quarter of the rows kept: frozen +1.2 points against +2.4), thinning only the difficulty's search cost 0.2
(RESULTS.md, "Live routing, seventh round"). So a decision still reads every row once (one prompt: 4 ms p50
against 36,000 rows, 16 ms against 147,000; ``benchmarks/route_difficulty_scale.py``).

Measured (RESULTS.md, "Live routing, sixth round"): as the explore router's own head on twelve never-run
streams, +0.58 points over the best single model over the last 3,000 requests (above it on 11 of 12) and
+2.29 frozen, against -0.05 and +1.63 for the per-model heads; with full labels 0.4 points behind them. So
``head="auto"`` is this model on a bandit log only (:data:`preroll.defaults.BANDIT_MODELS_PER_PROMPT`).
``prior`` 1 rather than 2 ("seventh round"): on twelve more never-run streams +0.37 and +2.07 against -0.07
and +1.45 (paired +0.44 and +0.62); a lighter shrinkage lets a model's own neighbours speak sooner.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array

from preroll.beliefs import BetaPrediction
from preroll.heads.knn import nearest, top_k, unit_rows
from preroll.validation import check_fitted

_EPS = 1e-4


class SharedDifficultyKNN(BaseEstimator):
    """Success beliefs for ``m`` models: model offset + shared neighbour difficulty + per-model neighbour residual.

    ``fit(X, Y, W=None)``: ``X`` (n, d) embeddings, ``Y`` (n, m) success rates in [0, 1] with ``NaN`` where a
    model has no outcome on a prompt, ``W`` (n, m) attempts behind each rate (default 1 where observed).
    ``predict(X)`` returns a :class:`BetaPrediction` whose arrays are (n, m), the interface of
    :class:`preroll.route.joint.JointSuccessModel`. ``max_reference``: most rows the difficulty's neighbour
    searches read (None: every row); ``random_state`` seeds which rows, when there are more.
    """

    def __init__(self, k: int = 200, prior: float = 1.0, weight_power: float = 4.0, iterations: int = 4,
                 max_reference: int | None = 16_384, random_state: int | None = 0):
        self.k = k
        self.prior = prior
        self.weight_power = weight_power
        self.iterations = iterations
        self.max_reference = max_reference
        self.random_state = random_state

    def _weights(self, sim: np.ndarray) -> np.ndarray:
        return np.clip(sim, 0.0, None) ** self.weight_power

    def _pooled(self, idx, w, num_rows, den_rows):
        """``sum w * num / (sum w * den + prior)`` over each query's neighbours (weights ``w`` from
        :meth:`_weights`), and ``sum w * den``: the attempts' worth of evidence behind it (a neighbour as similar
        as the prompt itself counts in full, one at cosine 0.5 for 1/16 at ``weight_power`` 4; a count of
        neighbours would not see how far they are)."""
        evidence = (w * den_rows[idx]).sum(axis=1)
        return (w * num_rows[idx]).sum(axis=1) / (evidence + self.prior), evidence

    def _reference(self, n: int) -> np.ndarray | None:
        """The rows the difficulty's neighbour searches read: None (every row) up to ``max_reference``, past it
        a seeded uniform sample of that many (sorted)."""
        cap = self.max_reference
        if cap is None or n <= cap:
            return None
        if cap < 1:
            raise ValueError(f"max_reference must be at least 1, got {cap}")
        return np.sort(np.random.default_rng(self.random_state).choice(n, cap, replace=False))

    def fit(self, X, Y, W=None) -> "SharedDifficultyKNN":
        X = unit_rows(check_array(X, dtype=np.float32))
        Y = np.asarray(Y, dtype=float)
        if Y.ndim != 2 or len(Y) != len(X):
            raise ValueError(f"Y must be (n_prompts, n_models) with n_prompts = {len(X)}, got shape {Y.shape}")
        seen = ~np.isnan(Y)
        W = np.where(seen, 1.0, 0.0) if W is None else np.where(seen, np.asarray(W, dtype=float), 0.0)
        if (W.sum(axis=0) <= 0).any():
            raise ValueError("every model needs at least one observed outcome")
        Yz = np.where(seen, Y, 0.0)
        n = len(X)
        ref = self._reference(n)
        rows = np.arange(n) if ref is None else ref      # the difficulty's reference rows
        Xr, Yr, Wr = (X, Yz, W) if ref is None else (X[ref], Yz[ref], W[ref])
        # The rows' leave-one-out neighbours do not change while b and d are refined: one search.
        if n > 1:
            idx, sim = nearest(X, Xr, min(self.k + 1, len(rows)), return_similarity=True)
            keep = rows[idx] != np.arange(n)[:, None]
            w = self._weights(np.where(keep, sim, 0.0))  # self gets weight 0 (max(0, 0) ** p)
        row_w = Wr.sum(axis=1)
        b = (Yz * W).sum(axis=0) / W.sum(axis=0)
        d = np.zeros(n)
        for _ in range(max(1, int(self.iterations))):
            resid_rows = ((Yr - b) * Wr).sum(axis=1)
            d = self._pooled(idx, w, resid_rows, row_w)[0] if n > 1 else np.zeros(n)
            b = ((Yz - d[:, None]) * W).sum(axis=0) / W.sum(axis=0)
        self.X_ = X
        self.W_ = W
        self.offset_ = b
        self.reference_ = ref
        self.resid_rows_ = ((Yr - b) * Wr).sum(axis=1)   # the difficulty's evidence per reference row
        self.row_attempts_ = row_w
        self.excess_ = (Yz - b - d[:, None]) * W           # what is left per (row, model), attempt-weighted
        self.model_rows_ = [np.flatnonzero(W[:, j] > 0) for j in range(W.shape[1])]
        self.n_models_ = W.shape[1]
        return self

    def predict(self, X) -> BetaPrediction:
        check_fitted(self, "X_")
        Q = unit_rows(check_array(X, dtype=np.float32))
        mean = np.empty((len(Q), self.n_models_))
        conc = np.empty_like(mean)
        chunk = max(16, min(1024, 2 ** 24 // max(1, len(self.X_))))   # a similarity block of at most 64 MB
        for start in range(0, len(Q), chunk):
            S = Q[start:start + chunk] @ self.X_.T
            idx, sim = top_k(S if self.reference_ is None else S[:, self.reference_], self.k)
            d = self._pooled(idx, self._weights(sim), self.resid_rows_, self.row_attempts_)[0]
            rows = slice(start, start + len(S))
            for j, own in enumerate(self.model_rows_):
                jdx, jsim = top_k(S[:, own], self.k)
                e, evidence = self._pooled(jdx, self._weights(jsim), self.excess_[own, j], self.W_[own, j])
                mean[rows, j] = self.offset_[j] + d + e
                conc[rows, j] = evidence + self.prior
        return BetaPrediction.from_mean_concentration(np.clip(mean, _EPS, 1 - _EPS), conc)
