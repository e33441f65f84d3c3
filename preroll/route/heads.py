"""Per-model success heads on a shared embedding matrix.

The router encodes each prompt once and gives the same embedding row to one
small head per model, so adding a model costs one dot product (or one
neighbour look-up) per prompt, not another encoder pass. These heads work on
embeddings directly; they are the routing path's own, kept separate from the
value model's in-context heads until that model exposes an embeddings-in API.

Every head takes graded outcomes (``successes`` of ``attempts``), because
routing histories are often rates (a model tried 5 times on a prompt), and
returns a success probability per row.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from preroll.route.errors import RouteError


class SuccessHead(Protocol):
    def fit(self, X: np.ndarray, successes: np.ndarray, attempts: np.ndarray) -> "SuccessHead": ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


def _as_binary_weighted(X, successes, attempts):
    """Split graded outcomes into weighted success and failure rows (what sklearn classifiers take)."""
    s = np.asarray(successes, float)
    f = np.asarray(attempts, float) - s
    Xb = np.concatenate([X, X])
    yb = np.concatenate([np.ones(len(s)), np.zeros(len(f))])
    wb = np.concatenate([s, f])
    keep = wb > 0
    return Xb[keep], yb[keep], wb[keep]


def _log_loss(s, a, p) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(s * np.log(p) + (a - s) * np.log(1 - p))


def _one_se_choice(loss: np.ndarray, *, most_regular_last: bool) -> int:
    """The most regularised candidate whose mean CV loss is within one standard error of the best.

    (The "one-standard-error rule".) Per-model log-loss is nearly flat around
    its minimum, while routing ranks prompts by *differences* between
    models' predictions, which noise in under-regularised heads hurts most;
    among statistically tied candidates the smoother one is the safer choice.
    """
    mean = loss.mean(axis=1)
    best = int(np.argmin(mean))
    se = loss[best].std(ddof=1) / np.sqrt(loss.shape[1]) if loss.shape[1] > 1 else 0.0
    ok = np.flatnonzero(mean <= mean[best] + se)
    return int(ok.max() if most_regular_last else ok.min())


class LogisticHead:
    """L2-regularised logistic regression on the embedding.

    ``C`` is chosen by prompt-level cross-validated log-loss on the history
    (``Cs`` candidates), because the right amount of shrinkage depends on how
    much history a model has: a few hundred rows need far more than ten
    thousand.
    """

    def __init__(self, Cs: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0), n_splits: int = 3,
                 random_state: int = 0) -> None:
        self.Cs = Cs
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, X, successes, attempts):
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, float)
        rate = np.asarray(successes, float) / np.asarray(attempts, float)
        self.C_ = self._select_C(X, successes, attempts) if len(self.Cs) > 1 else self.Cs[0]
        Xb, yb, wb = _as_binary_weighted(X, successes, attempts)
        if np.all(yb == yb[0]):
            self.model_ = None
            self.constant_ = float(rate.mean())
            return self
        self.model_ = LogisticRegression(C=self.C_, max_iter=2000).fit(Xb, yb, sample_weight=wb)
        return self

    def _select_C(self, X, successes, attempts) -> float:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import KFold

        n = len(X)
        k = min(self.n_splits, n)
        if k < 2:
            return self.Cs[len(self.Cs) // 2]
        s = np.asarray(successes, float)
        a = np.asarray(attempts, float)
        Cs = sorted(self.Cs)
        losses = np.zeros((len(Cs), n))
        for tr, te in KFold(k, shuffle=True, random_state=self.random_state).split(X):
            Xb, yb, wb = _as_binary_weighted(X[tr], s[tr], a[tr])
            for j, C in enumerate(Cs):
                if np.all(yb == yb[0]):
                    p = np.full(len(te), yb[0])
                else:
                    p = LogisticRegression(C=C, max_iter=2000).fit(Xb, yb, sample_weight=wb).predict_proba(X[te])[:, 1]
                losses[j, te] = _log_loss(s[te], a[te], p)
        # Cs ascend: the first candidate is the most regularised
        return float(Cs[_one_se_choice(losses, most_regular_last=False)])

    def predict(self, X):
        X = np.asarray(X, float)
        if self.model_ is None:
            return np.full(len(X), self.constant_)
        return self.model_.predict_proba(X)[:, 1]


def _unit_rows(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norm = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norm > 0, norm, 1.0)


def _nearest(Q: np.ndarray, H: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Indices of the ``k`` rows of ``H`` most cosine-similar to each row of ``Q`` (both unit rows), nearest first.

    A plain matrix product and a partial sort: on a routing request (one
    prompt against a few thousand history rows) this is well under a
    millisecond, where a general neighbours index re-validates and
    re-normalises the whole history on every query.
    """
    k = min(k, len(H))
    out = np.empty((len(Q), k), dtype=np.int64)
    for start in range(0, len(Q), chunk):
        S = Q[start:start + chunk] @ H.T
        top = np.argpartition(-S, k - 1, axis=1)[:, :k] if k < len(H) else np.broadcast_to(np.arange(len(H)), S.shape)
        order = np.argsort(-np.take_along_axis(S, top, axis=1), axis=1, kind="stable")
        out[start:start + chunk] = np.take_along_axis(top, order, axis=1)
    return out


