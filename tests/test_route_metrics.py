"""Routing metrics against hand-computed cases and known properties."""

from __future__ import annotations

import numpy as np
import pytest

from preroll.bench import route_baselines as baselines, route_metrics as metrics

# Four prompts. Sorted by score: 0 (gain 0), 1 (+1), 3 (+1), 2 (-1).
SCORE = [0.9, 0.8, 0.1, 0.5]
WEAK = [1, 0, 1, 0]
STRONG = [1, 1, 0, 1]


def test_curve_by_hand():
    c = metrics.routing_curve(SCORE, WEAK, STRONG)
    np.testing.assert_allclose(c.share, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c.accuracy, [0.5, 0.5, 0.75, 1.0, 0.75])
    np.testing.assert_allclose(c.pgr, [0, 0, 1, 2, 1])
    assert c.weak_acc == 0.5 and c.strong_acc == 0.75


def test_apgr_cpt_share_by_hand():
    c = metrics.routing_curve(SCORE, WEAK, STRONG)
    # trapezoid: 0.25 * [(0+0) + (0+1) + (1+2) + (2+1)] / 2
    assert metrics.apgr(c) == pytest.approx(0.875)
    # PGR 0 at 25%, 1 at 50%: 0.5 is reached half-way
    assert metrics.cpt(c, 0.5) == pytest.approx(0.375)
    # 95% of 0.75 = 0.7125, between 0.5 (25%) and 0.75 (50%)
    assert metrics.share_for_accuracy(c, 0.95) == pytest.approx(0.25 + 0.2125)
    assert metrics.accuracy_at_share(c, 0.5) == pytest.approx(0.75)
    assert metrics.accuracy_at_share(c, 0.625) == pytest.approx(0.875)


def test_costs_follow_the_sweep():
    c = metrics.routing_curve(SCORE, WEAK, STRONG, weak_cost=1.0, strong_cost=[10, 20, 30, 40])
    # order 0, 1, 3, 2: strong costs 10, 20, 40, 30 replace weak cost 1 one by one
    np.testing.assert_allclose(c.cost * 4, [4, 13, 32, 71, 100])


def test_ties_move_together():
    # Equal scores cannot be split by a threshold: only all-weak and all-strong exist.
    c = metrics.routing_curve([0.3, 0.3, 0.3, 0.3], WEAK, STRONG)
    np.testing.assert_allclose(c.share, [0, 1])
    assert metrics.apgr(c) == pytest.approx(0.5)


def test_random_router_is_about_one_half_and_oracle_beats_everything():
    rng = np.random.default_rng(1)
    n = 4000
    weak = rng.random(n) < 0.65
    strong = rng.random(n) < 0.8
    mean, sd = baselines.random_apgr(weak, strong, repeats=10, seed=3)
    assert abs(mean - 0.5) < 0.05
    assert sd < 0.05
    oracle = metrics.apgr(metrics.routing_curve(baselines.oracle_scores(weak, strong), weak, strong))
    assert oracle > 1.0  # the oracle recovers more than the gap by never sending a weak-only-right prompt up
    for seed in range(5):
        s = np.random.default_rng(seed).normal(size=n) + 0.5 * (strong.astype(float) - weak)
        assert metrics.apgr(metrics.routing_curve(s, weak, strong)) <= oracle


def test_pgr_needs_a_gap():
    with pytest.raises(ValueError, match="strong model to beat"):
        metrics.apgr(metrics.routing_curve([0.1, 0.2], [1, 1], [1, 0]))


def test_curve_input_checks():
    with pytest.raises(ValueError, match="equal-length"):
        metrics.routing_curve([0.1, 0.2], [1], [1, 0])
    with pytest.raises(ValueError, match="finite"):
        metrics.routing_curve([np.nan, 0.2], [1, 0], [1, 1])


def test_curve_from_points_adds_endpoints():
    c = metrics.curve_from_points([0.5, 0.2], [0.8, 0.7], 0.6, 0.9, cost=[5.0, 2.0], weak_cost=0.0, strong_cost=10.0)
    np.testing.assert_allclose(c.share, [0, 0.2, 0.5, 1.0])
    np.testing.assert_allclose(c.accuracy, [0.6, 0.7, 0.8, 0.9])
    np.testing.assert_allclose(c.cost, [0, 2, 5, 10])


def test_upper_hull_by_hand():
    x, y = metrics.upper_hull([0, 0.5, 0.5, 0.25, 1, 0.75], [0.5, 0.6, 0.55, 0.7, 0.8, 0.65])
    np.testing.assert_allclose(x, [0, 0.25, 1])
    np.testing.assert_allclose(y, [0.5, 0.7, 0.8])


def test_hull_is_non_decreasing_and_concave():
    rng = np.random.default_rng(0)
    c, q = rng.random(200), rng.random(200)
    x, y = metrics.upper_hull(c, q)
    assert np.all(np.diff(x) > 0)
    assert np.all(np.diff(y) > 0)
    slopes = np.diff(y) / np.diff(x)
    assert np.all(np.diff(slopes) < 1e-12)
    # every point lies on or under the hull (where the hull covers its cost)
    inside = (c >= x[0]) & (c <= x[-1])
    assert np.all(q[inside] <= np.interp(c[inside], x, y) + 1e-12)
    assert y[-1] == pytest.approx(q.max())


def test_aiq_by_hand():
    assert metrics.aiq([0, 0.5, 0.5, 0.25, 1, 0.75], [0.5, 0.6, 0.55, 0.7, 0.8, 0.65],
                       cheapest=0, dearest=1) == pytest.approx(0.25 * 1.2 / 2 + 0.75 * 1.5 / 2)
    # a straight mix of two single models: the mean of their qualities
    assert metrics.aiq([2, 12], [0.6, 0.9], cheapest=2, dearest=12) == pytest.approx(0.75)
    # a point beyond which quality falls: the hull stays flat (more money never has to lose quality)
    assert metrics.aiq([0, 0.5, 1.0], [0.6, 0.9, 0.7], cheapest=0, dearest=1) == pytest.approx(
        0.5 * 1.5 / 2 + 0.5 * 0.9)


def test_aiq_needs_a_cost_range():
    with pytest.raises(ValueError, match="cost range"):
        metrics.aiq([1, 1], [0.5, 0.6], cheapest=1, dearest=1)
