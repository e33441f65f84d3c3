"""The allocation rules, one function each, all returning integer group sizes.

Every rule returns n_i in {0} ∪ [lo, hi] with sum n_i == budget; the entry
point :func:`preroll.schedule.allocate` validates input and feasibility first.
"""

from __future__ import annotations

import numpy as np

from preroll.schedule.beliefs import RateBelief
from preroll.schedule.solver import feasible_group_count, solve_concave
from preroll.schedule.utilities import UTILITIES, informative_groups


def group_count(budget: int, n_items: int, lo: int, hi: int, group_size: int) -> int:
    """How many prompts a fixed-group-size rule draws: budget // group_size,
    moved into the feasible range [ceil(budget/hi), min(n_items, budget//lo)]."""
    if budget == 0:
        return 0
    k_min = feasible_group_count(budget, n_items, lo, hi)
    assert k_min is not None   # allocate refuses an infeasible budget before any rule runs
    k_max = min(n_items, budget // lo)
    return int(min(max(budget // group_size, k_min), k_max))


def spread(chosen: np.ndarray, n_items: int, budget: int) -> np.ndarray:
    """Split ``budget`` as evenly as possible over the ``chosen`` candidates.

    With k chosen and k*lo <= budget <= k*hi, sizes floor(budget/k) and
    floor(budget/k)+1 both lie in [lo, hi].
    """
    x = np.zeros(n_items, dtype=np.int64)
    k = len(chosen)
    if k == 0:
        return x
    base, extra = divmod(budget, k)
    x[chosen] = base
    x[chosen[:extra]] += 1
    return x


def uniform(belief: RateBelief, budget: int, lo: int, hi: int, *, group_size: int,
            rng: np.random.Generator) -> np.ndarray:
    """GRPO's baseline: prompts drawn uniformly at random, fixed group size.

    k = budget // group_size prompts get group_size rollouts each (the
    remainder, if any, spread one by one), predictions unused.
    """
    n = len(belief)
    k = group_count(budget, n, lo, hi, group_size)
    return spread(rng.permutation(n)[:k], n, budget)


def thompson(belief: RateBelief, budget: int, lo: int, hi: int, *, group_size: int,
             rng: np.random.Generator, fallback_concentration: float) -> np.ndarray:
    """Thompson-sampling prompt selection (MoPPS, arXiv 2507.04632; VADE).

    Draw p~_i ~ Beta(a_i, b_i) from each prompt's posterior, score it by the
    informativeness the draw promises, 1 - p~^g - (1-p~)^g for group size g
    (largest at p~ = 1/2, the target MoPPS selects toward), and give the k
    best-scoring prompts g rollouts each. Randomness in the draw is the
    exploration: an uncertain prompt is sometimes tried even when its mean
    looks dead.
    """
    n = len(belief)
    k = group_count(budget, n, lo, hi, group_size)
    draw = belief.sample(rng, fallback_concentration)
    g = max(lo, min(hi, group_size))
    score = 1.0 - draw ** g - (1.0 - draw) ** g
    if k < n:
        chosen = np.argpartition(-score, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
    else:
        chosen = np.arange(n)
    chosen = chosen[np.argsort(-score[chosen], kind="stable")]
    return spread(chosen, n, budget)


def by_utility(name: str, belief: RateBelief, budget: int, lo: int, hi: int) -> np.ndarray:
    """Exact utility-maximising allocation for the utility called ``name``
    ("greedy" = V_0's informativeness, "knapsack" = Knapsack RL's value,
    "variance" = expected group reward variance)."""
    utility = UTILITIES[name]

    n = len(belief)

    def table(idx: np.ndarray, n_max: int) -> np.ndarray:
        whole = idx.size == n and idx[0] == 0 and idx[-1] == n - 1  # the solver's first call
        return utility(belief if whole else belief.subset(idx), n_max)

    return solve_concave(table, len(belief), budget, lo, hi)


__all__ = ["uniform", "thompson", "by_utility", "group_count", "spread", "informative_groups"]
