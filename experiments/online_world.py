"""A long-training world grounded in the shared DAPO-Math histories.

The release holds, for two policies at steps 16, 64 and 256, the success of
~544 prompts each (10 rollouts). That is enough to *measure* what a
multi-epoch simulator needs, but not to replay a run over 10k prompts, so the
simulator draws synthetic prompts whose statistics are fitted to it:

- **rate distribution** at step 16: latent logit difficulty ~ Normal(mu, tau),
  (mu, tau) fitted so that Binomial(10, sigmoid(theta)) reproduces the pooled
  mean and the shares of 0/10 and 10/10 prompts;
- **global drift**: the mean logit shift per training step between steps 16
  and 256 (both policies improve);
- **per-prompt drift**: a logit random walk of sd ``sigma`` per sqrt(step),
  fitted so that the same-prompt correlation of observed 10-rollout rates
  across step pairs (16-64, 64-256, 16-256) matches the measured one;
- **neighbour structure**: every real prompt text anchors ``variants``
  synthetic prompts (paraphrase-like near-duplicates). An anchor's latent is
  its real observed rate (standardised within its snapshot), so the real
  semantic structure of difficulty across texts is kept; a variant takes a
  ``share`` of its latent variance from its anchor, the rest is its own (an
  assumption, not a measurement: the data has no paraphrases). ``share=0``
  uses no real difficulty at all: a null control for the neighbour part. Embeddings are the real text's
  lexical (TF-IDF + SVD) vector plus isotropic noise (cosine ~0.7 to the anchor).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from preroll.data import load_v0
from preroll.data.paths import dapo_dir

ROLLOUTS = 10


@dataclass(frozen=True)
class WorldFit:
    """What was measured on the data and the simulator parameters fitted to it."""

    mu: float                    # mean latent logit at step 16
    tau: float                   # sd of latent logits at step 16
    shift_per_step: float        # global logit drift per training step
    sigma_per_sqrt_step: float   # per-prompt logit random-walk sd
    measured: dict = field(default_factory=dict)
    fitted: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def load_rates(path: Path | None = None) -> tuple[dict, dict[str, str]]:
    """{(policy, step): {prompt id: successes}} from context + queries, and {id: text}."""
    base = Path(path) if path else dapo_dir()
    table: dict = defaultdict(dict)
    texts: dict[str, str] = {}
    for name in ("context.jsonl", "queries.jsonl"):
        f = base / name
        if f.exists():
            for r in load_v0(f):
                table[(r.policy, int(r.step))][r.id] = r.successes
                texts[r.id] = r.prompt
    return dict(table), texts


def _binomial_moments(mu: float, tau: float, nodes: np.ndarray, weights: np.ndarray) -> tuple[float, float, float]:
    p = 1.0 / (1.0 + np.exp(-(mu + tau * nodes)))
    return (float((weights * p).sum()), float((weights * (1 - p) ** ROLLOUTS).sum()), float((weights * p ** ROLLOUTS).sum()))


def fit_world(table: dict, seed: int = 0) -> WorldFit:
    """Fit the simulator's drift and rate distribution to the measured snapshots (see module docstring)."""
    policies = sorted({p for p, _ in table})
    first = min(s for _, s in table)
    last = max(s for _, s in table)
    start = np.concatenate([np.array(list(table[(p, first)].values())) for p in policies]) / ROLLOUTS
    target = (start.mean(), (start == 0).mean(), (start == 1).mean())
    nodes, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    best = None
    for mu in np.linspace(-2, 2, 81):
        for tau in np.linspace(0.5, 6, 111):
            m = _binomial_moments(mu, tau, nodes, w)
            err = sum((a - b) ** 2 for a, b in zip(m, target))
            if best is None or err < best[0]:
                best = (err, mu, tau, m)
    _, mu, tau, fitted_moments = best

    def logit(p):
        p = np.clip(p, 1e-3, 1 - 1e-3)
        return np.log(p / (1 - p))

    shifts = [(logit(np.mean(list(table[(p, last)].values())) / ROLLOUTS)
               - logit(np.mean(list(table[(p, first)].values())) / ROLLOUTS)) / (last - first) for p in policies]
    shift = float(np.mean(shifts))
    pairs = []
    for p in policies:
        steps = sorted(s for q, s in table if q == p)
        for i, s1 in enumerate(steps):
            for s2 in steps[i + 1:]:
                common = sorted(set(table[(p, s1)]) & set(table[(p, s2)]))
                x = np.array([table[(p, s1)][k] for k in common])
                y = np.array([table[(p, s2)][k] for k in common])
                pairs.append({"policy": p, "from": s1, "to": s2, "n": len(common), "r": float(np.corrcoef(x, y)[0, 1])})
    rng = np.random.default_rng(seed)
    n_sim = 40_000
    z0 = rng.standard_normal(n_sim)

    def sim_corr(sigma: float, s1: int, s2: int) -> float:
        r = np.random.default_rng(seed + 1)
        th1 = mu + tau * z0 + shift * (s1 - first) + sigma * np.sqrt(s1 - first) * r.standard_normal(n_sim)
        th2 = th1 + shift * (s2 - s1) + sigma * np.sqrt(s2 - s1) * r.standard_normal(n_sim)
        k1 = r.binomial(ROLLOUTS, 1 / (1 + np.exp(-th1)))
        k2 = r.binomial(ROLLOUTS, 1 / (1 + np.exp(-th2)))
        return float(np.corrcoef(k1, k2)[0, 1])

    grid = np.linspace(0.0, 0.3, 31)
    losses = [sum(q["n"] * (sim_corr(s, q["from"], q["to"]) - q["r"]) ** 2 for q in pairs) for s in grid]
    sigma = float(grid[int(np.argmin(losses))])
    measured = {"start_mean": target[0], "start_share_0": target[1], "start_share_1": target[2],
                "global_logit_shift_per_step": shifts, "same_prompt_correlation": pairs,
                "first_step": first, "last_step": last}
    fitted = {"start_mean": fitted_moments[0], "start_share_0": fitted_moments[1], "start_share_1": fitted_moments[2],
              "same_prompt_correlation": [{**q, "r": sim_corr(sigma, q["from"], q["to"])} for q in pairs]}
    return WorldFit(mu=float(mu), tau=float(tau), shift_per_step=shift, sigma_per_sqrt_step=sigma,
                    measured=measured, fitted=fitted)


