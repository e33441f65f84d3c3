"""Rollout allocation: invariants, exactness against a plain DP, expected
utility under uncertainty, and clear errors for bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from preroll.beliefs import BetaPrediction
from preroll.schedule import RULES, ScheduleInputError, allocate
from preroll.schedule.beliefs import RateBelief
from preroll.schedule.solver import feasible_group_count, solve_by_dp, solve_concave
from preroll.schedule.utilities import UTILITIES, group_variance, informative_groups, knapsack_value


def _valid(x, budget, lo, hi):
    assert x.dtype.kind == "i"
    assert int(x.sum()) == budget
    assert np.all((x == 0) | ((x >= lo) & (x <= hi)))


@pytest.mark.parametrize("rule", RULES)
def test_invariants_over_random_instances(rule):
    rng = np.random.default_rng(1)
    for _ in range(40):
        n = int(rng.integers(1, 60))
        lo = int(rng.integers(1, 6))
        hi = int(rng.integers(lo, 20))
        p = rng.uniform(size=n)
        p[rng.random(n) < 0.2] = rng.choice([0.0, 1.0])  # dead prompts
        budget = int(rng.integers(0, n * hi + 1))
        if feasible_group_count(budget, n, lo, hi) is None:
            with pytest.raises(ScheduleInputError):
                allocate(p, budget, min_rollouts=lo, max_rollouts=hi, rule=rule, seed=0)
            continue
        x = allocate(p, budget, min_rollouts=lo, max_rollouts=hi, rule=rule, seed=0)
        _valid(x, budget, lo, hi)


@pytest.mark.parametrize("name", sorted(UTILITIES))
def test_utility_rules_match_exact_dp(name):
    rng = np.random.default_rng(2)
    checked = 0
    for t in range(60):
        n = int(rng.integers(2, 10))
        lo = int(rng.integers(1, 4))
        hi = int(rng.integers(lo, 9))
        p = rng.uniform(size=n)
        if t % 3 == 0:
            p = np.round(p, 1)  # ties
        budget = int(rng.integers(1, n * hi + 1))
        if feasible_group_count(budget, n, lo, hi) is None:
            continue
        belief = RateBelief(p) if t % 2 else RateBelief(p, 4 * p + 0.3, 4 * (1 - p) + 0.3)
        table = UTILITIES[name](belief, hi)
        best, _ = solve_by_dp(table, budget, lo, hi)
        if belief.uncertain:
            x = allocate(BetaPrediction(belief.alpha, belief.beta), budget, rule=name, min_rollouts=lo, max_rollouts=hi)
        else:
            x = allocate(p, budget, rule=name, min_rollouts=lo, max_rollouts=hi)
        _valid(x, budget, lo, hi)
        assert table[np.arange(n), x].sum() == pytest.approx(best, abs=1e-12)
        checked += 1
    assert checked > 30


def test_solver_core_growth_and_table_widening_stay_exact():
    """A core of 2 and a table 2 columns wide force the proof loop to grow
    the core and the solver to widen tables; the answer must still be the DP's."""
    rng = np.random.default_rng(3)
    for t in range(40):
        n, lo, hi = 30, int(rng.integers(2, 4)), int(rng.integers(4, 12))
        p = rng.uniform(size=n)
        budget = int(rng.integers(lo, n * hi // 2))
        if feasible_group_count(budget, n, lo, hi) is None:
            continue
        name = sorted(UTILITIES)[t % 3]
        belief = RateBelief(p)
        table = UTILITIES[name](belief, hi)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            x = solve_concave(lambda idx, m, u=UTILITIES[name], b=belief: u(b.subset(idx), m), n, budget, lo, hi,
                              chunk=2, core=2)
        _valid(x, budget, lo, hi)
        assert table[np.arange(n), x].sum() == pytest.approx(solve_by_dp(table, budget, lo, hi)[0], abs=1e-12)


def test_exact_on_medium_instances_where_the_core_is_a_small_subset():
    """600 candidates: the repair DP sees a core of 64, the proof covers the rest."""
    rng = np.random.default_rng(4)
    for name in sorted(UTILITIES):
        p = rng.beta(0.5, 0.5, 600)
        budget = int(rng.integers(600, 1800)) | 1  # odd: a 2-rollout block must straddle
        table = UTILITIES[name](RateBelief(p), 12)
        x = allocate(p, budget, rule=name, min_rollouts=2, max_rollouts=12)
        _valid(x, budget, 2, 12)
        assert table[np.arange(600), x].sum() == pytest.approx(solve_by_dp(table, budget, 2, 12)[0], abs=1e-10)


def test_straddling_block_goes_through_the_proven_repair(monkeypatch):
    """Budget 5, groups of 3..5: the greedy order takes a 3-block and then
    cannot fit the next one; the repair must find the exact optimum (one
    group of 5) and, over random instances of this shape, match the DP."""
    import preroll.schedule.solver as solver

    calls = []
    real = solver._repair
    monkeypatch.setattr(solver, "_repair", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = allocate([0.5, 0.45, 0.05], 5, rule="greedy", min_rollouts=3, max_rollouts=5)
    assert x.tolist() == [5, 0, 0] and calls
    rng = np.random.default_rng(5)
    for t in range(60):
        n, lo = 12, int(rng.integers(3, 6))
        hi = lo + int(rng.integers(0, 3))
        p = rng.uniform(size=n)
        budget = int(rng.integers(lo, n * hi))
        if feasible_group_count(budget, n, lo, hi) is None:
            continue
        name = sorted(UTILITIES)[t % 3]
        table = UTILITIES[name](RateBelief(p), hi)
        x = allocate(p, budget, rule=name, min_rollouts=lo, max_rollouts=hi)
        _valid(x, budget, lo, hi)
        assert table[np.arange(n), x].sum() == pytest.approx(solve_by_dp(table, budget, lo, hi)[0], abs=1e-12)
    assert len(calls) > 10


def test_many_ties_do_not_break_the_budget():
    x = allocate(np.full(10_000, 0.3), 25_001, rule="greedy", min_rollouts=2, max_rollouts=16)
    _valid(x, 25_001, 2, 16)
    assert x.max() - x[x > 0].min() <= 1  # identical prompts get (near) identical groups


@pytest.mark.parametrize("util", [informative_groups, knapsack_value, group_variance])
def test_beta_expectations_match_numerical_integration(util):
    a, b = np.array([0.7, 3.0, 12.0]), np.array([2.5, 3.0, 1.5])
    table = util(RateBelief(a / (a + b), a, b), 6)
    for i in range(3):
        for n in (2, 3, 6):
            def f(p, n=n, i=i):
                return util(RateBelief(np.array([p])), n)[0, n] * stats.beta.pdf(p, a[i], b[i])

            expected, _ = integrate.quad(f, 0, 1, limit=200)
            assert table[i, n] == pytest.approx(expected, rel=1e-6, abs=1e-10)


def test_point_utilities_have_the_documented_closed_forms():
    p = np.array([0.1, 0.5, 0.9])
    n = 5
    assert np.allclose(informative_groups(RateBelief(p), n)[:, n], 1 - p**n - (1 - p) ** n)
    assert np.allclose(knapsack_value(RateBelief(p), n)[:, n], (1 - p**n - (1 - p) ** n) * p * (1 - p) ** 2)
    assert np.allclose(group_variance(RateBelief(p), n)[:, n], p * (1 - p) * (1 - 1 / n))


def test_uncertain_prediction_allocates_on_expected_utility():
    """Same means, different spreads: the Beta allocation must maximise the
    expected utility, which the point allocation does not."""
    mean = np.array([0.5, 0.5, 0.15, 0.15, 0.3, 0.7])
    conc = np.array([1.0, 500.0, 500.0, 1.0, 3.0, 400.0])  # prompt 0 is a coin flip over p
    pred = BetaPrediction(mean * conc, (1 - mean) * conc)
    belief = RateBelief(mean, pred.alpha, pred.beta)
    budget, lo, hi = 6, 2, 8
    expected = informative_groups(belief, hi)
    best, _ = solve_by_dp(expected, budget, lo, hi)
    x_beta = allocate(pred, budget, rule="greedy", min_rollouts=lo, max_rollouts=hi)
    x_point = allocate(mean, budget, rule="greedy", min_rollouts=lo, max_rollouts=hi)
    rows = np.arange(len(mean))
    assert expected[rows, x_beta].sum() == pytest.approx(best)
    assert expected[rows, x_point].sum() < best - 1e-6
    # concentration= is the same as giving the Beta explicitly
    x_conc = allocate(mean, budget, rule="greedy", alpha=pred.alpha, beta=pred.beta, min_rollouts=lo, max_rollouts=hi)
    assert np.array_equal(x_conc, x_beta)


def test_greedy_skips_dead_prompts_and_feeds_live_ones():
    p = np.array([0.0, 1.0, 0.5, 0.4, 0.999, 0.001])
    x = allocate(p, 12, rule="greedy", min_rollouts=2, max_rollouts=8)
    assert x[0] == 0 and x[1] == 0
    assert x[2] > 0 and x[3] > 0


def test_uniform_is_grpo_and_reproducible():
    p = np.random.default_rng(0).uniform(size=100)
    x = allocate(p, 80, rule="uniform", group_size=8, seed=4)
    assert sorted(x[x > 0].tolist()) == [8] * 10
    assert np.array_equal(x, allocate(p, 80, rule="uniform", group_size=8, seed=4))
    assert not np.array_equal(x, allocate(p, 80, rule="uniform", group_size=8, seed=5))
    # a remainder is spread one rollout at a time, never past the bounds
    _valid(allocate(p, 83, rule="uniform", group_size=8, seed=0), 83, 2, 64)


def test_thompson_prefers_prompts_near_one_half():
    rng = np.random.default_rng(0)
    p = np.concatenate([np.full(50, 0.5), np.full(50, 0.01)])
    conc = 200.0
    pred = BetaPrediction(p * conc, (1 - p) * conc)
    x = allocate(pred, 160, rule="thompson", group_size=8, rng=rng)
    assert (x[:50] > 0).sum() == 20 and (x[50:] > 0).sum() == 0
    # point predictions get a fallback spread instead of failing
    _valid(allocate(p, 160, rule="thompson", seed=0), 160, 2, 64)


def test_budget_zero_gives_zeros():
    assert not allocate([0.5, 0.2], 0).any()


@pytest.mark.parametrize("p, budget, kwargs, words", [
    ([0.5, float("nan")], 4, {}, ["p_success[1]", "nan"]),
    ([0.5, 1.2], 4, {}, ["p_success[1]", "1.2", "outside"]),
    ([-0.1, 0.5], 4, {}, ["p_success[0]"]),
    ([], 4, {}, ["empty"]),
    ([[0.5, 0.5]], 4, {}, ["one-dimensional"]),
    ([0.5, 0.5], -1, {}, ["budget", ">= 0"]),
    ([0.5, 0.5], 2.5, {}, ["budget", "whole number"]),
    ([0.5, 0.5], True, {}, ["budget", "integer"]),
    ([0.5, 0.5], 1, {}, ["budget 1", "2..64"]),
    ([0.5, 0.5], 129, {}, ["budget 129", "2 prompts x max_rollouts 64"]),
    ([0.5, 0.5, 0.5], 6, {"min_rollouts": 4, "max_rollouts": 5}, ["budget 6", "4..5"]),
    ([0.5], 4, {"min_rollouts": 4, "max_rollouts": 3}, ["max_rollouts 3", "below"]),
    ([0.5], 4, {"min_rollouts": 0}, ["min_rollouts"]),
    ([0.5], 4, {"rule": "best"}, ["unknown rule", "greedy"]),
    ([0.5], 4, {"concentration": -1.0}, ["concentration"]),
    ([0.5], 4, {"alpha": [1.0]}, ["alpha and beta"]),
])
def test_bad_input_gets_a_clear_error(p, budget, kwargs, words):
    with pytest.raises(ScheduleInputError) as err:
        allocate(p, budget, **kwargs)
    for w in words:
        assert w in str(err.value)


def test_bad_beta_prediction_is_named():
    with pytest.raises(ScheduleInputError, match=r"p_success.alpha\[1\]"):
        allocate(BetaPrediction(np.array([1.0, 0.0]), np.array([1.0, 1.0])), 4)
