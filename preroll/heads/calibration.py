"""Turn out-of-fold point predictions into calibrated Beta beliefs.

A head's mean says where a prompt's success rate probably lies; how far the
true rate scatters around it is a property of the data, not of the head. We
estimate it once per fit: the Beta concentration ``kappa`` that maximises the
beta-binomial likelihood of the context's own outcomes given out-of-fold means.
Allocation and the fused baseline then see an honest spread.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.stats import betabinom

_EPS = 1e-4


def fit_concentration(mean: np.ndarray, successes: np.ndarray, attempts: np.ndarray) -> float:
    """Maximum-likelihood Beta concentration of true rates around ``mean``.

    Rows with fractional counts (rates logged without attempts) are rounded,
    as the beta-binomial needs integers.
    """
    m = np.clip(mean, _EPS, 1 - _EPS)
    n = np.maximum(np.round(attempts), 1).astype(int)
    k = np.clip(np.round(successes), 0, n).astype(int)

    def nll(log_kappa: float) -> float:
        kappa = np.exp(log_kappa)
        return -betabinom.logpmf(k, n, m * kappa, (1 - m) * kappa).sum()

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(1e3)), method="bounded")
    return float(np.exp(res.x))

