"""How the book chooses: expected informative groups, plus two kinds of exploration.

The objective is V_0's: a group of g rollouts carries a GRPO gradient only if
its rewards are not all equal, so a chosen prompt is worth
E[1 - p^g - (1-p)^g] under its Beta belief
(:func:`preroll.schedule.utilities.informative_groups`, exact Beta moments).
Pure exploitation of that would never look again at a prompt judged dead and
would under-sample prompts the book knows little about, so:

- **revisits**: a prompt in the pool whose last ``k`` groups were dead is
  forced in with probability ``revisit * revisit_decay**(k-1)`` (capped at
  ``max_revisit_share`` of the slots): the policy moves, and a prompt at 0/8
  may become learnable, less likely so after every further dead group;
- **Thompson slots**: ``explore`` of the remaining slots go to the best
  prompts by a *draw* from the belief instead of its expectation (MoPPS-style),
  which gives uncertain (e.g. never-seen) prompts their fair chance.

The exploitation slots are filled in one of two ways (``settings.selection``):

- ``"value"``: the highest expected informativeness in the pool. Best per
  group, but on a small train set it keeps choosing the same prompts (those
  nearest p = 0.5), epoch after epoch;
- ``"coverage"``: a bar on expected informativeness (``coverage_bar``) splits
  the pool into eligible and not; eligible prompts are taken least recently
  trained first (never-seen first, ties at random), so over a few passes every
  prompt the book expects to be learnable gets its turn, as in DAPO's
  filtering of a uniform draw, without generating the dead groups. Too few
  eligible: the rest are the best below the bar (reason ``"fallback"``).
"""

from __future__ import annotations

import numpy as np

from preroll.beliefs import BetaPrediction
from preroll.online.settings import OnlineSettings
from preroll.schedule.beliefs import RateBelief
from preroll.schedule.utilities import informative_groups


def expected_informative(belief: BetaPrediction, group_size: int) -> np.ndarray:
    """E[1 - p^g - (1-p)^g] per prompt under its Beta belief."""
    rb = RateBelief(belief.p_success, belief.alpha, belief.beta)
    return informative_groups(rb, group_size)[:, group_size]


def draw_revisits(dead_streak: np.ndarray, n: int, settings: OnlineSettings, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask over the pool: prompts with dead last groups that get another look this time."""
    u = rng.random(len(dead_streak))
    dead = dead_streak > 0
    prob = np.where(dead, settings.revisit * settings.revisit_decay ** np.maximum(dead_streak - 1, 0), 0.0)
    mask = dead & (u < prob)
    cap = stochastic_round(settings.max_revisit_share * n, rng)
    if mask.sum() > cap:
        keep = np.flatnonzero(mask)[np.argsort(u[mask], kind="stable")[:cap]]
        mask = np.zeros_like(mask)
        mask[keep] = True
    return mask


def choose(belief: BetaPrediction, dead_streak: np.ndarray, n: int, settings: OnlineSettings,
           rng: np.random.Generator, last_seen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into the pool) of the n chosen prompts and the reason code of each (index into REASONS).

    ``last_seen``: the step each pool prompt was last recorded at (-1: never), used by ``"coverage"``.
    """
    k = len(belief)
    g = settings.group_size
    revisit = draw_revisits(dead_streak, n, settings, rng)
    # One Thompson draw per candidate, taken every time so the RNG stream does not depend on the outcome.
    draw = rng.beta(belief.alpha, belief.beta)
    value = expected_informative(belief, g)
    thompson_value = 1.0 - draw ** g - (1.0 - draw) ** g
    revisits = np.flatnonzero(revisit)
    rest = n - len(revisits)
    n_explore = stochastic_round(settings.explore * rest, rng)
    n_exploit = rest - n_explore
    free = ~revisit
    # Ties (e.g. a fresh book where every belief is the same) are broken at random, not by pool order.
    tie = rng.random(k) * 1e-9
    if settings.selection == "coverage":
        stale = np.full(k, -1, np.int64) if last_seen is None else np.asarray(last_seen, np.int64)
        exploit, fallback = cover(value, stale, free, n_exploit, settings.coverage_bar, tie)
    else:
        exploit, fallback = _top(np.where(free, value + tie, -np.inf), n_exploit), np.zeros(0, np.int64)
    free[exploit] = False
    free[fallback] = False
    explore = _top(np.where(free, thompson_value + tie, -np.inf), n_explore)
    chosen = np.concatenate([revisits.astype(np.int64), exploit, fallback, explore])
    reasons = np.concatenate([np.full(len(revisits), 2, np.int64), np.zeros(len(exploit), np.int64),
                              np.full(len(fallback), 3, np.int64), np.ones(len(explore), np.int64)])
    return chosen, reasons


def cover(value: np.ndarray, last_seen: np.ndarray, free: np.ndarray, m: int, bar: float,
          tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``selection="coverage"``: m positions, eligible ones (value >= bar) least recently seen first.

    Returns (eligible picks, fallback picks). Within equal staleness (e.g. all
    never-seen) the order is the random ``tie``, not the value: every eligible
    prompt is as good as any other, which is the point.
    """
    eligible = free & (value >= bar)
    pos = np.flatnonzero(eligible)
    picks = pos[np.lexsort((tie[pos], last_seen[pos]))[:m]].astype(np.int64)
    m_eligible = len(picks)
    rest = free & ~eligible
    fallback = _top(np.where(rest, value + tie, -np.inf), min(m - m_eligible, int(rest.sum())))
    return picks, fallback


def stochastic_round(x: float, rng: np.random.Generator) -> int:
    """floor(x), plus one with probability frac(x): the long-run mean is exactly x.

    Why: a share of a small batch (10% of B = 8 slots) rounded up or to the
    nearest is 12.5% of the slots, every step; exploration would then cost more
    than the settings declare. One uniform draw is taken on every call, so the
    random stream does not depend on x.
    """
    whole = int(np.floor(x))
    return whole + int(rng.random() < x - whole)


def _top(score: np.ndarray, m: int) -> np.ndarray:
    if m <= 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-score, m - 1)[:m] if m < len(score) else np.arange(len(score))
    return top[np.argsort(-score[top], kind="stable")].astype(np.int64)
