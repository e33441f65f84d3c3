"""k-nearest-neighbour head with Beta smoothing.

A query's rate is the pooled outcome of its ``k`` most cosine-similar
history prompts, each weighted by ``max(similarity, 0) ** weight_power`` (a
near-duplicate problem says far more than a loosely related one), shrunk
towards the history's base rate by ``prior`` attempts' worth of evidence (so
a prompt whose few neighbours all failed does not score 0). ``k="auto"`` picks ``k`` by cross-validated log-loss on the history; one
neighbour search per fold at the largest ``k`` serves every candidate.

With ``groups``, each neighbour counts by how far it sits above or below its
*own* context's base rate, and the query's context's base rate is added
back: a neighbour from a stronger checkpoint says "easier than average", not
"solved".

The belief's spread is the beta-binomial concentration fitted on the
out-of-fold rates (as for the logistic head).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_array
from preroll.validation import check_fitted

from preroll.beliefs import BetaPrediction
from preroll.heads.calibration import fit_concentration
from preroll.heads.groups import check_groups
from preroll.heads.selection import binomial_log_loss, inner_folds, one_se_choice


def unit_rows(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)


def nearest(Q: np.ndarray, H: np.ndarray, k: int, chunk: int = 1024, *, return_similarity: bool = False):
    """Indices of the ``k`` rows of ``H`` most cosine-similar to each row of ``Q`` (both unit rows), nearest first.

    With ``return_similarity``, also their cosine similarities (same shape).

    A plain matrix product and a partial sort: one prompt against a few
    thousand history rows is well under a millisecond, where a general
    neighbours index re-validates the whole history on every query (it
    matters on the routing path).
    """
    k = min(k, len(H))
    out = np.empty((len(Q), k), dtype=np.int64)
    sim = np.empty((len(Q), k), dtype=np.float32)
    for start in range(0, len(Q), chunk):
        out[start:start + chunk], sim[start:start + chunk] = top_k(Q[start:start + chunk] @ H.T, k)
    return (out, sim) if return_similarity else out


def top_k(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row of the similarity block ``S`` (queries x history), the ``k`` most similar columns, nearest first,
    and their similarities: the partial sort of :func:`nearest`, for a caller that already holds ``S``."""
    k = min(k, S.shape[1])
    top = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < S.shape[1] else np.broadcast_to(np.arange(S.shape[1]), S.shape)
    top_sim = np.take_along_axis(S, top, axis=1)
    order = np.argsort(-top_sim, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sim, order, axis=1)


class KNNBetaHead(BaseEstimator):
    """Shrunk mean outcome of the ``k`` nearest history prompts (cosine)."""

    def __init__(self, k: int | str = "auto", prior: float = 2.0, weight_power: float = 4.0,
                 ks=(10, 25, 50, 100, 200, 400), inner_splits: int = 4, seed: int = 0):
        self.k = k
        self.prior = prior
        self.weight_power = weight_power
        self.ks = ks
        self.inner_splits = inner_splits
        self.seed = seed

    @staticmethod
    def _base_rates(s, a, g, n_groups) -> np.ndarray:
        overall = s.sum() / a.sum()
        num = np.bincount(g, weights=s, minlength=n_groups)
        den = np.bincount(g, weights=a, minlength=n_groups)
        return np.where(den > 0, num / np.where(den > 0, den, 1), overall)

    def _rates(self, idx, sim, s, a, g, base, q_groups) -> np.ndarray:
        # Weighted excess successes over each neighbour's own base rate, shrunk, on top of the query's base.
        w = np.clip(sim, 0.0, None) ** self.weight_power
        excess = (w * (s[idx] - a[idx] * base[g[idx]])).sum(axis=1)
        return np.clip(base[q_groups] + excess / ((w * a[idx]).sum(axis=1) + self.prior), 1e-4, 1 - 1e-4)

    def fit(self, X, successes, attempts, groups=None):
        X = unit_rows(check_array(X, dtype=float))
        s, a = np.asarray(successes, float), np.asarray(attempts, float)
        g = check_groups(groups, len(X))
        g = np.zeros(len(X), int) if g is None else g
        self.n_groups_ = int(g.max()) + 1
        ks = [k for k in self.ks if k < len(X) * (1 - 1 / self.inner_splits)] or [max(1, len(X) // 2)]
        folds = inner_folds(len(X), self.inner_splits, self.seed)
        oof = np.full((len(ks), len(X)), s.sum() / a.sum())
        for te in folds:
            tr = np.setdiff1d(np.arange(len(X)), te)
            base = self._base_rates(s[tr], a[tr], g[tr], self.n_groups_)
            idx, sim = nearest(X[te], X[tr], max(ks), return_similarity=True)
            for j, k in enumerate(ks):
                oof[j, te] = self._rates(idx[:, :k], sim[:, :k], s[tr], a[tr], g[tr], base, g[te])
        if self.k == "auto":
            loss = np.stack([binomial_log_loss(s, a, p) for p in oof])
            # ks ascend: the last candidate is the most regularised
            j = one_se_choice(loss, most_regular_last=True) if folds else 0
            self.k_ = int(ks[j])
        else:
            self.k_ = max(1, min(int(self.k), len(X)))
            j = int(np.argmin([abs(k - self.k_) for k in ks]))
        self.concentration_ = fit_concentration(oof[j], s, a) if folds else 2.0 + self.prior
        self.X_, self.s_, self.a_, self.g_ = X, s, a, g
        self.base_ = self._base_rates(s, a, g, self.n_groups_)
        return self

    def predict(self, X, groups=None, *, similarity=None, check_input: bool = True) -> BetaPrediction:
        """Beta belief per row of ``X``.

        ``similarity``: the rows' cosine similarities to the fitted history (``unit(X) @ X_.T``, queries x
        history), when the caller has them already: a router whose nine heads share one history computes
        that product once instead of nine times (each reads the whole history from memory). ``check_input=False``
        skips the input validation for a caller that validated ``X`` once for several heads (scikit-learn's
        trees have the same switch).
        """
        check_fitted(self, "X_")
        X = check_array(X, dtype=float) if check_input else X
        q = check_groups(groups, len(X), self.n_groups_)
        q = np.zeros(len(X), int) if q is None else q
        if similarity is None:
            idx, sim = nearest(unit_rows(X), self.X_, self.k_, return_similarity=True)
        else:
            similarity = np.asarray(similarity, dtype=np.float32)
            if similarity.shape != (len(X), len(self.X_)):
                raise ValueError(f"similarity has shape {similarity.shape}, expected {(len(X), len(self.X_))}")
            idx, sim = top_k(similarity, self.k_)
        mean = self._rates(idx, sim, self.s_, self.a_, self.g_, self.base_, q)
        return BetaPrediction.from_mean_concentration(mean, np.full(len(mean), self.concentration_))
