"""An equal mixture of heads: a linear trend plus local pockets of difficulty.

A linear head captures smooth trends across the whole embedding space, a
neighbour head local clusters (a family of near-identical problems) that a
linear map cannot carve out. Measured: their average beats either alone on
MMLU routing (docs/route.md) and is the router's ``"auto"``; on DAPO-Math
cold prompts it ranks slightly below the logistic head alone (0.693 vs
0.698, docs/encoders.md), so the value model defaults to the logistic head.
The belief is the mixture's: its mean is the heads' mean,
its variance the mixture variance, moment-matched to one Beta.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, clone
from preroll.validation import check_fitted

from preroll.beliefs import BetaPrediction


class EnsembleHead(BaseEstimator):
    def __init__(self, heads=None):
        self.heads = heads

    def fit(self, X, successes, attempts, groups=None):
        from preroll.heads.knn import KNNBetaHead
        from preroll.heads.logistic import LogisticHead

        heads = self.heads if self.heads else (LogisticHead(), KNNBetaHead())
        self.heads_ = [clone(h).fit(X, successes, attempts, groups=groups) for h in heads]
        return self

    def predict(self, X, groups=None, *, similarity=None, check_input: bool = True) -> BetaPrediction:
        """The mixture's Beta belief per row of ``X``.

        ``similarity`` and ``check_input`` go to the parts that take them (the kNN head its similarity to the
        history, see :meth:`~preroll.heads.knn.KNNBetaHead.predict`); other parts get ``X`` alone.
        """
        check_fitted(self, "heads_")
        preds = [h.predict(X, groups=groups, **predict_options(h, similarity, check_input)) for h in self.heads_]
        means = np.stack([p.p_success for p in preds])
        second = np.stack([p.var + p.p_success ** 2 for p in preds]).mean(axis=0)
        mean = means.mean(axis=0)
        return BetaPrediction.from_mean_var(mean, second - mean ** 2)


def predict_options(head, similarity, check_input: bool) -> dict:
    """The fast-path keywords ``head.predict`` understands (preroll's own heads); none for any other head.

    One table for every caller that hands heads a precomputed similarity or skips their input check (this
    mixture's parts, and the router's shared neighbour search)."""
    from preroll.heads.knn import KNNBetaHead
    from preroll.heads.logistic import LogisticHead

    if similarity is None and check_input:
        return {}
    if isinstance(head, (KNNBetaHead, EnsembleHead)):
        return {"similarity": similarity, "check_input": check_input}
    if isinstance(head, LogisticHead):
        return {"check_input": check_input}
    return {}
