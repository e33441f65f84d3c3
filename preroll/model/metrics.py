"""Scores for success-rate predictions (V_0's AUC label: rate >= 0.5)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def expected_calibration_error(pred: np.ndarray, rate: np.ndarray, n_bins: int = 10) -> float:
    """Mean |predicted - observed rate| over equal-width bins, weighted by bin size."""
    bins = np.clip((pred * n_bins).astype(int), 0, n_bins - 1)
    err = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            err += m.mean() * abs(pred[m].mean() - rate[m].mean())
    return float(err)


def score(pred: np.ndarray, rate: np.ndarray) -> dict[str, float]:
    label = rate >= 0.5
    auc = float(roc_auc_score(label, pred)) if 0 < label.sum() < len(label) else float("nan")
    return {"auc": auc, "brier": float(np.mean((pred - label) ** 2)), "mae": float(np.mean(np.abs(pred - rate))),
            "ece": expected_calibration_error(pred, rate), "n": int(len(pred))}
