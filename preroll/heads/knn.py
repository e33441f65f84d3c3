"""k-nearest-neighbour head with Beta smoothing.

The query's belief is a Beta prior (the context's pooled rate, with strength
``prior_strength``) updated by the similarity-weighted successes and failures
of its ``k`` nearest context prompts, scaled to ``evidence_per_neighbour``
pseudo-observations each. Few or distant neighbours leave a wide belief.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_array, check_is_fitted

from preroll.heads.base import BetaPrediction


class KNNBetaHead(BaseEstimator):
    def __init__(self, k: int = 25, prior_strength: float = 2.0, evidence_per_neighbour: float = 1.0):
        self.k = k
        self.prior_strength = prior_strength
        self.evidence_per_neighbour = evidence_per_neighbour

    def fit(self, X, successes, attempts, sample_weight=None):
        X = check_array(X, dtype=float)
        self.rates_ = np.asarray(successes, float) / np.asarray(attempts, float)
        self.weights_ = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, float)
        self.prior_mean_ = float(np.average(self.rates_, weights=self.weights_))
        self.nn_ = NearestNeighbors(n_neighbors=min(self.k, len(X)), metric="cosine").fit(X)
        return self

    def predict(self, X) -> BetaPrediction:
        check_is_fitted(self, "nn_")
        dist, idx = self.nn_.kneighbors(check_array(X, dtype=float))
        sim = np.clip(1.0 - dist, 0.0, None) * self.weights_[idx]
        ev = self.evidence_per_neighbour * sim
        succ = (ev * self.rates_[idx]).sum(1)
        fail = (ev * (1 - self.rates_[idx])).sum(1)
        a0 = self.prior_strength * self.prior_mean_
        b0 = self.prior_strength * (1 - self.prior_mean_)
        return BetaPrediction(alpha=a0 + succ, beta=b0 + fail)
