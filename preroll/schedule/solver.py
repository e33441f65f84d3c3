"""Exact integer allocation of a rollout budget under concave utilities.

Problem: choose n_i in {0} ∪ [m, M] for every candidate so that
sum_i n_i = B and sum_i u_i(n_i) is largest. This is a multiple-choice
knapsack; its textbook DP costs O(items * B * choices), hopeless for a
million candidates. We use the structure instead:

1. *Hull.* For u_i concave on [m, M] with u_i(0) = 0, the upper concave hull
   of u_i over {0} ∪ [m, M] is one "block" segment from 0 to
   n*_i = argmax_{n in [m, M]} u_i(n)/n (slope s0_i = u_i(n*)/n*) followed by
   unit segments of slope u_i(n) - u_i(n-1), each no steeper than the last.
2. *Lagrangian threshold.* The continuous relaxation on the hulls is solved
   by taking segments in order of slope; the cut slope λ is found by a
   weighted selection (expected linear time), not a sort. Every candidate
   then sits at a maximiser of u_i(n) - λ n.
3. *Ties and the one split block.* Segments of slope exactly λ are taken in
   index order while they fit. If the budget is then met exactly, the
   solution is optimal: its value equals the Lagrangian bound
   L(λ) = sum_i max_n [u_i(n) - λ n] + λ B.
4. *Core DP with reduced-cost proof.* Otherwise a block straddles the
   budget. Any feasible x has value L(λ) - sum_i loss_i(x_i) with
   loss_i(n) = max_n' [u_i(n') - λ n'] - [u_i(n) - λ n] >= 0. We solve the
   small DP "minimise total loss" over a core of the candidates whose
   cheapest change is smallest, with everyone else fixed. If every fixed
   candidate's cheapest change costs at least the core optimum's loss, no
   solution that moves them can do better, so the core optimum is the
   global one; if not, the core grows and the DP runs again.

:func:`solve_by_dp` is the plain DP, kept as the reference the tests compare
against on small instances.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

#: table_fn(indices, n_max) -> utilities U[len(indices), n_max + 1]
TableFn = Callable[[np.ndarray, int], np.ndarray]


def feasible_group_count(budget: int, n_items: int, lo: int, hi: int) -> int | None:
    """Smallest number of non-empty groups that can hold exactly ``budget``.

    k groups of sizes in [lo, hi] hold any total in [k*lo, k*hi]; the smallest
    k with budget <= k*hi is ceil(budget/hi), and it works iff
    k*lo <= budget and k <= n_items. Returns None when no k works.
    """
    if budget == 0:
        return 0
    k = -(-budget // hi)
    if k > n_items or k * lo > budget:
        return None
    return k


def _weighted_threshold(s: np.ndarray, w: np.ndarray, need: float, rng: np.random.Generator) -> float:
    """Largest λ with weight(s >= λ) >= need (needs 0 < need <= w.sum()).

    Selection, not sorting: two pivots from a random sample bracket the
    target quantile, one pass keeps only the side or band that holds λ, and
    the last few thousand values are sorted.
    """
    total = float(w.sum())
    while s.size > 20_000:
        q = 1.0 - need / total
        sample = s[rng.integers(0, s.size, 4096)]
        lo_p, hi_p = np.quantile(sample, [max(q - 0.01, 0.0), min(q + 0.01, 1.0)], method="nearest")
        above = s > hi_p
        wa = float(w[above].sum())
        if wa >= need:
            s, w, total = s[above], w[above], wa
            continue
        band = (s >= lo_p) & ~above
        wb = float(w[band].sum())
        if wa + wb >= need:
            need -= wa
            s, w, total = s[band], w[band], wb
        else:
            need -= wa + wb
            below = s < lo_p
            s, w = s[below], w[below]
            total = float(w.sum())
    order = np.argsort(-s, kind="stable")
    csum = np.cumsum(w[order])
    k = int(np.searchsorted(csum, need - 1e-9))
    return float(s[order[min(k, s.size - 1)]])


class _Hull:
    """Hull segments of one table of utilities (columns 0..W-1)."""

    def __init__(self, table: np.ndarray, lo: int):
        # Column by column: tables are Fortran-ordered, so each step is one
        # contiguous pass over the candidates.
        width = table.shape[1]
        k = table.shape[0]
        self.table = table
        self.n_top = width - 1
        self.s0 = table[:, lo] / lo
        self.n_star = np.full(k, lo, dtype=np.int64)
        for n in range(lo + 1, width):
            r = table[:, n] / n
            better = r > self.s0
            self.s0 = np.where(better, r, self.s0)
            self.n_star[better] = n
        # Unit slopes for n = lo+1 .. width-1, valid only beyond n*; the
        # running minimum guards concavity against rounding.
        units = np.empty((k, max(width - 1 - lo, 0)), order="F")  # every column is written below
        prev = self.s0
        for j, n in enumerate(range(lo + 1, width)):
            d = np.minimum(table[:, n] - table[:, n - 1], prev)
            valid = n > self.n_star
            prev = np.where(valid, d, prev)
            units[:, j] = np.where(valid, d, -np.inf)
        self.units = units

    def segments(self, floor: float = -np.inf):
        """Blocks, and the unit segments with slope >= ``floor`` (the others
        cannot reach the cut when ``floor`` is a lower bound on λ)."""
        units = self.units[self.units >= floor] if np.isfinite(floor) else self.units[np.isfinite(self.units)]
        s = np.concatenate([self.s0, units])
        w = np.concatenate([self.n_star.astype(float), np.ones(units.size)])
        return s, w

    def strict(self, lam: float) -> np.ndarray:
        x = self.n_star.copy()
        for j in range(self.units.shape[1]):
            x += self.units[:, j] > lam
        x[~(self.s0 > lam)] = 0
        return x

    def gains(self, lam: float, lo: int) -> tuple[np.ndarray, np.ndarray]:
        """u(n) - λ n for n in {0} ∪ [lo, n_top] and the matching n values."""
        ns = np.concatenate([[0], np.arange(lo, self.n_top + 1)])
        g = self.table[:, ns] - lam * ns[None, :]
        return g, ns


def _fill_ties(x, hull: _Hull, lam: float, room: int) -> int:
    """Take segments of slope exactly λ, in index order, while they fit."""
    if room <= 0:
        return room
    tied_units = np.zeros(len(x), dtype=np.int64)
    near = np.flatnonzero(hull.s0 >= lam)
    tied_units[near] = (hull.units[near] == lam).sum(axis=1)
    active = x > 0
    # Units of candidates already holding their block (weight 1: always fit).
    cand = np.flatnonzero(active & (tied_units > 0))
    if cand.size:
        take = np.minimum(tied_units[cand], np.maximum(room - np.concatenate([[0], np.cumsum(tied_units[cand])[:-1]]), 0))
        x[cand] += take
        room -= int(take.sum())
    if room <= 0:
        return room
    # Tied blocks, then those candidates' tied units.
    cand = np.flatnonzero(~active & (hull.s0 == lam))
    if cand.size:
        sizes = hull.n_star[cand]
        fits = np.cumsum(sizes) <= room
        chosen = cand[fits]
        x[chosen] = hull.n_star[chosen]
        room -= int(hull.n_star[chosen].sum())
        if room > 0 and chosen.size:
            extra = tied_units[chosen]
            take = np.minimum(extra, np.maximum(room - np.concatenate([[0], np.cumsum(extra)[:-1]]), 0))
            x[chosen] += take
            room -= int(take.sum())
    return room


def _min_loss_dp(losses: np.ndarray, ns: np.ndarray, budget: int):
    """Minimise sum of losses[i, c] over choices c with sum ns[c] == budget.

    ``losses`` is (k, C) with +inf for a forbidden choice. Returns (best,
    choice index per row) or (inf, None).
    """
    k = losses.shape[0]
    dp = np.full(budget + 1, np.inf)
    dp[0] = 0.0
    choice = np.zeros((k, budget + 1), dtype=np.int32)
    for i in range(k):
        new = np.full(budget + 1, np.inf)
        arg = np.zeros(budget + 1, dtype=np.int32)
        for c, n in enumerate(ns):
            if n > budget or not np.isfinite(losses[i, c]):
                continue
            cand = np.full(budget + 1, np.inf)
            cand[n:] = dp[: budget + 1 - n] + losses[i, c]
            better = cand < new
            new[better] = cand[better]
            arg[better] = c
        dp = new
        choice[i] = arg
    if not np.isfinite(dp[budget]):
        return np.inf, None
    picks = np.zeros(k, dtype=np.int64)
    b = budget
    for i in range(k - 1, -1, -1):
        c = choice[i, b]
        picks[i] = c
        b -= int(ns[c])
    return float(dp[budget]), picks


def solve_concave(table_fn: TableFn, n_items: int, budget: int, lo: int, hi: int, *,
                  chunk: int = 6, core: int = 64, max_core: int = 1024,
                  seed: int = 0) -> np.ndarray:
    """Exact maximiser of sum u_i(n_i) s.t. sum n_i = budget, n_i in {0} ∪ [lo, hi].

    ``table_fn`` must give utilities concave in n on [lo, hi] with u(0) = 0.
    Utilities are tabulated up to max(lo, budget / items) + ``chunk``
    rollouts first and widened (doubling) only for the candidates that reach
    that edge, so a million candidates cost a few narrow tables, not a
    million-by-``hi`` one. Feasibility
    (see :func:`feasible_group_count`) is the caller's check.
    """
    x_out = np.zeros(n_items, dtype=np.int64)
    if budget == 0:
        return x_out
    rng = np.random.default_rng(seed)
    all_idx = np.arange(n_items)
    # Start wide enough for the average group, plus ``chunk``; grow by doubling.
    width = min(hi, max(lo + chunk, -(-budget // n_items) + chunk))
    groups: list[tuple[np.ndarray, _Hull]] = [(all_idx, _Hull(table_fn(all_idx, width), lo))]
    while True:
        if sum(len(idx) * h.n_top for idx, h in groups) < budget:
            # The truncated tables cannot even hold the budget: widen all.
            groups = [(idx, _Hull(table_fn(idx, min(hi, 2 * h.n_top)), lo)) if h.n_top < hi else (idx, h)
                      for idx, h in groups]
            continue
        # Blocks alone bound λ from below (units are no steeper than their
        # block), which lets most unit segments be dropped before selection.
        s0 = np.concatenate([h.s0 for _, h in groups])
        w0 = np.concatenate([h.n_star for _, h in groups]).astype(float)
        floor = _weighted_threshold(s0, w0, float(budget), rng) if w0.sum() >= budget else -np.inf
        parts = [h.segments(floor) for _, h in groups]
        s = np.concatenate([p[0] for p in parts])
        w = np.concatenate([p[1] for p in parts])
        lam = _weighted_threshold(s, w, float(budget), rng)
        x = np.zeros(n_items, dtype=np.int64)
        for idx, h in groups:
            x[idx] = h.strict(lam)
        room = budget - int(x.sum())
        for idx, h in groups:
            sub = x[idx]
            room = _fill_ties(sub, h, lam, room)
            x[idx] = sub
        # Candidates on the edge of a truncated table may want more: widen
        # just those (doubling their width) and solve again.
        regrouped, grew = [], False
        for idx, h in groups:
            edge = (x[idx] >= h.n_top) if h.n_top < hi else np.zeros(len(idx), dtype=bool)
            if not edge.any():
                regrouped.append((idx, h))
                continue
            grew = True
            if not edge.all():
                regrouped.append((idx[~edge], _Hull(h.table[~edge], lo)))
            regrouped.append((idx[edge], _Hull(table_fn(idx[edge], min(hi, 2 * h.n_top)), lo)))
        groups = regrouped
        if not grew:
            break
    if room == 0:
        return x
    return _repair(table_fn, groups, x, lam, budget, lo, hi, core=core, max_core=max_core)


def _repair(table_fn, groups, x, lam, budget, lo, hi, *, core, max_core):
    """Core DP on the loss l_i(n) = max g_i - g_i(n), with the reduced-cost proof."""
    n_items = len(x)
    cheapest = np.empty(n_items)
    for idx, h in groups:
        g, ns = h.gains(lam, lo)
        best = g.max(axis=1)
        loss = best[:, None] - g
        here = ns[None, :] == x[idx][:, None]
        cheapest[idx] = np.where(here, np.inf, loss).min(axis=1)
    ns_full = np.concatenate([[0], np.arange(lo, hi + 1)])
    size = min(core, n_items)
    while True:
        members = np.argpartition(cheapest, size - 1)[:size] if size < n_items else np.arange(n_items)
        table = table_fn(members, hi)
        g = table[:, ns_full] - lam * ns_full[None, :]
        loss = g.max(axis=1)[:, None] - g
        sub_budget = budget - int(x.sum()) + int(x[members].sum())
        total, picks = _min_loss_dp(loss, ns_full, sub_budget)
        outside = np.ones(n_items, dtype=bool)
        outside[members] = False
        proven = np.isfinite(total) and not (cheapest[outside] < total - 1e-12).any()
        if proven or size >= min(max_core, n_items):
            break
        size = min(size * 4, max_core, n_items)
    if picks is None:
        raise RuntimeError("no exact split of the budget found; this is a solver bug, please report it")
    if not proven:
        warnings.warn(f"rollout allocation: optimality not proven within a core of {size} candidates; "
                      "returning the best allocation found", RuntimeWarning, stacklevel=3)
    x = x.copy()
    x[members] = ns_full[picks]
    return x


def solve_by_dp(utilities: np.ndarray, budget: int, lo: int, hi: int) -> tuple[float, np.ndarray]:
    """Reference solver: plain DP over all candidates (small instances only).

    ``utilities[i, n]`` for n = 0..hi. Returns (best total utility, allocation).
    """
    ns = np.concatenate([[0], np.arange(lo, hi + 1)])
    total, picks = _min_loss_dp(-utilities[:, ns], ns, budget)
    if picks is None:
        raise ValueError("infeasible")
    return -total, ns[picks]
