"""TabPFN head (optional extra): the in-context learner V_0 used.

Needs ``pip install 'preroll[tabpfn]'`` *and* its weights on disk; TabPFN
downloads them from a model hub on first use, which fails offline. We check
both up front and say exactly what is missing.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from preroll.validation import check_fitted

from preroll.beliefs import BetaPrediction
from preroll.errors import PrerollError
from preroll.heads.calibration import fit_concentration
from preroll.heads.groups import check_groups, with_group_block


class TabPFNUnavailable(PrerollError, RuntimeError):
    """The optional TabPFN package or its weights are missing (an install step, not a bug)."""


class TabPFNHead(BaseEstimator):
    def __init__(self, model_path: str | None = None):
        self.model_path = model_path

    def fit(self, X, successes, attempts, groups=None):
        g = check_groups(groups, len(X))
        self.n_groups_ = 0 if g is None else int(g.max()) + 1
        X = with_group_block(np.asarray(X, float), g, self.n_groups_, 1.0)
        try:
            from tabpfn import TabPFNRegressor
        except ImportError:
            raise TabPFNUnavailable(
                "the 'tabpfn' head needs the TabPFN package: pip install 'preroll[tabpfn]'") from None
        try:
            kw = {"model_path": self.model_path} if self.model_path else {}
            self.model_ = TabPFNRegressor(**kw)
            y = np.asarray(successes, float) / np.asarray(attempts, float)
            self.model_.fit(np.asarray(X), y)
        except Exception as exc:  # weight download / load failures surface here
            raise TabPFNUnavailable(
                f"TabPFN could not load its weights ({exc}); it fetches them from a model hub, which is "
                "unreachable here. Download them where a hub is reachable and pass model_path=...") from None
        self.concentration_ = fit_concentration(self.model_.predict(np.asarray(X)), successes, attempts)
        return self

    def predict(self, X, groups=None) -> BetaPrediction:
        check_fitted(self, "model_")
        X = np.asarray(X, float)
        X = with_group_block(X, check_groups(groups, len(X), self.n_groups_), self.n_groups_, 1.0)
        mean = np.clip(self.model_.predict(X), 1e-3, 1 - 1e-3)
        return BetaPrediction.from_mean_concentration(mean, np.full(len(mean), self.concentration_))
