"""One model of success for all candidate models, fitted jointly.

Why not one head per model: heads fitted apart are each shrunk toward their own
base rate with their own regularisation, so their outputs are not calibrated
against each other, and an argmax over them follows whichever model has the
highest overall rate whenever per-prompt differences are small. Routing needs
the *differences* between candidates on a prompt, so this model learns all
candidates from the same rows at once, from several parts
(:mod:`preroll.route.parts`) that each see a different structure:

* **shared-neighbour rates** at several neighbourhood sizes ``ks`` (every
  model pooled over the *same* neighbours, so a difference between two models
  is measured on identical prompts; leave-one-out on the history);
* a **shared trunk** network with one output vector per model (matrix
  factorisation / EmbedLLM style), ``members`` networks cross-fitted;
* a **per-model linear (logistic) part** at each penalty in ``linear_l2``;
* **topic rates**: KMeans clusters of the history (each size in ``clusters``)
  and every model's rate per cluster -- the per-cluster-best router as a part.

**Stacking and calibration.** Every part yields out-of-fold predictions for
every history row (the same ``members`` folds; leave-one-out for the
neighbours). Each part's logits are split into the prompt's difficulty (their
mean over the models) and each model's difference from it. Per model, a
logistic regression on those with non-negative weights (stacking after Breiman: no part enters with a negative
sign) is fitted on those out-of-fold predictions; it is at once the blend and
the per-model calibration map, so ``0.7`` means 70% for every model. It is
shrunk toward the plain average of the parts by :data:`PLATT_PRIOR`
pseudo-observations, so a handful of outcomes cannot stretch it. New prompts
go through the parts refitted on the whole history (the trunk: the mean of
the cross-fitted members) and the same stacker.

**Uncertainty.** The belief per (prompt, model) is a Beta with the stacked
mean and concentration = the neighbourhood's effective number of observed
rows for that model (at the ``k`` with the lowest leave-one-out loss) plus
``prior``: a model rarely seen near the prompt gets a wide belief, which the
default-aware rule reads.

Missing entries (``NaN`` in ``Y``) are left out of every sum and loss.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from preroll.beliefs import BetaPrediction
from preroll.heads.knn import unit_rows
from preroll.heads.selection import inner_folds
from preroll.route.parts import ClusterPart, LinearPart, TrunkNet, base_rates, neighbours, pool_neighbours

_EPS = 1e-4


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def masked_log_loss(Y: np.ndarray, W: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Per-model mean cross-entropy of graded targets ``Y`` over observed cells (``W > 0``)."""
    p = np.clip(P, _EPS, 1 - _EPS)
    y = np.nan_to_num(Y)
    cell = -(y * np.log(p) + (1 - y) * np.log1p(-p)) * W
    return cell.sum(axis=0) / np.maximum(W.sum(axis=0), 1e-12)


