"""Input checks of the prompt book: every message names the argument and the first bad position."""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np

from preroll.online.errors import OnlineInputError


def check_step(step, last_step: int | None) -> int:
    if isinstance(step, bool) or not isinstance(step, (numbers.Integral, np.integer)):
        raise OnlineInputError(f"must be an integer training step (got {step!r})", field="step")
    step = int(step)
    if step < 0:
        raise OnlineInputError(f"must be >= 0 (got {step})", field="step")
    if last_step is not None and step < last_step:
        raise OnlineInputError(f"is {step}, before the last recorded step {last_step} (steps must not go backwards)",
                               field="step")
    return step


def check_indices(values, n_prompts: int, field: str, *, distinct: bool = False) -> np.ndarray:
    """Dataset indices as int64, each in [0, n_prompts)."""
    if isinstance(values, (str, bytes)):
        raise OnlineInputError("must be a sequence of dataset indices", field=field)
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError):
        raise OnlineInputError("must be a sequence of dataset indices", field=field) from None
    if arr.ndim != 1:
        raise OnlineInputError(f"must be one-dimensional (got shape {arr.shape})", field=field)
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise OnlineInputError(f"must hold integers (got {arr.dtype})", field=field)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise OnlineInputError(f"is {arr[i]!r}, not a whole number", field=field, index=i)
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_prompts)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise OnlineInputError(f"is {arr[i]}, out of range for {n_prompts} prompts (0..{n_prompts - 1})",
                               field=field, index=i)
    if distinct:
        uniq, first, counts = np.unique(arr, return_index=True, return_counts=True)
        if (counts > 1).any():
            value = int(uniq[counts > 1][0])
            i = int(np.flatnonzero(arr == value)[1])
            raise OnlineInputError(f"repeats dataset index {value} (the entries must be distinct)", field=field, index=i)
    return arr


def check_rewards(rewards: Sequence[Sequence[float]], n_groups: int, reward_range: tuple[float, float] | None):
    """Per group: the raw rewards' sum, their count, smallest and largest; NaN/inf (and, when ``reward_range``
    is given, a reward outside it) is an error naming the group."""
    if isinstance(rewards, (str, bytes)) or not hasattr(rewards, "__len__"):
        raise OnlineInputError("must be a sequence of reward groups, one per index", field="rewards")
    if len(rewards) != n_groups:
        raise OnlineInputError(f"has {len(rewards)} groups for {n_groups} indices (one group per index)",
                               field="rewards")
    groups = []
    for i, group in enumerate(rewards):
        try:
            g = np.asarray(group, dtype=float)
        except (TypeError, ValueError):
            raise OnlineInputError("must be a sequence of numbers", field="rewards", index=i) from None
        if g.ndim == 0:
            g = g.reshape(1)
        if g.ndim != 1 or g.size == 0:
            raise OnlineInputError("must be a non-empty list of rewards", field="rewards", index=i)
        groups.append(g)
    lengths = np.array([g.size for g in groups], dtype=np.int64)
    flat = np.concatenate(groups) if groups else np.zeros(0)
    bad = ~np.isfinite(flat)
    if reward_range is not None:
        lo, hi = reward_range
        bad |= (flat < lo) | (flat > hi)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        i = int(np.searchsorted(np.cumsum(lengths), j, side="right"))
        where = f", outside reward_range [{lo:g}, {hi:g}]" if reward_range is not None else " (not finite)"
        raise OnlineInputError(f"holds reward {float(flat[j])!r}{where}", field="rewards", index=i)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if groups else np.zeros(0, np.int64)
    total = np.add.reduceat(flat, starts) if groups else np.zeros(0)
    gmax = np.maximum.reduceat(flat, starts) if groups else np.zeros(0)
    gmin = np.minimum.reduceat(flat, starts) if groups else np.zeros(0)
    return total, lengths.astype(float), gmin, gmax


def prompt_ids(prompts: Sequence[str], ids) -> list[str]:
    """Stable ids: the given ones (distinct), or sha256 of the text (``#k`` added to the k-th repeat of a text)."""
    import hashlib

    if isinstance(prompts, (str, bytes)):
        raise OnlineInputError("must be a sequence of prompt texts", field="prompts")
    prompts = list(prompts)
    if not prompts:
        raise OnlineInputError("is empty (the book needs the dataset's prompts)", field="prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise OnlineInputError("is empty or not text", field="prompts", index=i)
    if ids is None:
        seen: dict[str, int] = {}
        out = []
        for p in prompts:
            h = hashlib.sha256(p.encode("utf-8")).hexdigest()
            k = seen.get(h, 0)
            seen[h] = k + 1
            out.append(h if k == 0 else f"{h}#{k}")
        return out
    if isinstance(ids, (str, bytes)):
        raise OnlineInputError("must be a sequence of ids, one per prompt", field="ids")
    ids = list(ids)
    if len(ids) != len(prompts):
        raise OnlineInputError(f"has {len(ids)} entries for {len(prompts)} prompts", field="ids")
    first: dict[str, int] = {}
    out = []
    for i, x in enumerate(ids):
        if isinstance(x, bool) or not isinstance(x, (str, numbers.Integral, np.integer)):
            raise OnlineInputError(f"must be a string or an integer (got {x!r})", field="ids", index=i)
        key = str(int(x)) if not isinstance(x, str) else x
        if not key:
            raise OnlineInputError("is empty", field="ids", index=i)
        if key in first:
            raise OnlineInputError(f"duplicates id {key!r} of position {first[key]}", field="ids", index=i)
        first[key] = i
        out.append(key)
    return out
