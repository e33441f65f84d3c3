"""The parts of the joint success model: each predicts every model's success from one prompt embedding.

Why several parts: each sees a different structure in the history, and on
LLMRouter's nine models no single one is best everywhere (docs/route.md):

* :func:`pool_neighbours` -- shared-neighbour rates: every model's rate over
  the *same* ``k`` most similar history prompts (a difference between two
  models is measured on identical prompts). Small ``k`` finds templates and
  near-duplicates, large ``k`` the topic.
* :class:`TrunkNet` -- a shared hidden layer (what prompts have in common)
  scored against one output vector per model (EmbedLLM-style); it
  generalises between neighbourhoods.
* :class:`LinearPart` -- one logistic regression per model on the raw
  embedding (the independent heads' logistic component, fitted on all models'
  cells at once); smooth, which ranks two models' gain well on MMLU.
* :class:`ClusterPart` -- KMeans topics of the history and each model's rate
  per topic (the per-cluster-best baseline as a part, so the joint model
  cannot fall behind it where topics carry the signal).

All take ``Yz`` (rates, 0 where missing) and ``W`` (attempts, 0 where
missing): a missing cell is left out of every sum and loss. Inputs are unit
rows (the joint model normalises once).
"""

from __future__ import annotations

import numpy as np

from preroll.heads.knn import nearest


def base_rates(Yz: np.ndarray, W: np.ndarray) -> np.ndarray:
    """Each model's attempt-weighted mean rate; 0.5 for a model with no observed cell (a fold may hold none)."""
    total = W.sum(axis=0)
    return np.where(total > 0, (Yz * W).sum(axis=0) / np.maximum(total, 1e-12), 0.5)


def neighbours(Q: np.ndarray, H: np.ndarray, k: int, *, leave_one_out: bool = False):
    """Indices, similarities and a validity mask of the ``k`` nearest history rows (self excluded if LOO)."""
    if leave_one_out:
        idx, sim = nearest(Q, H, min(k + 1, len(H)), return_similarity=True)
        return idx, sim, idx != np.arange(len(Q))[:, None]
    idx, sim = nearest(Q, H, k, return_similarity=True)
    return idx, sim, np.ones(idx.shape, dtype=bool)


def pool_neighbours(idx, sim, valid, ks, Yz: np.ndarray, W: np.ndarray, base: np.ndarray, prior: float):
    """Similarity-weighted rates of the first ``k`` valid neighbours for each ``k`` in ``ks``, shrunk to ``base``.

    One cumulative pass over the neighbours (nearest first) serves every ``k``.
    Returns ``{k: (rates, n_eff)}``, arrays (n, m): ``n_eff`` is the effective
    number of observed neighbour rows per model (Kish), the evidence behind the rate.
    """
    rank = np.cumsum(valid, axis=1)                                        # (n, K): position among valid ones
    w = np.where(valid, np.maximum(sim, 0.0) + 1e-6, 0.0)[:, :, None]      # (n, K, 1)
    obs = W[idx] * w                                                       # (n, K, m)
    c_num = np.cumsum((Yz * W)[idx] * w, axis=1)
    c_obs = np.cumsum(obs, axis=1)
    c_sq = np.cumsum(obs ** 2, axis=1)
    rows = np.arange(len(idx))
    out = {}
    for k in ks:
        # the last column whose valid rank is <= k (every row has at least min(k, valid) of them)
        last = np.minimum((rank <= k).sum(axis=1), idx.shape[1]) - 1
        num, wsum, sq = c_num[rows, last], c_obs[rows, last], c_sq[rows, last]
        rates = (num + prior * base) / (wsum + prior)
        n_eff = np.where(wsum > 0, wsum ** 2 / np.maximum(sq, 1e-12), 0.0)
        out[k] = (rates, n_eff)
    return out


