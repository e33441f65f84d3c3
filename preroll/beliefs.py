"""What every in-context head returns: a Beta belief over each query's success rate.

A point estimate is not enough downstream: rollout allocation integrates its
utility over the belief, Thompson sampling draws from it, and the fused
baseline uses it as a prior. A Beta(alpha, beta) carries mean and spread in
the form those consumers (and direct-evidence updates: add successes to
alpha, failures to beta) need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-6


@dataclass(frozen=True)
class BetaPrediction:
    """Per-query Beta(alpha, beta) belief over the success rate."""

    alpha: np.ndarray
    beta: np.ndarray

    @property
    def p_success(self) -> np.ndarray:
        return self.alpha / (self.alpha + self.beta)

    @property
    def concentration(self) -> np.ndarray:
        return self.alpha + self.beta

    @property
    def var(self) -> np.ndarray:
        a, b = self.alpha, self.beta
        return a * b / ((a + b) ** 2 * (a + b + 1.0))

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def __len__(self) -> int:
        return len(self.alpha)

    def __getitem__(self, idx) -> "BetaPrediction":
        return BetaPrediction(self.alpha[idx], self.beta[idx])

    @classmethod
    def from_mean_var(cls, mean, var, *, max_concentration: float = 1e4) -> "BetaPrediction":
        """Moment-match a Beta to a mean and a variance.

        The variance is clipped below m(1-m) (the Bernoulli limit) so the
        concentration stays positive.
        """
        m = np.clip(np.asarray(mean, dtype=float), _EPS, 1 - _EPS)
        v = np.clip(np.asarray(var, dtype=float), 1e-12, m * (1 - m) * (1 - 1e-6))
        conc = np.clip(m * (1 - m) / v - 1.0, 1e-3, max_concentration)
        return cls(alpha=m * conc, beta=(1 - m) * conc)

    @classmethod
    def from_mean_concentration(cls, mean, concentration) -> "BetaPrediction":
        m = np.clip(np.asarray(mean, dtype=float), _EPS, 1 - _EPS)
        c = np.asarray(concentration, dtype=float)
        return cls(alpha=m * c, beta=(1 - m) * c)

    def update(self, successes, failures) -> "BetaPrediction":
        """Conjugate update with observed Bernoulli outcomes."""
        return BetaPrediction(self.alpha + np.asarray(successes, float), self.beta + np.asarray(failures, float))
