"""Choosing a head's hyper-parameter on the context itself, by cross-validated log-loss.

Why here and not by the caller: the right amount of smoothing depends on how
much history there is (a few hundred rows need far more than ten thousand),
and a head that reads a new context must settle it without outside tuning.
"""

from __future__ import annotations

import numpy as np


def binomial_log_loss(successes, attempts, p) -> np.ndarray:
    """Per-row negative log-likelihood of ``successes`` of ``attempts`` at rate ``p``."""
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -(successes * np.log(p) + (attempts - successes) * np.log(1 - p))


def one_se_choice(loss: np.ndarray, *, most_regular_last: bool) -> int:
    """The most regularised candidate whose mean CV loss is within one standard error of the best.

    ``loss`` is (candidates, rows). Per-row log-loss is nearly flat around its
    minimum; among statistically tied candidates the smoother one ranks new
    prompts more steadily (the "one-standard-error rule").
    """
    mean = loss.mean(axis=1)
    best = int(np.argmin(mean))
    se = loss[best].std(ddof=1) / np.sqrt(loss.shape[1]) if loss.shape[1] > 1 else 0.0
    ok = np.flatnonzero(mean <= mean[best] + se)
    return int(ok.max() if most_regular_last else ok.min())


def inner_folds(n: int, n_splits: int, seed: int) -> list[np.ndarray]:
    """Shuffled test-index folds for a head's own tuning (fewer folds when ``n`` is tiny)."""
    k = min(n_splits, n)
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::k] for i in range(k)] if k >= 2 else []