class TrunkNet:
    """Embedding -> dropout -> hidden (GELU) -> dropout -> one logit per model; masked, attempt-weighted BCE."""

    def __init__(self, hidden: int, epochs: int, dropout: float, weight_decay: float, lr: float, seed: int):
        self.hidden, self.epochs, self.dropout = hidden, epochs, dropout
        self.weight_decay, self.lr, self.seed = weight_decay, lr, seed

    def fit(self, X, Yz, W) -> "TrunkNet":
        from preroll._optional import require

        torch = require("torch", what="the router's joint model")

        torch.manual_seed(self.seed)
        Xt = torch.as_tensor(X, dtype=torch.float32)
        Yt = torch.as_tensor(Yz, dtype=torch.float32)
        Wt = torch.as_tensor(W, dtype=torch.float32)
        net = torch.nn.Sequential(torch.nn.Dropout(self.dropout), torch.nn.Linear(X.shape[1], self.hidden),
                                  torch.nn.GELU(), torch.nn.Dropout(self.dropout),
                                  torch.nn.Linear(self.hidden, Yz.shape[1]))
        with torch.no_grad():  # start every model at its base rate
            rate = (Yt * Wt).sum(0) / Wt.sum(0).clamp_min(1e-9)
            net[-1].bias.copy_(torch.logit(rate.clamp(0.02, 0.98)))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        n = len(Xt)
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=gen)
            for b in range(0, n, 128):
                rows = perm[b:b + 128]
                w = Wt[rows]
                loss = (torch.nn.functional.binary_cross_entropy_with_logits(net(Xt[rows]), Yt[rows],
                                                                             reduction="none") * w).sum()
                opt.zero_grad()
                (loss / w.sum().clamp_min(1e-9)).backward()
                opt.step()
        net.eval()
        # Prediction runs in NumPy on copies of the weights (dropout is off at prediction): a torch call
        # costs more in dispatch than the two small products, and this is on the routing path.
        self.module_ = net
        self.w1_ = np.ascontiguousarray(net[1].weight.detach().numpy().T)
        self.b1_ = net[1].bias.detach().numpy().copy()
        self.w2_ = np.ascontiguousarray(net[4].weight.detach().numpy().T)
        self.b2_ = net[4].bias.detach().numpy().copy()
        return self

    def predict(self, X) -> np.ndarray:
        from scipy.special import erf

        h = np.asarray(X, np.float32) @ self.w1_ + self.b1_
        h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))                          # exact GELU, as torch's default
        z = (h @ self.w2_ + self.b2_).astype(float)
        return 1.0 / (1.0 + np.exp(-z))


class LinearPart:
    """Per-model logistic regression on the embedding, all models fitted at once (full-batch L-BFGS).

    ``l2`` is the ridge penalty against the loss summed over prompts
    (scikit-learn's ``1 / C``), so it weighs more on a small history: eight
    prompts in a 16-dimensional space are separable, and an unscaled penalty
    let the part predict 0 and 1. The bias starts at each model's base rate
    and is not penalised.
    """

    def __init__(self, l2: float):
        self.l2 = l2

    def fit(self, X, Yz, W) -> "LinearPart":
        from preroll._optional import require

        torch = require("torch", what="the router's joint model")

        Xt = torch.as_tensor(X, dtype=torch.float32)
        Yt = torch.as_tensor(Yz, dtype=torch.float32)
        Wt = torch.as_tensor(W, dtype=torch.float32)
        A = torch.zeros(X.shape[1], Yz.shape[1], requires_grad=True)
        b = torch.logit(torch.as_tensor(base_rates(Yz, W), dtype=torch.float32).clamp(0.02, 0.98))
        b = b.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([A, b], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")
        total = Wt.sum().clamp_min(1e-9)
        l2 = self.l2 / max(len(X), 1)               # per prompt, against the mean loss below

        def closure():
            opt.zero_grad()
            cell = torch.nn.functional.binary_cross_entropy_with_logits(Xt @ A + b, Yt, reduction="none")
            loss = (cell * Wt).sum() / total + 0.5 * l2 * (A ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.coef_ = A.detach().numpy().astype(np.float32)
        self.intercept_ = b.detach().numpy().astype(np.float32)
        return self

    def predict(self, X) -> np.ndarray:
        z = np.asarray(X, np.float32) @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-z.astype(float)))


class ClusterPart:
    """KMeans topics of the history; each model's rate per topic, shrunk to its base rate by ``prior`` rows."""

    def __init__(self, n_clusters: int, prior: float, seed: int):
        self.n_clusters, self.prior, self.seed = n_clusters, prior, seed

    def fit(self, X, Yz, W) -> "ClusterPart":
        from sklearn.cluster import KMeans

        km = KMeans(self.n_clusters, n_init=3, random_state=self.seed).fit(X)
        K, m = km.n_clusters, Yz.shape[1]
        num, den = np.zeros((K, m)), np.zeros((K, m))
        np.add.at(num, km.labels_, Yz * W)
        np.add.at(den, km.labels_, W)
        self.rates_ = (num + self.prior * base_rates(Yz, W)) / (den + self.prior)
        # Nearest centre by ``argmax x.c - |c|^2 / 2``: one small product, no scikit-learn call per prompt.
        self.centres_ = np.ascontiguousarray(km.cluster_centers_.T, dtype=np.float32)
        self.half_sq_ = 0.5 * (km.cluster_centers_ ** 2).sum(axis=1).astype(np.float32)
        return self

    def predict(self, X) -> np.ndarray:
        return self.rates_[np.argmax(np.asarray(X, np.float32) @ self.centres_ - self.half_sq_, axis=1)]
