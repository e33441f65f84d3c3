"""The shared-difficulty neighbour model (``head="difficulty"``): bandit histories read without their bias."""

from __future__ import annotations

import numpy as np
import pytest

from preroll.beliefs import BetaPrediction
from preroll.encoders.base import Encoder
from preroll.route import ModelSpec, Router
from preroll.route.pooled import SharedDifficultyKNN


def _topics(n=900, seed=0, d=16):
    """Six topics of graded difficulty; each model's true rate is the topic's ease plus the model's edge."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 6, n)
    centres = rng.normal(size=(6, d))
    X = (centres[topic] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)
    ease = np.linspace(0.15, 0.85, 6)[topic]
    return rng, X, topic, ease


def test_a_model_tried_only_on_hard_prompts_is_not_read_as_weak():
    # Both models are equally good everywhere. Model 0 answered every prompt (the greedy choice); model 1 was
    # tried only on the three hardest topics (where exploring leaves the greedy choice). Its own mean says
    # it is far worse; against the difficulty both models share, it is level.
    rng, X, topic, ease = _topics()
    Y = (rng.random((len(X), 2)) < ease[:, None]).astype(float)
    Y[topic >= 3, 1] = np.nan
    naive_gap = np.nanmean(Y[:, 0]) - np.nanmean(Y[:, 1])
    assert naive_gap > 0.2
    model = SharedDifficultyKNN(k=50).fit(X, Y)
    assert abs(model.offset_[0] - model.offset_[1]) < 0.08
    # on the easy topics model 1 never saw, its prediction follows the prompts' ease, not its hard history
    easy = topic == 5
    P = model.predict(X[easy]).p_success
    assert abs(P[:, 1].mean() - P[:, 0].mean()) < 0.1
    assert P[:, 1].mean() > 0.6


def test_a_model_better_on_one_topic_wins_it():
    rng, X, topic, ease = _topics(seed=1)
    edge = np.where(topic == 2, 0.4, 0.0)
    rate = np.stack([ease, np.clip(ease + edge, 0, 1), ease - 0.1], axis=1).clip(0.02, 0.98)
    Y = (rng.random(rate.shape) < rate).astype(float)
    Y[rng.random(Y.shape) < 0.6] = np.nan       # about one label in three per cell, as from a bandit
    tr, te = np.arange(700), np.arange(700, 900)
    belief = SharedDifficultyKNN(k=50).fit(X[tr], Y[tr]).predict(X[te])
    assert isinstance(belief, BetaPrediction) and belief.p_success.shape == (200, 3)
    pick = belief.p_success.argmax(axis=1)
    assert np.mean(pick[topic[te] == 2] == 1) > 0.8
    assert np.all((belief.p_success > 0) & (belief.p_success < 1))


def test_belief_is_wider_where_a_model_has_no_outcomes_nearby():
    rng, X, topic, ease = _topics(seed=2)
    Y = (rng.random((len(X), 2)) < ease[:, None]).astype(float)
    Y[topic == 4, 1] = np.nan
    belief = SharedDifficultyKNN(k=50).fit(X, Y).predict(X[topic == 4])
    assert belief.concentration[:, 1].mean() < belief.concentration[:, 0].mean() / 3


def test_refuses_a_model_without_outcomes_and_a_misshapen_table():
    X = np.random.default_rng(0).normal(size=(20, 4))
    Y = np.ones((20, 2))
    Y[:, 1] = np.nan
    with pytest.raises(ValueError, match="at least one observed outcome"):
        SharedDifficultyKNN().fit(X, Y)
    with pytest.raises(ValueError, match="n_prompts"):
        SharedDifficultyKNN().fit(X, np.ones((19, 2)))


def _greedy_log(n, rare, seed):
    """A live router's log: model 0 answered almost everything, models 1.. only ``rare[j - 1]`` prompts each."""
    rng, X, topic, ease = _topics(n=n, seed=seed)
    answered_by = np.zeros(n, dtype=int)
    slots = rng.permutation(n)
    start = 0
    for j, count in enumerate(rare, start=1):
        answered_by[slots[start:start + count]] = j
        start += count
    Y = np.full((n, len(rare) + 1), np.nan)
    Y[np.arange(n), answered_by] = (rng.random(n) < ease).astype(float)
    return X, Y, topic, ease


def test_a_reference_bounds_the_difficulty_search_and_keeps_its_reading():
    # The first test's history four times over, the difficulty's searches reading a quarter of the rows: model
    # 1, tried only on the hard topics, is still level with model 0, and every model's residual still reads
    # all of its own rows.
    rng, X, topic, ease = _topics(n=3600)
    Y = (rng.random((len(X), 2)) < ease[:, None]).astype(float)
    Y[topic >= 3, 1] = np.nan
    model = SharedDifficultyKNN(k=50, max_reference=900).fit(X, Y)
    assert len(np.unique(model.reference_)) == 900
    assert [len(rows) for rows in model.model_rows_] == [3600, int((topic < 3).sum())]
    assert abs(model.offset_[0] - model.offset_[1]) < 0.08
    P = model.predict(X[topic == 5]).p_success
    assert abs(P[:, 1].mean() - P[:, 0].mean()) < 0.1 and P[:, 1].mean() > 0.6


