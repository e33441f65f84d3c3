"""Gaussian-process head: kernel regression on smoothed success rates.

Targets are the Beta-smoothed rates ``(s + 1) / (n + 2)``; the kernel is
``constant * RBF + white``, with its hyper-parameters set by maximising the
marginal likelihood on the context (no external tuning). The GP's posterior
variance plus the fitted noise level gives the belief's spread. ``groups``
enter as a one-hot block, so each context shifts the mean.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import pdist
from sklearn.base import BaseEstimator
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.utils.validation import check_array
from preroll.validation import check_fitted

from preroll.beliefs import BetaPrediction
from preroll.heads.groups import check_groups, with_group_block


class GPHead(BaseEstimator):
    def __init__(self, length_scale: float | None = None, n_restarts: int = 2, group_scale: float = 1.0,
                 seed: int = 0):
        self.length_scale = length_scale
        self.n_restarts = n_restarts
        self.group_scale = group_scale
        self.seed = seed

    def fit(self, X, successes, attempts, groups=None):
        X = check_array(X, dtype=float)
        g = check_groups(groups, len(X))
        self.n_groups_ = 0 if g is None else int(g.max()) + 1
        X = with_group_block(X, g, self.n_groups_, self.group_scale)
        y = (np.asarray(successes, float) + 1) / (np.asarray(attempts, float) + 2)
        # Start the length-scale at the median pairwise distance (scale-free start).
        # One row (or identical rows) has no pairwise distance: the median of none is NaN, which the
        # optimiser refuses as a bound; start at 1 then.
        d = pdist(X[:500])
        d = d[np.isfinite(d) & (d > 0)]
        ls = self.length_scale or (float(np.median(d)) if len(d) else 1.0)
        kernel = ConstantKernel(1.0, (1e-3, 1e2)) * RBF(ls, (ls / 100, ls * 100)) + WhiteKernel(0.5, (1e-4, 10.0))
        self.gp_ = GaussianProcessRegressor(kernel=kernel, normalize_y=True, n_restarts_optimizer=self.n_restarts,
                                            random_state=self.seed).fit(X, y)
        return self

    def predict(self, X, groups=None) -> BetaPrediction:
        check_fitted(self, "gp_")
        X = check_array(X, dtype=float)
        X = with_group_block(X, check_groups(groups, len(X), self.n_groups_), self.n_groups_, self.group_scale)
        mean, std = self.gp_.predict(X, return_std=True)
        return BetaPrediction.from_mean_var(np.clip(mean, 1e-3, 1 - 1e-3), std ** 2)
