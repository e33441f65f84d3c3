"""The V_0.5 fused baseline and its rollout controller."""

from __future__ import annotations

import math

import numpy as np
import pytest

from preroll.bench._schedule_data import load_snapshots
from preroll.bench._schedule_predictors import history_prediction
from preroll.beliefs import BetaPrediction
from preroll.schedule import BiasTracker, ScheduleInputError, SequentialBaseline, fuse, fused_baseline


def test_formula_on_a_worked_example():
    # prior 0.3, rewards 1,0,1,1 (mean 0.75), prior error variance 0.01
    est = fuse(0.3, [1, 0, 1, 1], bias_var=0.01)
    q = (0.75 + 0.3) / 2
    v = q * (1 - q) / 4
    t = abs(0.75 - 0.3) / math.sqrt(0.3 * 0.7 / 4 + 0.01)
    assert t < 2.58 and not bool(est.rejected)
    w = v / (v + 0.01)
    assert float(est.weight) == pytest.approx(w)
    assert float(est.estimate) == pytest.approx(w * 0.3 + (1 - w) * 0.75)
    assert float(est.mse) == pytest.approx(v * 0.01 / (v + 0.01))
    assert fused_baseline(0.3, [1, 0, 1, 1], bias_var=0.01) == pytest.approx(float(est.estimate))


def test_contradicted_prior_is_rejected_and_mostly_ignored():
    est = fuse(0.02, [1] * 8, bias_var=0.001)
    assert bool(est.rejected)
    assert float(est.estimate) > 0.9
    kept = fuse(0.02, [0] * 8, bias_var=0.001)
    assert not bool(kept.rejected) and float(kept.estimate) < 0.03


def test_no_rewards_returns_the_prior_and_shapes_follow_the_input():
    assert fused_baseline(0.4, []) == pytest.approx(0.4)
    out = fused_baseline(np.array([0.2, 0.9]), [[1, 0, 0], [1]])
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    out2 = fused_baseline(np.array([0.2, 0.9]), np.array([[1, 0, 0, 0], [1, 1, 1, 0]]))
    assert out2.shape == (2,)
    assert isinstance(fused_baseline(0.5, [1, 0]), float)


def test_beta_prediction_supplies_prior_variance():
    pred = BetaPrediction(np.array([2.0, 8.0]), np.array([8.0, 2.0]))
    a = fuse(pred, [[1, 0, 0, 0], [1, 1, 1, 0]])
    b = fuse(pred.p_success, [[1, 0, 0, 0], [1, 1, 1, 0]], prior_var=pred.var)
    assert np.allclose(a.estimate, b.estimate)
    assert np.allclose(a.bias_var, np.maximum(pred.var, 1e-4))


@pytest.mark.parametrize("prior, rewards, words", [
    (0.5, [1, -1, 1], ["rewards[1]", "rescale"]),
    (float("nan"), [1], ["prior", "nan"]),
    (1.5, [1], ["prior", "1.5"]),
    (np.array([0.1, 0.2]), [[1], [0], [1]], ["3 rows for 2 priors"]),
    (np.array([0.1, 0.2]), [[1], [0, 2]], ["rewards[1][1]"]),
    (0.5, [[1, 0], [1, 1]], ["scalar prior", "one prior per row"]),
])
def test_bad_input_gets_a_clear_error(prior, rewards, words):
    with pytest.raises(ScheduleInputError) as err:
        fused_baseline(prior, rewards)
    for w in words:
        assert w in str(err.value)


def test_bad_bias_var_and_z():
    with pytest.raises(ScheduleInputError, match="bias_var"):
        fused_baseline(0.5, [1, 0], bias_var=-1.0)
    with pytest.raises(ScheduleInputError, match="z"):
        fused_baseline(0.5, [1, 0], z=float("nan"))


def _world(seed: int):
    """Real rates of one snapshot with a noisy prior and a history prior."""
    snaps = load_snapshots()
    snap = next(s for s in snaps if s.name == "Qwen3-4B-Instruct@64")
    rng = np.random.default_rng(seed)
    p = snap.draw_rates(rng)
    return snaps, snap, p, rng


def test_fused_beats_the_group_mean_on_real_rates():
    """Seeded simulation on the shared data: at 4 rollouts the fused
    estimate must have lower MSE than the 4-rollout group mean, for a
    noisy-oracle prior (sd 0.2) and for the previous-step history prior."""
    snaps, snap, p, rng = _world(0)
    priors = {"noisy": np.clip(p + rng.normal(0, 0.2, p.size), 0, 1),
              "history": history_prediction(snap, snaps)}
    for name, prior in priors.items():
        fused_err, mean_err = [], []
        for _ in range(5):
            r = (rng.random((p.size, 4)) < p[:, None]).astype(float)
            fused_err.append(np.mean((fused_baseline(prior, r) - p) ** 2))
            mean_err.append(np.mean((r.mean(axis=1) - p) ** 2))
        assert np.mean(fused_err) < np.mean(mean_err), name


def test_bias_tracker_recovers_the_prior_error():
    rng = np.random.default_rng(1)
    tracker = BiasTracker(decay=0.5)
    assert tracker.bias_var is None
    for _ in range(30):
        p = rng.uniform(0.1, 0.9, 400)
        prior = np.clip(p + rng.normal(0, 0.15, p.size), 0, 1)
        r = (rng.random((p.size, 8)) < p[:, None]).astype(float)
        tracker.update(prior, r)
    assert tracker.bias_var == pytest.approx(0.15 ** 2, rel=0.35)


def test_controller_starts_at_min_and_stops_at_max():
    ctrl = SequentialBaseline(cost=0.0)
    assert ctrl.should_continue(0.5, [1, 0, 1])            # below 4: always
    assert not ctrl.should_continue(0.5, [1, 0] * 8)       # 16: never
    assert ctrl.should_continue(0.5, [1, 0, 1, 0], bias_var=0.05)  # cost 0: any gain pays


def test_controller_spends_where_the_prior_is_contradicted():
    ctrl = SequentialBaseline(cost=0.002)
    agree = ctrl.should_continue(0.5, [1, 0, 1, 0], bias_var=0.001)
    clash = ctrl.should_continue(0.05, [1, 1, 1, 0], bias_var=0.001)
    assert not agree and clash
    rng = np.random.default_rng(0)
    est, rewards = ctrl.run(0.05, lambda: float(rng.random() < 0.7), bias_var=0.001)
    assert 4 <= len(rewards) <= 16 and len(rewards) > 4
    assert abs(float(est.estimate) - 0.7) < abs(0.05 - 0.7)


def test_controller_batch_on_real_rates():
    snaps, snap, p, rng = _world(2)
    prior = np.clip(p + rng.normal(0, 0.2, p.size), 0, 1)
    r = (rng.random((p.size, 16)) < p[:, None]).astype(float)
    est, used = SequentialBaseline(cost=0.002).run_batch(prior, r)
    assert used.min() >= 4 and used.max() <= 16
    assert 4 < used.mean() < 16
    same = np.array([r[i, :u].mean() for i, u in enumerate(used)])
    assert np.mean((est.estimate - p) ** 2) < np.mean((same - p) ** 2)
    with pytest.raises(ScheduleInputError, match="reward_matrix"):
        SequentialBaseline(cost=0.1).run_batch(prior, r[:, :8])
    with pytest.raises(ScheduleInputError, match="cost"):
        SequentialBaseline(cost=-1).should_continue(0.5, [1])
