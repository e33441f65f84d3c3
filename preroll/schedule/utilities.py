"""Per-prompt utilities u(n): what a group of n rollouts is worth.

Each utility returns a table ``U[i, n]`` for n = 0..n_max (``U[:, 0] = 0``:
a skipped prompt is worth nothing). Under a Beta(a, b) belief the table is
the *expectation* of the utility over the belief, not the utility at the
mean: an uncertain p = 0.05 may well be 0.3, and a group there pays.
Expectations use exact Beta moments, computed by running products so a
column costs two vector multiplies:

    E[p^n] = prod_{j<n} (a + j) / (a + b + j)
    E[p^i (1-p)^j] = prod_{k<i}(a+k) * prod_{k<j}(b+k) / prod_{k<i+j}(a+b+k)

All three utilities are concave in n on n >= 2 (each is a non-negative
mixture of concave functions), which is what makes the allocation solver in
:mod:`preroll.schedule.solver` exact.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from preroll.schedule.beliefs import RateBelief

UtilityTable = Callable[[RateBelief, int], np.ndarray]


def _power_moments(belief: RateBelief, n_max: int, *, shift_p: int = 0, shift_q: int = 0):
    """Yield (n, E[p^(n+shift_p) q^shift_q], E[p^shift_p q^(n+shift_q)]) for n = 0..n_max.

    Point beliefs use the plain powers.
    """
    k = len(belief)
    ab = belief.params
    if ab is None:
        p = belief.mean
        q = 1.0 - p
        base = p ** shift_p * q ** shift_q
        ep, eq = base.copy(), base.copy()
        for n in range(n_max + 1):
            yield n, ep, eq
            ep = ep * p
            eq = eq * q
        return
    a, b = ab
    s = a + b
    # E[p^sp q^sq] by the product formula.
    base = np.ones(k)
    for j in range(shift_p):
        base = base * (a + j) / (s + j)
    for j in range(shift_q):
        base = base * (b + j) / (s + shift_p + j)
    ep, eq = base.copy(), base.copy()
    tot = shift_p + shift_q
    for n in range(n_max + 1):
        yield n, ep, eq
        ep = ep * (a + shift_p + n) / (s + tot + n)
        eq = eq * (b + shift_q + n) / (s + tot + n)


def informative_groups(belief: RateBelief, n_max: int) -> np.ndarray:
    """V_0's utility: probability that a group of n is not degenerate.

    u(n, p) = 1 - p^n - (1-p)^n, the chance that n Bernoulli(p) rollouts are
    neither all correct nor all wrong, i.e. that GRPO gets a non-zero
    advantage from the group (V_0, arXiv 2602.03584, uses this expected
    informativeness to spend the rollout budget greedily). Summed over a
    batch it is the expected number of informative groups.
    """
    out = np.zeros((len(belief), n_max + 1), order="F")
    for n, ep, eq in _power_moments(belief, n_max):
        if n:
            out[:, n] = 1.0 - ep - eq
    return np.maximum(out, 0.0, out=out)


def knapsack_value(belief: RateBelief, n_max: int) -> np.ndarray:
    """Knapsack RL's task value (arXiv 2509.25849).

    Value(n, p) = ProbNonZeroGradient(n, p) * InfoGain(p)
                = (1 - p^n - (1-p)^n) * p (1-p)^2,

    InfoGain(p) = p(1-p)^2 being the paper's approximation of how much one
    policy-gradient step on the prompt raises its success probability (our
    reading of the paper). It favours hard-but-solvable prompts over easy
    ones that an informativeness count treats the same.
    Under Beta(a, b): E[p q^2] - E[p^(n+1) q^2] - E[p q^(n+2)].
    """
    out = np.zeros((len(belief), n_max + 1), order="F")
    base = None
    for n, ep, eq in _power_moments(belief, n_max, shift_p=1, shift_q=2):
        if n == 0:
            base = ep.copy()  # E[p q^2]
            continue
        # ep = E[p^(1+n) q^2]; eq = E[p q^(2+n)]
        out[:, n] = base - ep - eq
    return np.maximum(out, 0.0, out=out)


def group_variance(belief: RateBelief, n_max: int) -> np.ndarray:
    """Variance objective: expected within-group reward variance.

    u(n, p) = p(1-p) * (1 - 1/n) is the expectation of the group's plug-in
    reward variance (1/n) sum (r_j - mean r)^2, i.e. the mean squared
    advantage under a group-mean baseline: the size of the learning signal
    the group carries (Bernoulli Fisher information p(1-p) per rollout, less
    the one degree of freedom the baseline spends). Its returns diminish as
    1/(n(n-1)). Under Beta(a, b): E[p(1-p)] = ab / ((a+b)(a+b+1)).
    """
    ab = belief.params
    if ab is not None:
        a, b = ab
        epq = a * b / ((a + b) * (a + b + 1.0))
    else:
        epq = belief.mean * (1.0 - belief.mean)
    out = np.zeros((len(belief), n_max + 1), order="F")
    for n in range(2, n_max + 1):
        out[:, n] = epq * (1.0 - 1.0 / n)
    return out


UTILITIES: dict[str, UtilityTable] = {
    "greedy": informative_groups,
    "knapsack": knapsack_value,
    "variance": group_variance,
}
