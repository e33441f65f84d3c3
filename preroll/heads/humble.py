"""Beliefs that need evidence: a head's output counts only as far as the history behind it does.

Why: a head fitted on two rows that both succeeded reports p=0.9999 with a spread of 0.006 for
every prompt, and a router then sends all traffic to a backend on the strength of one success.
A head cannot see that it had nothing to learn from; the history can say so. :class:`Evidence`
holds what a history supports:

- a **prior** for a prompt the history says little about: the rule of succession (a uniform
  Beta(1, 1) prior updated by each distinct prompt's success rate, one pseudo-observation per
  prompt). With no outcome variation at all (every rate equal) the history cannot tell how far a
  new prompt's rate may lie from its base rate, so at most :data:`PRIOR_CAP` prompts count:
  a thousand all-success rows give 0.9, not 0.999;
- a **credibility** of the head's own prediction, ``n^2 / (n^2 + CREDIBLE_PROMPTS^2)`` over ``n``
  distinct prompts (0 when no outcome varies: a head then has only learnt the base rate). A
  head fitted on a few prompts is mostly the prior; from a hundred prompts on it is used as it
  is (credibility > 0.98), so large histories keep their numbers;
- a **concentration cap**: a belief is never worth more observations than the history holds
  distinct prompts (two when no outcome varies).

:func:`humble` blends a head's Beta belief with the prior by ``credibility x weight`` (the value
model's ``weight`` falls with a query's distance from the history) and caps its concentration.
Only direct evidence about a prompt (its own outcomes, added afterwards) narrows it further.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preroll.beliefs import BetaPrediction

#: Most prompts' worth a history without outcome variation gives its base rate (the prior then stays in [1/10, 9/10]).
PRIOR_CAP = 8.0
#: Distinct prompts at which a head's own prediction and the prior weigh the same.
CREDIBLE_PROMPTS = 12.0
#: Least concentration (alpha + beta) of a belief: a uniform Beta(1, 1)'s.
MIN_CONCENTRATION = 2.0
_CLIP = 1e-4


@dataclass(frozen=True)
class Evidence:
    """What a history supports, per model (arrays broadcast: one entry per router column, or scalars)."""

    prompts: np.ndarray      # distinct prompts with an outcome
    rate_sum: np.ndarray     # sum over those prompts of each one's success rate
    varies: np.ndarray       # whether any two prompts' rates differ

    @classmethod
    def of(cls, successes, attempts, prompts=None) -> Evidence:
        """Evidence of one history: rows' ``successes``/``attempts`` and, optionally, their prompt texts.

        Rows of the same prompt (several steps, several logs) are pooled into one rate first.
        """
        s = np.asarray(successes, float)
        a = np.asarray(attempts, float)
        keep = a > 0
        s, a = s[keep], a[keep]
        if prompts is not None:
            texts = np.asarray(list(prompts), dtype=object)[keep]
            _, inverse = np.unique(texts.astype(str), return_inverse=True)
            s = np.bincount(inverse, weights=s)
            a = np.bincount(inverse, weights=a)
        rates = s / np.maximum(a, 1e-12)
        varies = bool(len(rates) > 1 and np.ptp(rates) > 1e-9)
        return cls(np.asarray(float(len(rates))), np.asarray(float(rates.sum())), np.asarray(varies))

    @classmethod
    def of_columns(cls, S: np.ndarray, A: np.ndarray) -> Evidence:
        """Per-column evidence of a ``(prompts, models)`` table of successes and attempts (0 attempts: unseen)."""
        cols = [cls.of(S[:, j], A[:, j]) for j in range(S.shape[1])]
        return cls(np.array([c.prompts for c in cols]), np.array([c.rate_sum for c in cols]),
                   np.array([c.varies for c in cols]))

    @property
    def prior_mean(self) -> np.ndarray:
        """Rule of succession over the prompts' rates; at most :data:`PRIOR_CAP` prompts without variation."""
        n = np.where(self.varies, self.prompts, np.minimum(self.prompts, PRIOR_CAP))
        mean_rate = self.rate_sum / np.maximum(self.prompts, 1.0)
        return (n * mean_rate + 1.0) / (n + 2.0)

    @property
    def credibility(self) -> np.ndarray:
        """Weight of a head's own prediction: 0 without outcome variation, then rising with the prompts."""
        n2 = self.prompts ** 2
        return np.where(self.varies, n2 / (n2 + CREDIBLE_PROMPTS ** 2), 0.0)

    @property
    def max_concentration(self) -> np.ndarray:
        return np.where(self.varies, np.maximum(self.prompts, MIN_CONCENTRATION), MIN_CONCENTRATION)


def humble(pred: BetaPrediction, evidence: Evidence, weight=1.0) -> BetaPrediction:
    """``pred`` blended with the evidence's prior by ``credibility * weight``, its concentration capped.

    ``weight`` (in [0, 1], per query) is how much the history covers each query (1: fully);
    the concentration is scaled by it too, never below a uniform prior's.
    """
    w = np.clip(np.asarray(weight, float), 0.0, 1.0)
    lam = w * evidence.credibility
    mean = lam * pred.p_success + (1.0 - lam) * evidence.prior_mean
    conc = np.minimum(pred.concentration, evidence.max_concentration)
    conc = np.maximum(w * conc, MIN_CONCENTRATION)
    return BetaPrediction.from_mean_concentration(np.clip(mean, _CLIP, 1 - _CLIP), conc)
