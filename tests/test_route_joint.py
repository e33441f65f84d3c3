"""The joint success model, the default-aware rule, partial histories and the nine-model data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preroll.beliefs import BetaPrediction
from preroll.data import Outcome, RecordError
from preroll.encoders.base import Encoder
from preroll.route import ModelSpec, Router, rules
from preroll.route.joint import JointSuccessModel, expected_calibration_error

FAST = dict(epochs=8, members=2, hidden=32)


def _planted(n=600, seed=0):
    """Three topics; model 0 best on average, models 1 and 2 each far better on one topic."""
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, 16))
    X = centres[topic] + 0.3 * rng.normal(size=(n, 16))
    rate = np.array([[0.70, 0.70, 0.70],    # topic 0
                     [0.30, 0.95, 0.10],    # topic 1: model 1 wins
                     [0.30, 0.10, 0.95]])   # topic 2: model 2 wins
    # model 0 is the best single model overall only through topic 0's weight
    Y = (rng.random((n, 3)) < rate[topic][:, [0, 1, 2]]).astype(float)
    return X.astype(np.float32), Y, topic


def test_joint_model_routes_each_topic_to_its_best_model():
    X, Y, topic = _planted()
    tr, te = np.arange(400), np.arange(400, 600)
    jm = JointSuccessModel(**FAST).fit(X[tr], Y[tr])
    belief = jm.predict(X[te])
    assert isinstance(belief, BetaPrediction) and belief.p_success.shape == (200, 3)
    pick = belief.p_success.argmax(axis=1)
    assert np.mean(pick[topic[te] == 1] == 1) > 0.9
    assert np.mean(pick[topic[te] == 2] == 2) > 0.9
    routed = Y[te][np.arange(200), pick].mean()
    best_single = Y[te].mean(axis=0).max()
    assert routed > best_single + 0.1


def test_probabilities_are_calibrated_per_model_out_of_fold():
    X, Y, _ = _planted(900, seed=1)
    jm = JointSuccessModel(**FAST).fit(X[:600], Y[:600])
    P = jm.predict(X[600:]).p_success
    for j in range(3):
        assert expected_calibration_error(P[:, j], Y[600:, j]) < 0.08


def test_missing_entries_are_left_out_not_counted_as_failures():
    X, Y, topic = _planted(600, seed=2)
    Ym = Y.copy()
    Ym[topic == 1, 2] = np.nan          # model 2 never saw topic 1 (where it fails)
    Ym[::3, 0] = np.nan
    jm = JointSuccessModel(**FAST).fit(X[:400], Ym[:400])
    P = jm.predict(X[400:]).p_success
    assert np.all(np.isfinite(P))
    # model 1 still wins topic 1; model 2's unseen cells fall back to what the model knows, not to 0
    t1 = topic[400:] == 1
    assert np.mean(P[t1].argmax(axis=1) == 1) > 0.9
    # concentration reflects evidence: model 2 has none near topic 1
    conc = jm.predict(X[400:]).concentration
    assert conc[t1, 2].mean() < conc[t1, 1].mean()


def test_a_handful_of_outcomes_does_not_give_near_certain_probabilities():
    """Calibration maps fitted on four prompts stay near the identity; on many they are free to move."""
    from preroll.route.joint import _fit_platt

    z = np.array([-0.2, 0.1, 0.3, -0.1])
    y = np.array([0.0, 1.0, 1.0, 0.0])
    a, b = _fit_platt(z, y, np.ones(4))
    assert 1.0 <= a < 3.0 and abs(b) < 0.5          # unshrunk, this separable sample drives a to its bound 10
    rng = np.random.default_rng(0)
    zz = rng.normal(size=4000)
    yy = (rng.random(4000) < 1 / (1 + np.exp(-3.0 * zz))).astype(float)
    a_many, _ = _fit_platt(zz, yy, np.ones(4000))
    assert a_many == pytest.approx(3.0, abs=0.3)      # the true slope, barely shrunk


def test_joint_model_rejects_bad_targets():
    X, Y, _ = _planted(50)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        JointSuccessModel(**FAST).fit(X, Y * 2)
    Y2 = Y.copy()
    Y2[:, 1] = np.nan
    with pytest.raises(ValueError, match="at least one observed"):
        JointSuccessModel(**FAST).fit(X, Y2)


def test_confident_rule_leaves_the_default_only_for_a_confident_gain():
    P = np.array([[0.60, 0.62, 0.10],    # tiny, uncertain gain: stay
                  [0.30, 0.90, 0.10]])   # large gain: move
    S = np.full(P.shape, 0.05)
    C = np.zeros_like(P)
    first = rules.rank_confident(P, S, C, 0.0, default=0, z=1.0)[:, 0]
    assert first.tolist() == [0, 1]
    # z = 0 and margin 0: plain utility
    assert rules.rank_confident(P, S, C, 0.0, default=0, z=0.0)[:, 0].tolist() == [1, 1]
    # huge z: never move
    assert rules.rank_confident(P, S, C, 0.0, default=0, z=100.0)[:, 0].tolist() == [0, 0]
    # a full ranking with every model once
    r = rules.rank_confident(P, S, C, 0.0, default=0)
    assert sorted(r[0].tolist()) == [0, 1, 2]
    assert rules.default_model(np.array([0.5, 0.7, 0.9]), np.array([1.0, 2.0, 10.0]), lam=0.05) == 1


class VectorEncoder(Encoder):
    """Looks the vector of a prompt up in a table (prompts are ``p<i>``)."""

    name = "test-vectors"

    def __init__(self, X):
        self.X = X

    def encode(self, texts, *, show_progress=False):
        return self.X[[int(t[1:]) for t in texts]]


def test_router_fits_partial_histories_and_routes_confidently():
    X, Y, topic = _planted(600, seed=3)
    specs = [ModelSpec(name=f"m{j}", cost_per_call=1.0) for j in range(3)]
    hist = {f"m{j}": [Outcome(prompt=f"p{i}", successes=Y[i, j], attempts=1.0)
                      for i in range(400) if not (j == 2 and i % 2)] for j in range(3)}
    router = Router(specs, encoder=VectorEncoder(X), head=JointSuccessModel(**FAST), rule="confident",
                    lam=0.0, confidence=1.0).fit(hist)
    assert router.n_history_["m2"] == 200
    belief = router.predict_beta([f"p{i}" for i in range(400, 600)])
    assert belief.alpha.shape == (200, 3)
    ds = router.route([f"p{i}" for i in range(400, 600)])
    chosen = np.array([int(d.model[1]) for d in ds])
    t = topic[400:]
    assert np.mean(chosen[t == 1] == 1) > 0.9 and np.mean(chosen[t == 2] == 2) > 0.9
    pts = router.frontier([f"p{i}" for i in range(400, 600)], Y[400:], rule="confident")
    assert pts[0].quality > Y[400:].mean(axis=0).max()


def test_llmrouter_loader_and_errors(tmp_path):
    from preroll.bench.llmrouter import load_llmrouter

    data = load_llmrouter()
    assert len(data.models) == 9 and data.scores.shape == (len(data), 9)
    assert np.nanmin(data.scores) >= 0 and np.nanmax(data.scores) <= 1
    specs = data.model_specs(output_tokens=100)
    assert all(s.per_token for s in specs)
    h = data.subset(np.arange(20)).histories()
    assert all(len(v) == 20 for v in h.values())

    (tmp_path / "models.json").write_text(json.dumps({"a": {"input_price_per_mtok": 1, "output_price_per_mtok": 1}}))
    (tmp_path / "train.jsonl").write_text('{"prompt": "x", "scores": {"a": 0.5}}\n'
                                          '{"prompt": "y", "scores": {"a": 1.5}}\n')
    with pytest.raises(RecordError, match=r"train.jsonl, line 2, field 'scores.a'"):
        load_llmrouter(tmp_path)
    (tmp_path / "train.jsonl").write_text('{"prompt": "x", "scores": {"b": 0.5}}\n')
    with pytest.raises(RecordError, match="not in models.json"):
        load_llmrouter(tmp_path)


class HashingEncoder(Encoder):
    """Fast, fit-free word-hashing vectors."""

    name = "test-hashing-joint"

    def encode(self, texts, *, show_progress=False):
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(n_features=256, alternate_sign=False, norm="l2")
        return vec.transform(list(texts)).toarray().astype(np.float32)


def test_nine_model_bench_runs_on_a_small_real_subset():
    from preroll.bench.route_multi import MultiBenchConfig, run_multi_bench

    cfg = MultiBenchConfig(folds=2, max_prompts=240, encoder=HashingEncoder(), independent=False, mlp=False,
                           latency_prompts=3, topics=3, grid=21)
    res = run_multi_bench(cfg)
    names = [r["name"] for r in res["summary"]]
    assert names[0].startswith("router (joint)") and "oracle" in names and "per-cluster best (KMeans, K by CV)" in names
    by = {r["name"]: r for r in res["summary"]}
    assert by["oracle"]["quality_at_zero"] >= by["router (joint), utility"]["quality_at_zero"]
    assert by["oracle"]["quality_at_zero"] >= by["best single (training folds)"]["quality_at_zero"]
    assert res["topics"]["rows"][-1]["n"] == 240
    assert res["latency_ms"]["n"] == 3


# ------------------------------------------------------------ stacked parts

def _two_signals(n=1500, seed=0):
    """Success = a topic effect (eight tight topics, no linear pattern) plus a smooth linear trend.

    The neighbour and topic parts see the topics but blur the trend; the linear part sees the trend
    but not the topics: only a blend of both is right, so the stack must beat every part.
    """
    rng = np.random.default_rng(seed)
    topic = rng.integers(0, 8, n)
    centres = rng.normal(size=(8, 12))
    u = rng.normal(size=n)
    X = np.hstack([centres[topic] + 0.2 * rng.normal(size=(n, 12)), 2.0 * u[:, None]])
    effect = rng.normal(scale=1.5, size=(8, 2))
    z = effect[topic] + np.outer(u, [1.5, -1.5])
    Y = (rng.random((n, 2)) < 1 / (1 + np.exp(-z))).astype(float)
    return X.astype(np.float32), Y


def test_stacked_model_beats_each_of_its_parts_on_held_out_loss():
    from preroll.route.joint import masked_log_loss

    X, Y = _two_signals()
    jm = JointSuccessModel(**FAST, linear_l2=(0.5,), clusters=(8,)).fit(X[:1000], Y[:1000])
    W = np.ones_like(Y[1000:])
    stacked = masked_log_loss(Y[1000:], W, jm.predict(X[1000:]).p_success).mean()
    parts = {name: masked_log_loss(Y[1000:], W, P).mean() for name, P in jm.parts_proba(X[1000:]).items()}
    assert set(parts) == set(jm.part_names_) and {"net", "linear0.5", "clusters8"} <= set(parts)
    assert stacked < min(parts.values()), (stacked, parts)
    # out of fold on the history too, and the weights are a non-negative blend
    assert jm.stacked_loss_ < min(jm.part_losses_.values())
    assert np.all(jm.weights_[:, :-1] >= 0) and jm.weights_.shape == (2, 2 * len(jm.part_names_) + 1)


def test_a_handful_of_prompts_gives_no_near_certain_probabilities():
    """Eight prompts in 16 dimensions are separable: the linear parts' penalty and the stacker's prior hold."""
    X, Y, _ = _planted(8, seed=4)
    jm = JointSuccessModel(**FAST).fit(X, Y)
    P = jm.predict(X).p_success
    assert np.all((P > 0.05) & (P < 0.95)), P
    assert {"linear0.5", "linear5"} <= set(jm.part_names_)


def test_parts_are_skipped_when_the_history_is_too_small_for_them():
    X, Y, _ = _planted(120, seed=5)
    jm = JointSuccessModel(**FAST, clusters=(4, 40)).fit(X, Y)
    assert "clusters4" in jm.part_names_ and "clusters40" not in jm.part_names_   # 40 topics need 400 prompts
    assert max(jm.ks_) < 120


def test_a_model_seen_on_few_prompts_keeps_finite_calibrated_beliefs():
    X, Y, topic = _planted(900, seed=6)
    Ym = Y.copy()
    Ym[40:, 2] = np.nan                     # model 2: outcomes on 40 prompts only
    jm = JointSuccessModel(**FAST).fit(X[:600], Ym[:600])
    belief = jm.predict(X[600:])
    P = belief.p_success
    assert np.all(np.isfinite(P)) and P.min() > 0 and P.max() < 1
    assert belief.concentration[:, 2].mean() < belief.concentration[:, 0].mean()
    for j in (0, 1):                        # the fully observed models stay calibrated
        assert expected_calibration_error(P[:, j], Y[600:, j]) < 0.08


def test_cumulative_neighbour_pooling_equals_pooling_each_k_directly():
    from preroll.heads.knn import unit_rows
    from preroll.route.parts import neighbours, pool_neighbours

    rng = np.random.default_rng(0)
    X = unit_rows(rng.normal(size=(200, 8)))
    Y = (rng.random((200, 3)) < 0.4).astype(float)
    W = (rng.random((200, 3)) < 0.7).astype(float)
    base = (Y * W).sum(0) / W.sum(0)
    for loo in (True, False):
        idx, sim, valid = neighbours(X, X, 40, leave_one_out=loo)
        pooled = pool_neighbours(idx, sim, valid, [3, 17, 40], Y, W, base, 2.0)
        for k in (3, 17, 40):
            rates, n_eff = np.zeros((200, 3)), np.zeros((200, 3))
            for i in range(200):
                cols = np.flatnonzero(valid[i])[:k]
                w = (np.maximum(sim[i, cols], 0) + 1e-6)[:, None] * W[idx[i, cols]]
                rates[i] = ((w * Y[idx[i, cols]]).sum(0) + 2.0 * base) / (w.sum(0) + 2.0)
                n_eff[i] = np.where(w.sum(0) > 0, w.sum(0) ** 2 / np.maximum((w ** 2).sum(0), 1e-12), 0)
            assert np.allclose(pooled[k][0], rates) and np.allclose(pooled[k][1], n_eff)


def test_trunk_prediction_in_numpy_matches_the_torch_network():
    import torch

    from preroll.route.parts import TrunkNet

    X, Y, _ = _planted(200, seed=7)
    net = TrunkNet(16, 2, 0.3, 1e-4, 2e-3, seed=0).fit(X, Y, np.ones_like(Y))
    with torch.no_grad():
        ref = torch.sigmoid(net.module_(torch.as_tensor(X))).numpy()
    assert np.allclose(net.predict(X), ref, atol=1e-5)


def test_topic_table_gives_no_row_to_a_topic_with_no_held_out_prompt_and_nan_to_an_unscored_mean():
    """Topic 2 has no prompt in the held-out fold: it is listed, not averaged over zero rows (numpy's "Mean of
    empty slice"); a topic whose held-out rows have no score for the router's pick reports NaN for that mean."""
    import warnings

    from preroll.bench.route_multi import MultiBenchConfig, topic_table

    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, 1.0], [np.nan, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0],
                  [0.5, 1.0]])
    pick = np.zeros(len(Y), int)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        table = topic_table(labels, Y, [np.array([0, 1, 2, 3])], pick, pick, pick, ["a", "b"],
                            MultiBenchConfig(topics=3))
    rows = {r["topic"]: r for r in table["rows"]}
    assert table["no_held_out"] == [2] and list(rows) == [0, 1, "all"]
    assert rows[0]["n"] == 2 and rows[0]["router"] == 0.5 and rows[0]["oracle"] == 1.0
    assert np.isnan(rows[1]["router"]) and rows[1]["oracle"] == 0.5 and np.isnan(rows[1]["se"])
    assert rows["all"]["n"] == 4 and rows["all"]["router"] == 0.5
