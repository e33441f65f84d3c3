"""What the allocator knows about each candidate's success rate.

A value model returns a Beta belief; a history table or an oracle returns a
point. Utilities are computed as expectations under the belief, so one code
path serves both: a point estimate is the limit of an infinitely
concentrated Beta. Keeping both forms (rather than turning points into
Beta(p*c, (1-p)*c) with a made-up c) means an oracle allocation really is
allocation on the true rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from preroll.beliefs import BetaPrediction
from preroll.schedule.errors import ScheduleInputError


@dataclass(frozen=True)
class RateBelief:
    """Per-candidate belief: a mean, and Beta parameters when uncertain."""

    mean: np.ndarray
    alpha: np.ndarray | None = None
    beta: np.ndarray | None = None

    @property
    def uncertain(self) -> bool:
        return self.alpha is not None

    @property
    def params(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(alpha, beta)`` of an uncertain belief; None for a point belief (one check that also narrows)."""
        return None if self.alpha is None or self.beta is None else (self.alpha, self.beta)

    def __len__(self) -> int:
        return len(self.mean)

    def subset(self, idx) -> "RateBelief":
        ab = self.params
        if ab is None:
            return RateBelief(self.mean[idx])
        return RateBelief(self.mean[idx], ab[0][idx], ab[1][idx])

    def sample(self, rng: np.random.Generator, fallback_concentration: float) -> np.ndarray:
        """One Thompson draw per candidate.

        A point belief has no spread of its own, so it is widened to
        Beta(p*c, (1-p)*c) with ``c = fallback_concentration`` (a caller's
        parameter) for this draw only.
        """
        ab = self.params
        if ab is not None:
            return rng.beta(*ab)
        c = float(fallback_concentration)
        p = np.clip(self.mean, 1e-6, 1 - 1e-6)
        return rng.beta(p * c, (1 - p) * c)


def _check_array(name: str, values, *, lo: float, hi: float, open_lo: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ScheduleInputError("must be an array of numbers", field=name) from None
    if arr.ndim != 1:
        raise ScheduleInputError(f"must be one-dimensional (got shape {arr.shape})", field=name)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ScheduleInputError(f"is {arr[i]} (must be a finite number)", field=name, index=i)
    bad = (arr <= lo) if open_lo else (arr < lo)
    bad |= arr > hi
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rng = f"({lo:g}, {hi:g}]" if open_lo else f"[{lo:g}, {hi:g}]"
        raise ScheduleInputError(f"is {arr[i]:g}, outside {rng}", field=name, index=i)
    return arr


def as_belief(p_success, *, alpha=None, beta=None, concentration: float | None = None) -> RateBelief:
    """Validate and normalise the allocator's rate input.

    Accepts a :class:`BetaPrediction`, an array of probabilities, or an array
    plus explicit ``alpha``/``beta`` (or a ``concentration`` c giving
    Beta(p*c, (1-p)*c)).
    """
    if isinstance(p_success, BetaPrediction):
        if alpha is not None or beta is not None:
            raise ScheduleInputError("give alpha/beta or a BetaPrediction, not both", field="alpha")
        alpha, beta = p_success.alpha, p_success.beta
        a = _check_array("p_success.alpha", alpha, lo=0.0, hi=np.inf, open_lo=True)
        b = _check_array("p_success.beta", beta, lo=0.0, hi=np.inf, open_lo=True)
        if a.shape != b.shape:
            raise ScheduleInputError("alpha and beta differ in length", field="p_success")
        if a.size == 0:
            raise ScheduleInputError("the candidate pool is empty", field="p_success")
        return RateBelief(a / (a + b), a, b)
    p = _check_array("p_success", p_success, lo=0.0, hi=1.0)
    if p.size == 0:
        raise ScheduleInputError("the candidate pool is empty", field="p_success")
    if (alpha is None) != (beta is None):
        raise ScheduleInputError("alpha and beta must be given together", field="alpha" if alpha is None else "beta")
    if alpha is not None:
        if concentration is not None:
            raise ScheduleInputError("give alpha/beta or concentration, not both", field="concentration")
        a = _check_array("alpha", alpha, lo=0.0, hi=np.inf, open_lo=True)
        b = _check_array("beta", beta, lo=0.0, hi=np.inf, open_lo=True)
        if a.shape != p.shape or b.shape != p.shape:
            raise ScheduleInputError(f"alpha/beta must have the pool's length {p.size}", field="alpha")
        return RateBelief(a / (a + b), a, b)
    if concentration is not None:
        c = float(concentration)
        if not np.isfinite(c) or c <= 0:
            raise ScheduleInputError(f"must be a finite number > 0 (got {concentration!r})", field="concentration")
        q = np.clip(p, 1e-6, 1 - 1e-6)
        return RateBelief(p, q * c, (1 - q) * c)
    return RateBelief(p)