class JointSuccessModel(BaseEstimator):
    """Calibrated success beliefs for ``m`` models from one shared prompt representation.

    ``fit(X, Y, W=None)``: ``X`` (n, d) embeddings, ``Y`` (n, m) success rates
    in [0, 1] with ``NaN`` where a model has no outcome on a prompt, ``W`` (n,
    m) attempts behind each rate (default 1 where observed). ``predict(X)``
    returns a :class:`BetaPrediction` whose arrays are (n, m).

    Parameters
    ----------
    ks:
        Neighbourhood sizes, each a part (those below the history size); the one
        with the lowest leave-one-out log-loss also sets the belief's concentration.
    prior:
        Rows' worth of each model's base rate added to every neighbourhood and cluster.
    hidden, members, epochs, dropout, weight_decay, lr:
        The trunk network: hidden width, number of cross-fitted networks (also
        the number of folds every part is cross-fitted on), passes over the
        data, dropout on input and hidden layer, AdamW decay and step size.
    linear_l2:
        Ridge penalties of the per-model linear parts, against the loss summed
        over prompts (one part each; empty: none). The defaults equal the
        per-prompt penalties 1e-4 and 1e-3 chosen on a 4,486-prompt history.
    clusters:
        KMeans sizes of the topic parts (each used when the history has at
        least ``10 *`` that many prompts; empty: none).

    Fitted: ``part_names_``; ``weights_`` (m, 2c + 1): per model, the weights of
    the parts' difficulty, then of their differences, then the intercept;
    ``part_losses_`` and ``stacked_loss_`` (out-of-fold log-loss on the
    history); ``k_`` and ``knn_losses_`` (leave-one-out loss per ``k``).
    """

    def __init__(self, ks=(10, 25, 50, 100, 200, 400), prior: float = 2.0, hidden: int = 256, members: int = 3,
                 epochs: int = 30, dropout: float = 0.3, weight_decay: float = 1e-4, lr: float = 2e-3,
                 linear_l2=(0.5, 5.0), clusters=(10, 20, 40, 80), seed: int = 0):
        self.ks = ks
        self.prior = prior
        self.hidden = hidden
        self.members = members
        self.epochs = epochs
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.linear_l2 = linear_l2
        self.clusters = clusters
        self.seed = seed

    # ------------------------------------------------------------------ fit

    def fit(self, X, Y, W=None) -> "JointSuccessModel":
        X = unit_rows(X)
        Y = np.asarray(Y, dtype=float)
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"Y must be (n_prompts, n_models) = ({X.shape[0]}, m), got {Y.shape}")
        observed = np.isfinite(Y)
        if np.any((Y[observed] < 0) | (Y[observed] > 1)):
            raise ValueError("success rates must lie in [0, 1]")
        W = observed.astype(float) if W is None else np.where(observed, np.asarray(W, float), 0.0)
        if np.any(W.sum(axis=0) <= 0):
            raise ValueError("every model needs at least one observed outcome")
        Yz = np.where(observed, Y, 0.0)
        n = len(X)
        self.n_models_ = Y.shape[1]
        self.base_rate_ = base_rates(Yz, W)
        self.X_, self.Yz_, self.W_ = X, Yz, W

        oof: dict[str, np.ndarray] = {}
        # Neighbour parts: leave-one-out rates for every k from one search.
        self.ks_ = sorted({int(k) for k in self.ks if 0 < int(k) < n}) or [max(1, n - 1)]
        pooled = pool_neighbours(*neighbours(X, X, max(self.ks_), leave_one_out=True), self.ks_, Yz, W,
                                 self.base_rate_, self.prior)
        for k in self.ks_:
            oof[f"knn{k}"] = pooled[k][0]
        self.knn_losses_ = {k: float(masked_log_loss(Y, W, oof[f"knn{k}"]).mean()) for k in self.ks_}
        self.k_ = min(self.knn_losses_, key=self.knn_losses_.get)

        # Fitted parts: cross-fitted on the same folds; the trunk keeps its members, the others are refitted.
        makers = self._makers(n)
        folds = inner_folds(n, max(2, self.members), self.seed)[:self.members] if n >= 2 else []
        covered = np.zeros(n, dtype=bool)
        members = []
        for i, held in enumerate(folds):
            train = np.setdiff1d(np.arange(n), held)
            covered[held] = True
            for name, make in makers.items():
                part = make(i).fit(X[train], Yz[train], W[train])
                oof.setdefault(name, np.full(Y.shape, np.nan))[held] = part.predict(X[held])
                if name == "net":
                    members.append(part)
        self.nets_ = members
        for name in makers:  # rows no fold held out (members < folds): the neighbours' estimate
            if name in oof:
                oof[name][~covered] = oof[f"knn{self.k_}"][~covered]
        self.parts_ = {name: make(0).fit(X, Yz, W) for name, make in makers.items() if name != "net"}
        self.part_names_ = [name for name in oof]

        # Stacker per model on the parts' out-of-fold logits: blend and calibration in one.
        Z = _difficulty_and_difference(np.stack([_logit(oof[name]) for name in self.part_names_], axis=-1))
        start = np.full(Z.shape[-1], 2.0 / Z.shape[-1])        # the plain average of the parts' logits
        self.weights_ = np.array([_fit_stacker(Z[:, j], Yz[:, j], W[:, j], start=start)
                                  for j in range(self.n_models_)])
        self.oof_proba_ = self._stack(Z)
        self.part_losses_ = {name: float(masked_log_loss(Y, W, oof[name]).mean()) for name in self.part_names_}
        self.stacked_loss_ = float(masked_log_loss(Y, W, self.oof_proba_).mean())
        return self

    def _makers(self, n: int) -> dict:
        """Constructors of the cross-fitted parts (argument: the fold's seed offset)."""
        makers = {}
        if self.members > 0 and n >= 2:
            makers["net"] = lambda i: TrunkNet(self.hidden, self.epochs, self.dropout, self.weight_decay, self.lr,
                                               seed=self.seed + i)
        for l2 in self.linear_l2:
            makers[f"linear{l2:g}"] = lambda i, l2=l2: LinearPart(float(l2))
        train_size = n * (1 - 1 / max(2, self.members))
        for K in self.clusters:
            if 10 * int(K) <= train_size:
                makers[f"clusters{int(K)}"] = lambda i, K=int(K): ClusterPart(K, self.prior, self.seed)
        return makers

    def _stack(self, Z: np.ndarray) -> np.ndarray:
        return _sigmoid(np.einsum("nmc,mc->nm", Z, self.weights_[:, :-1]) + self.weights_[:, -1])

    # -------------------------------------------------------------- predict

    def parts_proba(self, X) -> dict[str, np.ndarray]:
        """Each part's prediction for new prompts (before stacking), by part name."""
        check_is_fitted(self, "weights_")
        return self._parts(unit_rows(X))[0]

    def _parts(self, X):
        pooled = pool_neighbours(*neighbours(X, self.X_, max(self.ks_)), self.ks_, self.Yz_, self.W_,
                                 self.base_rate_, self.prior)
        out = {f"knn{k}": pooled[k][0] for k in self.ks_}
        n_eff = pooled[self.k_][1]
        if self.nets_:
            out["net"] = np.mean([net.predict(X) for net in self.nets_], axis=0)
        for name, part in self.parts_.items():
            out[name] = part.predict(X)
        return out, n_eff

    def predict(self, X) -> BetaPrediction:
        """Beta belief per (prompt, model): stacked calibrated mean, concentration from the neighbourhood's evidence."""
        check_is_fitted(self, "weights_")
        parts, n_eff = self._parts(unit_rows(X))
        Z = _difficulty_and_difference(np.stack([_logit(parts[name]) for name in self.part_names_], axis=-1))
        return BetaPrediction.from_mean_concentration(self._stack(Z), n_eff + self.prior)


