"""Routing metrics: RouteLLM's APGR and CPT, RouterBench's AIQ.

Two-model metrics start from a router *score* per prompt (higher: more in
need of the strong model). Sweeping a threshold over the scores sends the
top-k prompts to the strong model for every k, which traces accuracy against
the share of strong calls:

* PGR (performance gap recovered) at a share:
  ``(acc - weak_acc) / (strong_acc - weak_acc)``.
* APGR: area under PGR over the strong-call share in [0, 1] (trapezoid over
  the sweep, endpoints all-weak and all-strong included). A random router's
  expected curve is the diagonal, so random scores give about 0.5.
* CPT(x%): the smallest strong share whose PGR reaches x% (RouteLLM).
* Share for x% of strong accuracy: the smallest strong share whose accuracy
  reaches x% of the strong model's (e.g. 95%). Between sweep points a router
  can mix the two neighbouring operating points at random, so the curve is
  interpolated linearly.

N-model metric (RouterBench):

* AIQ: area under the non-decreasing upper convex hull of a router's
  (cost, quality) points, with cost normalised so that the cheapest single
  model is 0 and the dearest is 1. Mixing two operating points at random
  reaches any point on the segment between them (hence the convex hull), and
  spending more never has to buy less (hence non-decreasing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoutingCurve:
    """Accuracy of a two-model router at each strong-call share (0 and 1 included)."""

    share: np.ndarray     # fraction of prompts sent to the strong model, increasing
    accuracy: np.ndarray  # mean correctness at that share
    weak_acc: float
    strong_acc: float
    cost: np.ndarray | None = None  # mean cost per prompt at that share (when costs were given)

    @property
    def pgr(self) -> np.ndarray:
        return pgr(self.accuracy, self.weak_acc, self.strong_acc)


def routing_curve(score, weak_correct, strong_correct, *, weak_cost=None, strong_cost=None) -> RoutingCurve:
    """Sweep a threshold over ``score``: every cutoff between distinct scores is one point.

    Prompts with equal scores move together (a threshold cannot split
    them), so ties never flatter a router. ``weak_cost``/``strong_cost``
    (scalars or per-prompt arrays) add the mean cost at each point.
    """
    s = np.asarray(score, float)
    w = np.asarray(weak_correct, float)
    st = np.asarray(strong_correct, float)
    if not (s.shape == w.shape == st.shape) or s.ndim != 1:
        raise ValueError(f"score, weak_correct and strong_correct must be equal-length 1-D arrays "
                         f"(got {s.shape}, {w.shape}, {st.shape})")
    n = len(s)
    if n == 0:
        raise ValueError("no prompts")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    order = np.argsort(-s, kind="stable")
    gain = np.cumsum((st - w)[order])
    ss = s[order]
    ends = np.flatnonzero(np.r_[ss[1:] != ss[:-1], True])  # last index of each run of equal scores
    k = np.r_[0, ends + 1]
    acc = (w.sum() + np.r_[0.0, gain[ends]]) / n
    cost = None
    if weak_cost is not None or strong_cost is not None:
        if weak_cost is None or strong_cost is None:
            raise ValueError("give both weak_cost and strong_cost, or neither")
        cw = np.broadcast_to(np.asarray(weak_cost, float), s.shape)
        cs = np.broadcast_to(np.asarray(strong_cost, float), s.shape)
        extra = np.cumsum((cs - cw)[order])
        cost = (cw.sum() + np.r_[0.0, extra[ends]]) / n
    return RoutingCurve(share=k / n, accuracy=acc, weak_acc=float(w.mean()), strong_acc=float(st.mean()),
                        cost=cost)


def curve_from_points(share, accuracy, weak_acc: float, strong_acc: float, *, cost=None,
                      weak_cost: float | None = None, strong_cost: float | None = None) -> RoutingCurve:
    """A curve from measured operating points (e.g. a rule's parameter sweep), sorted by share.

    The all-weak (share 0) and all-strong (share 1) endpoints are added when
    the sweep does not reach them, since any router can call one model only;
    with ``cost``, their mean costs ``weak_cost``/``strong_cost`` are needed.
    """
    sh = np.asarray(share, float)
    ac = np.asarray(accuracy, float)
    co = None if cost is None else np.asarray(cost, float)
    if co is not None and (weak_cost is None or strong_cost is None):
        raise ValueError("with cost, give weak_cost and strong_cost for the endpoints")
    if not np.any(sh == 0.0):
        sh, ac = np.r_[0.0, sh], np.r_[weak_acc, ac]
        co = None if co is None else np.r_[weak_cost, co]
    if not np.any(sh == 1.0):
        sh, ac = np.r_[sh, 1.0], np.r_[ac, strong_acc]
        co = None if co is None else np.r_[co, strong_cost]
    order = np.lexsort((ac, sh))
    return RoutingCurve(share=sh[order], accuracy=ac[order], weak_acc=weak_acc, strong_acc=strong_acc,
                        cost=None if co is None else co[order])


def pgr(accuracy, weak_acc: float, strong_acc: float) -> np.ndarray:
    gap = strong_acc - weak_acc
    if gap <= 0:
        raise ValueError(f"PGR needs the strong model to beat the weak one (strong {strong_acc:.4f}, "
                         f"weak {weak_acc:.4f})")
    return (np.asarray(accuracy, float) - weak_acc) / gap


def apgr(curve: RoutingCurve) -> float:
    """Area under PGR against strong-call share (trapezoid)."""
    return float(np.trapezoid(curve.pgr, curve.share))


def _first_crossing(x: np.ndarray, y: np.ndarray, target: float) -> float:
    """Smallest x at which the piecewise-linear y(x) reaches ``target`` (NaN if never)."""
    hit = np.flatnonzero(y >= target - 1e-12)
    if hit.size == 0:
        return float("nan")
    i = hit[0]
    if i == 0:
        return float(x[0])
    x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def cpt(curve: RoutingCurve, pgr_target: float) -> float:
    """RouteLLM's call-performance threshold: strong share needed to reach ``pgr_target`` PGR (e.g. 0.5)."""
    return _first_crossing(curve.share, curve.pgr, pgr_target)


def share_for_accuracy(curve: RoutingCurve, fraction_of_strong: float = 0.95) -> float:
    """Strong share needed for ``fraction_of_strong`` of the strong model's accuracy."""
    return _first_crossing(curve.share, curve.accuracy, fraction_of_strong * curve.strong_acc)


def accuracy_at_share(curve: RoutingCurve, share: float) -> float:
    """Accuracy at a given strong share (linear between sweep points: a random mix of the two)."""
    return float(np.interp(share, curve.share, curve.accuracy))


def upper_hull(cost, quality) -> tuple[np.ndarray, np.ndarray]:
    """Non-decreasing upper convex hull of (cost, quality) points, sorted by cost."""
    c = np.asarray(cost, float)
    q = np.asarray(quality, float)
    if c.shape != q.shape or c.ndim != 1 or c.size == 0:
        raise ValueError("cost and quality must be equal-length, non-empty 1-D arrays")
    order = np.lexsort((-q, c))
    c, q = c[order], q[order]
    hull: list[tuple[float, float]] = []
    for x, y in zip(c, q):
        if hull and x == hull[-1][0]:
            continue  # same cost, lower quality (sorted by -q within a cost)
        if hull and y <= hull[-1][1]:
            continue  # costs more, buys nothing: off the non-decreasing hull
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            # drop the middle point when it lies on or below the chord to the new one
            if (y2 - y1) * (x - x1) <= (y - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append((x, y))
    h = np.array(hull)
    return h[:, 0], h[:, 1]


def normalise_cost(cost, cheapest: float, dearest: float) -> np.ndarray:
    """Map cost so the cheapest single model is 0 and the dearest is 1."""
    if dearest <= cheapest:
        raise ValueError(f"cost range is empty (cheapest {cheapest}, dearest {dearest})")
    return (np.asarray(cost, float) - cheapest) / (dearest - cheapest)


def aiq(cost, quality, *, cheapest: float, dearest: float) -> float:
    """RouterBench's average improvement in quality: area under the hull over normalised cost [0, 1].

    Left of the router's cheapest point the hull is held at that point's
    quality, right of its dearest at that point's quality (spending more never
    has to lose quality). Sweeps in this package include both extremes, so
    the left extension does not arise for them.
    """
    x, y = upper_hull(normalise_cost(cost, cheapest, dearest), quality)
    grid = np.unique(np.clip(np.r_[0.0, x, 1.0], 0.0, 1.0))
    return float(np.trapezoid(np.interp(grid, x, y), grid))
