"""How TRL's rewards become the book's successes.

The book's success of a rollout is the *weighted sum of the reward functions*
(``sum_k w_k r_k``, exactly TRL's own ``rewards`` before group normalisation),
mapped linearly from ``reward_range`` to [0, 1]. A rollout for which every
reward function returned None is unscorable in TRL (advantage 0) and is left
out of the book; other None values count as 0, as in TRL's ``nansum``.
"""

from __future__ import annotations

import numpy as np

from preroll.integrations.trl.errors import PrerollTRLError


def check_weights(weights: np.ndarray, names: list[str], reward_range: tuple[float, float], explicit: bool) -> None:
    """Refuse, at start, a reward setup whose weighted sum the default reward_range cannot describe.

    With the default range (0, 1) and rewards in [0, 1] each, the weighted sum
    stays in [0, 1] only for non-negative weights summing to at most 1. Any
    other setup must declare the range of its weighted sum explicitly; a
    declared range is then checked on every step's rewards.
    """
    w = np.asarray(weights, dtype=float)
    if w.size == 0:
        raise PrerollTRLError("no reward functions: the book has nothing to learn from")
    if not np.isfinite(w).all():
        raise PrerollTRLError(f"reward_weights {w.tolist()} are not all finite")
    if explicit:
        return
    lo, hi = float(np.minimum(w, 0).sum()), float(np.maximum(w, 0).sum())
    if lo < reward_range[0] - 1e-9 or hi > reward_range[1] + 1e-9:
        raise PrerollTRLError(
            f"{len(w)} reward function(s) {names} with weights {w.tolist()}: for rewards in [0, 1] their weighted "
            f"sum (the book's success before mapping) ranges over [{lo:g}, {hi:g}], beyond the default reward_range "
            f"{tuple(reward_range)}; declare the range of the weighted sum, e.g. "
            f"preroll=OnlineSettings(reward_range=({lo:g}, {hi:g})), or use non-negative weights summing to 1")


def weighted_rewards(rewards_per_func: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """TRL's weighted sum per rollout; NaN where every reward function returned None."""
    r = np.asarray(rewards_per_func, dtype=float)
    total = np.nansum(r * np.asarray(weights, dtype=float)[None, :], axis=1)
    total[np.isnan(r).all(axis=1)] = np.nan
    return total


def groups_for_book(rows: np.ndarray, total: np.ndarray, reward_range: tuple[float, float], step: int,
                    ids: list[str]) -> tuple[list[int], list[list[float]]]:
    """One (index, rewards) group per chosen prompt; a reward outside reward_range is an error naming it."""
    lo, hi = reward_range
    bad = np.flatnonzero(~np.isnan(total) & ((total < lo) | (total > hi) | ~np.isfinite(total)))
    if bad.size:
        j = int(bad[0])
        raise PrerollTRLError(
            f"step {step}: weighted reward {total[j]:g} of a completion for prompt id {ids[int(rows[j])]!r} "
            f"(dataset row {int(rows[j])}) is outside reward_range [{lo:g}, {hi:g}]; declare the range of the "
            f"weighted reward sum with preroll=OnlineSettings(reward_range=(lo, hi))")
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