def _difficulty_and_difference(Z: np.ndarray) -> np.ndarray:
    """Each part's logits (n, m, c) split into the prompt's mean over models and each model's deviation (n, m, 2c).

    Why: a part can be good at one and noisy at the other. Near neighbours
    (small ``k``) tell how hard a prompt is, but their per-model differences
    are noisy; routing reads only the differences. Weighted apart, the stacker
    takes difficulty from the sharp parts and differences from the smooth ones
    (measured: +0.2 points at ``lam = 0`` on LLMRouter's development folds, APGR
    0.696 -> 0.704 on MMLU's development splits). Equal weights on both halves
    give back the part's logit.
    """
    d = np.broadcast_to(Z.mean(axis=1, keepdims=True), Z.shape)
    return np.concatenate([d, Z - d], axis=-1)


#: Pseudo-observations holding a calibration map at its starting point (the identity for one input, the plain
#: average of the parts' logits for several): a handful of outcomes must not stretch probabilities to 0.999
#: (a map fitted on four prompts did); thousands override it.
PLATT_PRIOR = 4.0


def _fit_stacker(Z: np.ndarray, y: np.ndarray, w: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Weighted logistic fit ``p = sigmoid(Z @ a + b)`` of graded targets on the parts' logits ``Z`` (n, c).

    Weights ``a`` are kept in [0, 10] (non-negative stacking); ``(a, b)`` is shrunk toward
    ``(start, 0)`` (default ``1/c`` each: the mean logit) by :data:`PLATT_PRIOR` pseudo-observations.
    Returns ``[a..., b]``.
    """
    from scipy.optimize import minimize

    Z = np.asarray(Z, float).reshape(len(Z), -1)
    keep = w > 0
    Z1 = np.hstack([Z[keep], np.ones((int(keep.sum()), 1))])
    y, w = y[keep], w[keep]
    c = Z.shape[1]
    start = np.r_[np.full(c, 1.0 / c) if start is None else np.asarray(start, float), 0.0]
    total = w.sum()
    shrink = PLATT_PRIOR / total

    def loss(theta):
        p = np.clip(_sigmoid(Z1 @ theta), _EPS, 1 - _EPS)
        d = theta - start
        value = -(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum() / total + 0.5 * shrink * (d @ d)
        return value, Z1.T @ (w * (p - y)) / total + shrink * d

    bounds = [(0.0, 10.0)] * c + [(-10.0, 10.0)]
    return minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x


def _fit_platt(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Platt map ``p = sigmoid(a z + b)`` on one logit: the one-part stacker, shrunk toward the identity."""
    a, b = _fit_stacker(np.asarray(z, float)[:, None], np.asarray(y, float), np.asarray(w, float))
    return float(a), float(b)


def expected_calibration_error(p: np.ndarray, y: np.ndarray, *, bins: int = 10) -> float:
    """ECE of predicted rates against graded outcomes: mean |mean p - mean y| over equal-width bins, by count."""
    p = np.asarray(p, float)
    y = np.asarray(y, float)
    keep = np.isfinite(y)
    p, y = p[keep], y[keep]
    if p.size == 0:
        return float("nan")
    b = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for i in range(bins):
        sel = b == i
        if sel.any():
            err += sel.sum() * abs(p[sel].mean() - y[sel].mean())
    return float(err / p.size)
