"""Measuring an encoder: how fast it encodes, and how much signal its vectors carry.

Used by ``preroll bench throughput`` to compare encoder settings (token
length, int8) on the same footing: the accuracy probe is a fixed, simple head
(logistic regression on the vectors) so differences come from the encoder,
not from head tuning.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from preroll.encoders.base import Encoder


@dataclass(frozen=True)
class Timing:
    """Throughput of one encode call."""

    n: int
    wall_s: float
    cpu_s: float

    @property
    def per_s(self) -> float:
        """Prompts per wall-clock second (what a user waits for)."""
        return self.n / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def per_cpu_s(self) -> float:
        """Prompts per CPU-second of this process (excludes time spent waiting for a core)."""
        return self.n / self.cpu_s if self.cpu_s > 0 else float("inf")


def time_call(fn, n: int) -> tuple[Timing, object]:
    """Run ``fn()`` and time it in wall-clock and process CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return Timing(n, time.perf_counter() - wall, time.process_time() - cpu), out


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cold_prompt_auc(vectors: np.ndarray, labels: np.ndarray, *, n_splits: int = 8, seed: int = 0,
                    C: float = 1.0) -> float:
    """Out-of-fold ROC-AUC of ``LogisticRegression(C)`` on L2-normalised vectors.

    Folds are stratified so each holds both classes; every prompt is scored
    by a model that never saw it (the "cold prompt" case of a new prompt).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import normalize

    x = normalize(np.asarray(vectors, dtype=np.float64))
    y = np.asarray(labels, dtype=int)
    if len(np.unique(y)) < 2:
        return float("nan")
    scores = np.zeros(len(y))
    for train, test in StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(x, y):
        head = LogisticRegression(C=C, max_iter=2000).fit(x[train], y[train])
        scores[test] = head.predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, scores))


def grouped_cold_auc(encoder_vectors: dict[str, np.ndarray], records: Sequence, *, threshold: float = 0.5,
                     n_splits: int = 8, seed: int = 0) -> tuple[float, dict[tuple, float]]:
    """Mean over (policy, step) groups of :func:`cold_prompt_auc`; label = success rate >= ``threshold``.

    ``encoder_vectors`` maps prompt text to its vector (each prompt encoded once).
    """
    groups: dict[tuple, list] = {}
    for rec in records:
        groups.setdefault((rec.policy, rec.step), []).append(rec)
    per_group = {}
    for key, recs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        x = np.stack([encoder_vectors[r.prompt] for r in recs])
        y = np.array([r.success_rate >= threshold for r in recs])
        per_group[key] = cold_prompt_auc(x, y, n_splits=n_splits, seed=seed)
    return float(np.nanmean(list(per_group.values()))), per_group


def cv_seed_spread(encoder_vectors: dict[str, np.ndarray], records: Sequence, *, seeds: Sequence[int] = (0, 1, 2),
                   **kwargs) -> tuple[float, float]:
    """Mean and standard deviation of :func:`grouped_cold_auc` over CV fold seeds: the noise floor of a comparison."""
    values = [grouped_cold_auc(encoder_vectors, records, seed=s, **kwargs)[0] for s in seeds]
    return float(np.mean(values)), float(np.std(values))


def encode_unique(encoder: Encoder, texts: Sequence[str], *, chunk: int = 256,
                  seed: int = 0) -> tuple[Timing, float, dict[str, np.ndarray]]:
    """Encode each distinct text once, in shuffled chunks; return total timing, median chunk rate, text -> vector.

    On a shared machine a burst of someone else's work slows a few chunks; the
    median chunk rate ignores such bursts where the total cannot. Chunks are
    shuffled so each has the same length mix.
    """
    unique = list(dict.fromkeys(texts))
    order = np.random.default_rng(seed).permutation(len(unique))
    vectors: dict[str, np.ndarray] = {}
    rates, wall, cpu = [], 0.0, 0.0
    for start in range(0, len(unique), chunk):
        part = [unique[i] for i in order[start:start + chunk]]
        timing, out = time_call(lambda: encoder.encode(part), len(part))
        vectors.update(zip(part, np.asarray(out)))
        wall, cpu = wall + timing.wall_s, cpu + timing.cpu_s
        if len(part) == chunk or not rates:
            rates.append(timing.per_s)
    return Timing(len(unique), wall, cpu), float(np.median(rates)), vectors
