"""How TRL's rewards become the book's successes.

The book's success of a rollout is the *weighted sum of the reward functions*
(``sum_k w_k r_k``, exactly TRL's own ``rewards`` before group normalisation),
mapped linearly to [0, 1] from the declared ``reward_range`` or, by default,
from the range of weighted sums the book has seen (any reward works: negative,
unbounded, several weighted terms). A rollout for which every
reward function returned None is unscorable in TRL (advantage 0) and is left
out of the book; other None values count as 0, as in TRL's ``nansum``.
"""

from __future__ import annotations

import numpy as np

from preroll.integrations.trl.errors import PrerollTRLError


def check_weights(weights: np.ndarray, names: list[str]) -> None:
    """Refuse, at start, a reward setup the book cannot learn from: no reward function, or non-finite weights.

    The weights' signs and sum need no declaration: the book learns the scale
    of the weighted sum from the rewards it sees (``OnlineSettings.reward_range``).
    """
    w = np.asarray(weights, dtype=float)
    if w.size == 0:
        raise PrerollTRLError("no reward functions: the book has nothing to learn from")
    if not np.isfinite(w).all():
        raise PrerollTRLError(f"reward_weights {w.tolist()} of {names} are not all finite")


def weighted_rewards(rewards_per_func: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """TRL's weighted sum per rollout; NaN where every reward function returned None."""
    r = np.asarray(rewards_per_func, dtype=float)
    total = np.nansum(r * np.asarray(weights, dtype=float)[None, :], axis=1)
    total[np.isnan(r).all(axis=1)] = np.nan
    return total


def groups_for_book(rows: np.ndarray, total: np.ndarray, reward_range: tuple[float, float] | None, step: int,
                    ids: list[str]) -> tuple[list[int], list[list[float]]]:
    """One (index, rewards) group per chosen prompt; an infinite reward, or one outside a declared
    reward_range, is an error naming it."""
    bad_value = ~np.isnan(total) & ~np.isfinite(total)
    if reward_range is not None:
        lo, hi = reward_range
        bad_value |= ~np.isnan(total) & ((total < lo) | (total > hi))
    bad = np.flatnonzero(bad_value)
    if bad.size:
        j = int(bad[0])
        why = (f"is outside the declared reward_range [{lo:g}, {hi:g}]; widen it, or leave reward_range unset and "
               "the book learns the scale from the rewards") if reward_range is not None else "is not finite"
        raise PrerollTRLError(
            f"step {step}: weighted reward {total[j]:g} of a completion for prompt id {ids[int(rows[j])]!r} "
            f"(dataset row {int(rows[j])}) {why}")
    indices: list[int] = []
    groups: list[list[float]] = []
    order: dict[int, int] = {}
    for i, r in zip(rows.tolist(), total.tolist()):
        if np.isnan(r):
            continue
        if i not in order:
            order[i] = len(indices)
            indices.append(i)
            groups.append([])
        groups[order[i]].append(r)
    return indices, groups
