"""Regularised logistic head on graded outcomes.

Each row contributes ``successes`` positive and ``attempts - successes``
negative observations (as sample weights), so 7/10 and 10/10 teach different
things. The regularisation strength ``C`` is chosen on the context itself by
an inner cross-validation of the binomial log-likelihood (one-standard-error
rule), and the Beta spread is calibrated on the same out-of-fold means.
With ``groups`` each context gets its own intercept (a one-hot block of
height ``group_scale``: larger lets the offsets move more freely under the
same L2 penalty).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_array
from preroll.validation import check_fitted

from preroll.beliefs import BetaPrediction
from preroll.heads.calibration import fit_concentration
from preroll.heads.groups import check_groups, with_group_block
from preroll.heads.selection import binomial_log_loss, inner_folds, one_se_choice


def _fit_binomial_logistic(X, successes, attempts, C):
    """A fitted model, or the constant rate when every outcome agrees (no decision boundary)."""
    n = len(X)
    XX = np.vstack([X, X])
    y = np.r_[np.ones(n), np.zeros(n)]
    sw = np.r_[successes, attempts - successes]
    keep = sw > 0
    if len(np.unique(y[keep])) < 2:
        return float(y[keep][0]) if keep.any() else 0.5
    return LogisticRegression(C=C, max_iter=2000).fit(XX[keep], y[keep], sample_weight=sw[keep])


def _proba(model, X) -> np.ndarray:
    """P(success): ``expit(X w + b)``, the binary model's ``predict_proba(X)[:, 1]`` without its per-call input
    validation, which cost more than the product itself when a router scores one prompt with nine heads."""
    if isinstance(model, float):
        return np.full(len(X), model)
    return expit(np.asarray(X, dtype=float) @ model.coef_[0] + model.intercept_[0])


class LogisticHead(BaseEstimator):
    """Binomial logistic regression with ``C`` picked by inner CV on the context."""

    def __init__(self, Cs=(0.03, 0.1, 0.3, 1.0), inner_splits: int = 3, group_scale: float = 3.0, seed: int = 0):
        self.Cs = Cs
        self.inner_splits = inner_splits
        self.group_scale = group_scale
        self.seed = seed

    def fit(self, X, successes, attempts, groups=None):
        X = check_array(X, dtype=float)
        s, a = np.asarray(successes, float), np.asarray(attempts, float)
        g = check_groups(groups, len(X))
        self.n_groups_ = 0 if g is None else int(g.max()) + 1
        Z = with_group_block(X, g, self.n_groups_, self.group_scale)
        Cs = sorted(self.Cs)  # ascending: the first candidate is the most regularised
        folds = inner_folds(len(Z), self.inner_splits, self.seed)
        oof = np.full((len(Cs), len(Z)), s.sum() / a.sum())
        for te in folds:
            tr = np.setdiff1d(np.arange(len(Z)), te)
            for j, C in enumerate(Cs):
                oof[j, te] = _proba(_fit_binomial_logistic(Z[tr], s[tr], a[tr], C), Z[te])
        loss = np.stack([binomial_log_loss(s, a, p) for p in oof])
        best = one_se_choice(loss, most_regular_last=False) if folds else len(Cs) // 2
        self.C_ = float(Cs[best])
        self.concentration_ = fit_concentration(oof[best], s, a)
        self.model_ = _fit_binomial_logistic(Z, s, a, self.C_)
        return self

    def predict(self, X, groups=None, *, check_input: bool = True) -> BetaPrediction:
        """Beta belief per row of ``X``; ``check_input=False`` skips the input validation for a caller that
        validated ``X`` once for several heads (it cost more than the product when a router scores one prompt)."""
        check_fitted(self, "model_")
        X = check_array(X, dtype=float) if check_input else X
        Z = with_group_block(X, check_groups(groups, len(X), self.n_groups_), self.n_groups_, self.group_scale)
        mean = _proba(self.model_, Z)
        return BetaPrediction.from_mean_concentration(mean, np.full(len(mean), self.concentration_))