class KNNHead:
    """Mean outcome of the ``k`` nearest history prompts (cosine), shrunk to the global rate.

    The shrinkage (``prior`` pseudo-attempts at the history's mean rate)
    keeps a prompt whose neighbours happen to be all-wrong from scoring 0.
    ``k="auto"`` picks ``k`` from ``ks`` by cross-validated log-loss on the
    history: one neighbour search per fold at the largest ``k`` serves every
    candidate, so the choice is cheap.
    """

    def __init__(self, k: int | str = "auto", prior: float = 2.0,
                 ks: tuple[int, ...] = (10, 25, 50, 100, 200, 400), n_splits: int = 4, random_state: int = 0) -> None:
        self.k = k
        self.prior = prior
        self.ks = ks
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, X, successes, attempts):
        X = _unit_rows(X)
        self.s_ = np.asarray(successes, float)
        self.a_ = np.asarray(attempts, float)
        self.base_ = float(self.s_.sum() / self.a_.sum())
        k = self._select_k(X) if self.k == "auto" else int(self.k)
        self.k_ = max(1, min(k, len(X)))
        self.X_ = X
        return self

    def _rates(self, s_nb: np.ndarray, a_nb: np.ndarray, base: float) -> np.ndarray:
        return (s_nb.sum(axis=1) + self.prior * base) / (a_nb.sum(axis=1) + self.prior)

    def _select_k(self, X) -> int:
        from sklearn.model_selection import KFold

        n = len(X)
        ks = [k for k in self.ks if k < n * (1 - 1 / self.n_splits)] or [max(1, n // 2)]
        if n < 2 * self.n_splits:
            return ks[0]
        loss = np.zeros((len(ks), n))
        for tr, te in KFold(self.n_splits, shuffle=True, random_state=self.random_state).split(X):
            idx = _nearest(X[te], X[tr], max(ks))
            s_tr, a_tr = self.s_[tr], self.a_[tr]
            base = float(s_tr.sum() / a_tr.sum())
            for i, k in enumerate(ks):
                p = self._rates(s_tr[idx[:, :k]], a_tr[idx[:, :k]], base)
                loss[i, te] = _log_loss(self.s_[te], self.a_[te], p)
        # ks ascend: the last candidate is the most regularised
        return int(ks[_one_se_choice(loss, most_regular_last=True)])

    def predict(self, X):
        idx = _nearest(_unit_rows(X), self.X_, self.k_)
        return self._rates(self.s_[idx], self.a_[idx], self.base_)


class EnsembleHead:
    """Mean of several heads' probabilities.

    A linear head captures smooth trends across the whole embedding space, a
    neighbour head local pockets of difficulty; on MMLU routing their average
    beats either alone (see docs/route.md).
    """

    def __init__(self, heads: tuple = ()) -> None:
        self.heads = heads

    def fit(self, X, successes, attempts):
        import copy

        heads = self.heads or (LogisticHead(), KNNHead())
        self.heads_ = [copy.deepcopy(h).fit(X, successes, attempts) for h in heads]
        return self

    def predict(self, X):
        return np.mean([h.predict(X) for h in self.heads_], axis=0)


HEADS = {"ensemble": EnsembleHead, "logistic": LogisticHead, "knn": KNNHead}


def make_head(head) -> SuccessHead:
    """A fresh head from a name (``auto``, ``logistic``, ``knn``) or a head instance to clone."""
    if isinstance(head, str):
        name = "ensemble" if head == "auto" else head
        try:
            return HEADS[name]()
        except KeyError:
            raise RouteError(f"unknown head {head!r}; choose one of 'auto', {', '.join(map(repr, HEADS))}") from None
    if hasattr(head, "fit") and hasattr(head, "predict"):
        import copy

        return copy.deepcopy(head)
    raise RouteError(f"head must be a name or an object with fit(X, successes, attempts) and predict(X); got {head!r}")
