"""Several contexts in one history: the ``groups`` argument every head takes.

A history often mixes contexts whose base rates differ: one policy at
several training steps (DAPO-Math: mean success .37 at step 16, .62 at 256)
or several policies. Which prompts are hard carries over between them
(r ~ 0.85 for the same prompt across steps), so a head should pool them and
learn one offset per context rather than discard the older ones. ``groups``
(an integer per row, ``0..n_groups-1``) names each row's context; a query is
scored for the context its own group names. Linear and kernel heads see the
groups as a one-hot block beside the features; the neighbour head compares
each neighbour to its own context's base rate.
"""

from __future__ import annotations

import numpy as np


def check_groups(groups, n_rows: int, n_groups: int | None = None) -> np.ndarray | None:
    """``groups`` as an int array of length ``n_rows`` (None stays None)."""
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (n_rows,) or not np.issubdtype(g.dtype, np.integer) or (len(g) and g.min() < 0):
        raise ValueError(f"groups must be {n_rows} non-negative integers, one per row")
    if n_groups is not None and len(g) and g.max() >= n_groups:
        raise ValueError(f"group {int(g.max())} was not in the fitted history (it had {n_groups} groups)")
    return g.astype(int)


def with_group_block(X: np.ndarray, groups: np.ndarray | None, n_groups: int, scale: float) -> np.ndarray:
    """``X`` with a one-hot block of height ``scale`` naming each row's group (unchanged without groups)."""
    if groups is None or n_groups <= 1:
        return X
    block = np.zeros((len(X), n_groups))
    block[np.arange(len(X)), groups] = scale
    return np.hstack([X, block])