def test_a_reference_row_is_not_its_own_neighbour():
    # Four prompts with nothing in common (orthogonal embeddings): leave-one-out, no row has a neighbour, so
    # every difficulty is 0 and what is left of each outcome is its distance from its model's offset.
    Y = np.array([[1.0, np.nan], [0.0, np.nan], [np.nan, 1.0], [1.0, np.nan]])
    model = SharedDifficultyKNN(k=3, max_reference=2).fit(np.eye(4), Y)
    seen = ~np.isnan(Y)
    assert np.allclose(model.excess_[seen], (Y - model.offset_)[seen])


def test_a_reference_tracks_the_truth_as_the_whole_history_does():
    X, Y, topic, ease = _greedy_log(4000, rare=(300,), seed=6)
    fit, held = slice(0, 3500), slice(3500, None)
    whole = SharedDifficultyKNN(k=50, max_reference=None).fit(X[fit], Y[fit]).predict(X[held])
    thin = SharedDifficultyKNN(k=50, max_reference=875).fit(X[fit], Y[fit]).predict(X[held])
    for j in (0, 1):
        assert np.abs(thin.p_success[:, j] - ease[held]).mean() < np.abs(whole.p_success[:, j] - ease[held]).mean() + 0.02


def test_a_history_within_the_reference_is_read_whole():
    X, Y, _, _ = _greedy_log(600, rare=(30,), seed=7)
    capped = SharedDifficultyKNN(k=50, max_reference=600).fit(X, Y).predict(X[:100])
    whole = SharedDifficultyKNN(k=50, max_reference=None).fit(X, Y).predict(X[:100])
    assert np.array_equal(capped.alpha, whole.alpha) and np.array_equal(capped.beta, whole.beta)
    with pytest.raises(ValueError, match="max_reference"):
        SharedDifficultyKNN(max_reference=0).fit(X, Y)


class Topics(Encoder):
    """Prompts ``topic <t> ...`` name their topic; the embedding is the topic's unit vector (no model download)."""

    name = "test-topics"

    def encode(self, prompts, **_):
        return np.eye(4, dtype=np.float32)[[int(p.split()[1]) for p in prompts]]


def test_router_takes_head_difficulty_with_partial_histories():
    rng = np.random.default_rng(3)
    prompts = [f"topic {t} item {i}" for i, t in enumerate(rng.integers(0, 4, 400))]
    strong_on = {"a": {0, 1}, "b": {2, 3}}
    hist = {name: [{"prompt": p, "successes": float(rng.random() < (0.9 if int(p.split()[1]) in tops else 0.2)),
                    "attempts": 1} for p in prompts if rng.random() < 0.5]
            for name, tops in strong_on.items()}
    router = Router([ModelSpec(name="a", cost_per_call=1.0), ModelSpec(name="b", cost_per_call=1.0)],
                    encoder=Topics(), head="difficulty", lam=0.0, guard=False).fit(hist)
    picks = [d.model for d in router.route([f"topic {t} new" for t in range(4)])]
    assert picks == ["a", "a", "b", "b"]


def test_auto_reads_a_bandit_log_with_the_shared_difficulty_model():
    rng = np.random.default_rng(4)
    prompts = [f"topic {t} item {i}" for i, t in enumerate(rng.integers(0, 4, 300))]
    specs = [ModelSpec(name=n, cost_per_call=1.0) for n in ("a", "b", "c")]
    full = {n: [{"prompt": p, "success_rate": float(rng.random() < 0.5)} for p in prompts] for n in "abc"}
    answered_by = rng.integers(0, 3, len(prompts))          # each request answered by one model, as live
    log = {n: [{"prompt": p, "success_rate": float(rng.random() < 0.5)}
               for p, k in zip(prompts, answered_by) if k == j] for j, n in enumerate("abc")}
    on_full = Router(specs, encoder=Topics(), lam=0.0).fit(full)
    assert not on_full.bandit_log_ and on_full.joint_ is None and len(on_full.heads_) == 3
    on_log = Router(specs, encoder=Topics(), lam=0.0).fit(log)
    assert on_log.bandit_log_ and isinstance(on_log.joint_, SharedDifficultyKNN) and on_log.heads_ is None
    named = Router(specs, encoder=Topics(), lam=0.0, head="ensemble").fit(log)   # a named head is kept
    assert named.bandit_log_ and named.joint_ is None
    single = Router(specs[:1], encoder=Topics(), lam=0.0).fit({"a": log["a"]})  # one model: nothing to pool
    assert not single.bandit_log_ and single.joint_ is None
