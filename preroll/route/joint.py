"""One model of success for all candidate models, fitted jointly.

Why not one head per model: heads fitted apart are each shrunk toward their own
base rate with their own regularisation, so their outputs are not calibrated
against each other, and an argmax over them follows whichever model has the
highest overall rate whenever per-prompt differences are small. Routing needs
the *differences* between candidates on a prompt, so this model learns all
candidates from the same rows at once:

* **Shared-neighbour rates.** A prompt's ``k`` most cosine-similar history
  prompts are found once, and every model's rate is pooled over the *same*
  neighbours (each shrunk toward that model's base rate by ``prior`` rows of
  evidence). Where two models differ on the neighbourhood, the difference is
  measured on identical prompts, not on each model's own sample.
* **Shared trunk, per-model embeddings.** A small network maps the prompt
  embedding to a hidden representation (what prompts have in common:
  difficulty, topic) and scores it against one learned vector per model
  (what differs: per-model strengths), as in matrix factorisation routers
  (EmbedLLM). It is trained on all (prompt, model) cells at once with a
  masked, attempt-weighted cross-entropy on graded scores, so a prompt seen by
  only some models still teaches the trunk. It is cross-fitted: ``members``
  networks, each trained with one fold held out, give out-of-fold predictions
  for every row, and their mean predicts new prompts.
* **Blend and per-model calibration.** The two are mixed with the weight that
  minimises out-of-fold log-loss, then each model's probability goes through a
  Platt map fitted on out-of-fold predictions (so ``0.7`` means 70% for every
  model: rules compare models on equal footing).
* **Uncertainty.** The belief per (prompt, model) is a Beta with the
  calibrated mean and a concentration equal to the neighbourhood's effective
  number of observed rows for that model plus ``prior``: a model rarely seen
  near this prompt gets a wide belief, which the default-aware rule reads.

Missing entries (``NaN`` in ``Y``) are simply left out of every sum and loss.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from preroll.beliefs import BetaPrediction
from preroll.heads.knn import nearest, unit_rows
from preroll.heads.selection import inner_folds

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
        Candidate neighbourhood sizes; the one with the lowest leave-one-out
        log-loss on the history is used.
    prior:
        Rows' worth of each model's base rate added to every neighbourhood.
    hidden, members, epochs, dropout, weight_decay, lr:
        The trunk network: hidden width, number of cross-fitted networks,
        passes over the data, dropout on input and hidden layer, AdamW decay.
    mixes:
        Candidate weights of the network in the blend (0 = neighbours only).
    """

    def __init__(self, ks=(10, 25, 50, 100, 200), prior: float = 2.0, hidden: int = 256, members: int = 3,
                 epochs: int = 30, dropout: float = 0.3, weight_decay: float = 1e-4, lr: float = 2e-3,
                 mixes=(0.0, 0.25, 0.5, 0.75, 1.0), seed: int = 0):
        self.ks = ks
        self.prior = prior
        self.hidden = hidden
        self.members = members
        self.epochs = epochs
        self.dropout = dropout
        self.weight_decay = weight_decay
        self.lr = lr
        self.mixes = mixes
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
        self.n_models_ = Y.shape[1]
        self.base_rate_ = (Yz * W).sum(axis=0) / W.sum(axis=0)
        self.X_, self.Yw_, self.W_ = X, Yz * W, W

        # Neighbour part: leave-one-out rates for every candidate k from one search.
        n = len(X)
        ks = sorted({int(k) for k in self.ks if 0 < int(k) < n}) or [max(1, n - 1)]
        idx, sim = nearest(X, X, min(max(ks) + 1, n), return_similarity=True)
        not_self = idx != np.arange(n)[:, None]
        loo = {}
        for k in ks:
            loo[k] = self._pool(idx, sim, not_self, k)[0]
        losses = {k: float(masked_log_loss(Y, W, loo[k]).mean()) for k in ks}
        self.k_ = min(losses, key=losses.get)
        self.knn_losses_ = losses
        P_knn = loo[self.k_]

        # Network part: cross-fitted members give out-of-fold predictions for every row.
        P_net = np.full(Y.shape, np.nan)
        self.nets_ = []
        folds = inner_folds(n, max(2, self.members), self.seed)
        for i, held in enumerate(folds[:self.members]):
            train = np.setdiff1d(np.arange(n), held)
            net = self._train_net(X[train], Yz[train], W[train], seed=self.seed + i)
            P_net[held] = self._net_proba(net, X[held])
            self.nets_.append(net)
        covered = np.isfinite(P_net[:, 0])
        P_net[~covered] = P_knn[~covered]  # rows no member held out (members < folds)

        # Blend weight and per-model Platt maps on the out-of-fold predictions.
        mixes = self.mixes if self.nets_ else (0.0,)
        blend = {w: float(masked_log_loss(Y, W, w * P_net + (1 - w) * P_knn).mean()) for w in mixes}
        self.mix_ = min(blend, key=blend.get)
        self.blend_losses_ = blend
        P_oof = self.mix_ * P_net + (1 - self.mix_) * P_knn
        self.platt_ = np.array([_fit_platt(_logit(P_oof[:, j]), Yz[:, j], W[:, j]) for j in range(self.n_models_)])
        self.oof_proba_ = self._calibrate(P_oof)
        return self

    def _pool(self, idx, sim, valid, k):
        """Similarity-weighted rates of the first ``k`` valid neighbours, shrunk to the base rates."""
        order = np.cumsum(valid, axis=1)
        use = valid & (order <= k)
        w = np.where(use, np.maximum(sim, 0.0) + 1e-6, 0.0)[:, :, None]       # (n, K, 1)
        obs = self.W_[idx] * w                                                  # (n, K, m)
        num = (self.Yw_[idx] * w).sum(axis=1) + self.prior * self.base_rate_
        den = obs.sum(axis=1) + self.prior
        wsum = obs.sum(axis=1)
        n_eff = np.where(wsum > 0, wsum ** 2 / np.maximum((obs ** 2).sum(axis=1), 1e-12), 0.0)
        return num / den, n_eff

    def _train_net(self, X, Y, W, *, seed: int):
        import torch

        torch.manual_seed(seed)
        Xt = torch.as_tensor(X, dtype=torch.float32)
        Yt = torch.as_tensor(Y, dtype=torch.float32)
        Wt = torch.as_tensor(W, dtype=torch.float32)
        net = torch.nn.Sequential(torch.nn.Dropout(self.dropout), torch.nn.Linear(X.shape[1], self.hidden),
                                  torch.nn.GELU(), torch.nn.Dropout(self.dropout),
                                  torch.nn.Linear(self.hidden, Y.shape[1]))
        with torch.no_grad():  # start every model at its base rate
            rate = (Yt * Wt).sum(0) / Wt.sum(0).clamp_min(1e-9)
            net[-1].bias.copy_(torch.logit(rate.clamp(0.02, 0.98)))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        n = len(Xt)
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=gen)
            for b in range(0, n, 128):
                rows = perm[b:b + 128]
                z = net(Xt[rows])
                w = Wt[rows]
                loss = (torch.nn.functional.binary_cross_entropy_with_logits(z, Yt[rows], reduction="none") * w).sum()
                loss = loss / w.sum().clamp_min(1e-9)
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()
        return net

    @staticmethod
    def _net_proba(net, X) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.sigmoid(net(torch.as_tensor(X, dtype=torch.float32))).numpy().astype(float)

    def _calibrate(self, P: np.ndarray) -> np.ndarray:
        a, b = self.platt_[:, 0], self.platt_[:, 1]
        return _sigmoid(a * _logit(P) + b)

    # -------------------------------------------------------------- predict

    def predict(self, X) -> BetaPrediction:
        """Beta belief per (prompt, model): calibrated mean, concentration from the neighbourhood's evidence."""
        check_is_fitted(self, "platt_")
        X = unit_rows(X)
        idx, sim = nearest(X, self.X_, self.k_, return_similarity=True)
        P_knn, n_eff = self._pool(idx, sim, np.ones_like(idx, dtype=bool), self.k_)
        P = P_knn
        if self.mix_ > 0:
            P_net = np.mean([self._net_proba(net, X) for net in self.nets_], axis=0)
            P = self.mix_ * P_net + (1 - self.mix_) * P_knn
        return BetaPrediction.from_mean_concentration(self._calibrate(P), n_eff + self.prior)


#: Pseudo-observations holding a Platt map at the identity (a = 1, b = 0): a handful of outcomes
#: must not stretch probabilities to 0.999 (a map fitted on four prompts did); thousands override it.
PLATT_PRIOR = 4.0


def _fit_platt(z: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted logistic fit of graded targets on a logit: ``p = sigmoid(a z + b)`` (a > 0 kept).

    Shrunk toward the identity map by :data:`PLATT_PRIOR` pseudo-observations.
    """
    from scipy.optimize import minimize

    keep = w > 0
    z, y, w = z[keep], y[keep], w[keep]
    shrink = PLATT_PRIOR / w.sum()

    def loss(theta):
        a, b = theta
        p = np.clip(_sigmoid(a * z + b), _EPS, 1 - _EPS)
        g = p - y
        return (-(w * (y * np.log(p) + (1 - y) * np.log1p(-p))).sum() / w.sum()
                + 0.5 * shrink * ((a - 1.0) ** 2 + b ** 2),
                np.array([(w * g * z).sum() / w.sum() + shrink * (a - 1.0), (w * g).sum() / w.sum() + shrink * b]))

    res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B",
                   bounds=[(1e-3, 10.0), (-10.0, 10.0)])
    return float(res.x[0]), float(res.x[1])


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
