"""Regularised logistic head on graded outcomes.

Each row contributes ``successes`` positive and ``attempts - successes``
negative observations (as sample weights), so 7/10 and 10/10 teach different
things. The regularisation strength ``C`` is chosen on the context itself by
an inner cross-validation on the binomial log-likelihood, then the Beta
spread is calibrated on the same out-of-fold means.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_array, check_is_fitted

from preroll.heads.base import BetaPrediction
from preroll.heads.calibration import fit_concentration, oof_indices


def _fit_binomial_logistic(X, successes, attempts, C, weight=None):
    n = len(X)
    w = np.ones(n) if weight is None else weight
    XX = np.vstack([X, X])
    y = np.r_[np.ones(n), np.zeros(n)]
    sw = np.r_[successes * w, (attempts - successes) * w]
    keep = sw > 0
    model = LogisticRegression(C=C, max_iter=2000)
    model.fit(XX[keep], y[keep], sample_weight=sw[keep])
    return model


class LogisticHead(BaseEstimator):
    """Binomial logistic regression with ``C`` picked by inner CV on the context."""

    def __init__(self, Cs=(0.3, 1.0, 3.0), inner_splits: int = 3, seed: int = 0):
        self.Cs = Cs
        self.inner_splits = inner_splits
        self.seed = seed

    def fit(self, X, successes, attempts, sample_weight=None):
        X = check_array(X, dtype=float)
        s, a = np.asarray(successes, float), np.asarray(attempts, float)
        folds = oof_indices(len(X), self.inner_splits, self.seed)
        best = None
        for C in self.Cs:
            oof = np.empty(len(X))
            for te in folds:
                tr = np.setdiff1d(np.arange(len(X)), te)
                w = None if sample_weight is None else sample_weight[tr]
                oof[te] = _fit_binomial_logistic(X[tr], s[tr], a[tr], C, w).predict_proba(X[te])[:, 1]
            p = np.clip(oof, 1e-4, 1 - 1e-4)
            ll = np.sum(s * np.log(p) + (a - s) * np.log(1 - p))
            if best is None or ll > best[0]:
                best = (ll, C, oof)
        _, self.C_, oof = best
        self.concentration_ = fit_concentration(oof, s, a)
        self.model_ = _fit_binomial_logistic(X, s, a, self.C_, sample_weight)
        return self

    def predict(self, X) -> BetaPrediction:
        check_is_fitted(self, "model_")
        mean = self.model_.predict_proba(check_array(X, dtype=float))[:, 1]
        return BetaPrediction.from_mean_concentration(mean, np.full(len(mean), self.concentration_))