@dataclass
class World:
    """Synthetic prompts: latent start logits, embeddings, and a drift path in real training steps."""

    theta0: np.ndarray       # latent logit at the first measured step
    embeddings: np.ndarray   # one row per prompt
    anchor: np.ndarray       # index of the real text each prompt varies
    texts: list[str]         # a label text per prompt (anchor text + variant tag)
    fit: WorldFit


def anchor_latents(table: dict, ids: list[str]) -> np.ndarray:
    """Standardised logit of each real prompt's observed rate (within its snapshot, averaged over snapshots)."""
    acc = defaultdict(list)
    for (_, _), rows in table.items():
        vals = np.array(list(rows.values()), float)
        lg = np.log((vals + 0.5) / (ROLLOUTS - vals + 0.5))
        z = (lg - lg.mean()) / lg.std()
        for k, zi in zip(rows, z):
            acc[k].append(zi)
    z = np.array([np.mean(acc[i]) if i in acc else np.nan for i in ids])
    z = np.where(np.isnan(z), 0.0, z)
    return (z - z.mean()) / z.std()


def build_world(fit: WorldFit, table: dict, texts: dict[str, str], *, variants: int, share: float,
                seed: int, max_anchors: int | None = None, embedding_noise: float = 1.0) -> World:
    """``variants`` synthetic prompts per real text (see the module docstring)."""
    from preroll.encoders import LexicalEncoder

    rng = np.random.default_rng(seed)
    ids = sorted(texts)
    if max_anchors is not None:
        ids = list(rng.permutation(ids)[:max_anchors])
    anchor_text = [texts[i] for i in ids]
    enc = LexicalEncoder(n_components=min(128, len(ids) // 4)).fit(anchor_text)   # 128-d for the full data
    emb = np.asarray(enc.encode(anchor_text), np.float32)
    za = anchor_latents(table, ids)
    anchor = np.repeat(np.arange(len(ids)), variants)
    own = rng.standard_normal(len(anchor))
    z = np.sqrt(share) * za[anchor] + np.sqrt(1 - share) * own
    theta0 = fit.mu + fit.tau * z
    d = emb.shape[1]
    noise = rng.standard_normal((len(anchor), d)).astype(np.float32) * (embedding_noise / np.sqrt(d))
    e = emb[anchor] + noise
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    labels = [f"{anchor_text[a]} [variant {j}]" for a, j in zip(anchor, np.tile(np.arange(variants), len(ids)))]
    return World(theta0=theta0, embeddings=e, anchor=anchor, texts=labels, fit=fit)
