"""Evaluation under shift: fold builders, ECE, averaged beliefs, the out-of-depth guard, a small real run."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from preroll.beliefs import BetaPrediction
from preroll.bench import route_shift as rs
from preroll.data import Outcome
from preroll.encoders.base import Encoder
from preroll.route import ModelSpec, RouteConfigError, Router
from preroll.heads.humble import humble
from preroll.route.depth import (
    DepthGuard,
    average_beliefs,
    history_similarity,
    max_similarity,
)


def _texts_and_vectors(n_groups: int, per_group: int, seed: int):
    """Texts in well separated blobs (one blob per group), with duplicates of some texts."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, 8)) * 10
    texts, X = [], []
    for g in range(n_groups):
        for i in range(per_group):
            texts.append(f"group {g} text {i}")
            X.append(centres[g] + rng.normal(size=8) * 0.1)
    return texts, np.array(X)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 6), st.integers(3, 12), st.integers(0, 10_000))
def test_cluster_out_folds_hold_whole_clusters_out(k, per_group, seed):
    texts, X = _texts_and_vectors(k, per_group, seed)
    prompts = texts + texts[:per_group]          # duplicated texts of the first group: must share a fold
    folds = rs.cluster_out_folds(prompts, X, k, k, seed)
    assert len(folds) == k
    labels = rs.text_clusters(X, k, seed)
    text_label = {t: labels[i] for i, t in enumerate(texts)}
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(prompts)))       # every row tested exactly once
    for f in folds:
        assert np.intersect1d(f.train, f.test).size == 0
        held = {text_label[prompts[i]] for i in f.test}
        seen = {text_label[prompts[i]] for i in f.train}
        assert held and not held & seen                              # a held-out cluster is absent from history
        assert not {prompts[i] for i in f.test} & {prompts[i] for i in f.train}


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(0, 10_000))
def test_random_folds_partition_unique_texts(folds, seed):
    prompts = [f"p{i % 37}" for i in range(80)]
    out = rs.random_folds(prompts, folds, seed)
    tests = np.concatenate([f.test for f in out])
    assert sorted(tests.tolist()) == list(range(80))
    for f in out:
        assert not {prompts[i] for i in f.test} & {prompts[i] for i in f.train}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 10_000))
def test_reweighted_folds_move_the_mix(seed):
    texts, X = _texts_and_vectors(6, 40, seed)
    folds = rs.reweighted_folds(texts, X, 6, 4, seed, alpha=0.5)
    mixes = np.array([f.info["test_mix"] for f in folds])
    for f in folds:
        assert np.intersect1d(f.train, f.test).size == 0
        assert len(f.test) == len(texts) // 4
        assert f.info["tv_distance"] > 0.05                            # test mix differs from the history's
    assert np.abs(mixes[0] - mixes[1:]).sum(axis=1).max() > 0.1        # and the folds differ from each other
    # a random fold's mix stays close to the whole set's: the reweighting is what moves it
    lab = rs.text_clusters(X, 6, seed)
    rnd = rs.random_folds(texts, 4, seed)[0]
    rnd_mix = np.bincount(lab[rnd.test], minlength=6) / len(rnd.test)
    assert 0.5 * np.abs(rnd_mix - np.bincount(lab, minlength=6) / len(lab)).sum() < np.mean(
        [f.info["tv_distance"] for f in folds])


def test_group_out_and_protocol_names():
    prompts = [f"q{i}" for i in range(30)]
    groups = [f"subject{i % 6}" for i in range(30)]
    folds = rs.build_folds("group", prompts, None, 3, 0, groups=groups)
    for f in folds:
        assert not {groups[i] for i in f.test} & {groups[i] for i in f.train}
    assert rs.check_protocols(["random", " cluster7", "reweight"]) == ["random", "cluster7", "reweight"]
    for bad in (["cluster"], ["cluster1"], ["shuffle"], [""]):
        with pytest.raises(ValueError):
            rs.check_protocols(bad)
    with pytest.raises(ValueError, match="embeddings"):
        rs.build_folds("cluster5", prompts, None, 3, 0)


def test_ece():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20_000)
    y = (rng.uniform(size=p.size) < p).astype(float)
    assert rs.expected_calibration_error(p, y) < 0.02                 # calibrated
    assert rs.expected_calibration_error(np.full(1000, 0.9), np.r_[np.ones(500), np.zeros(500)]) == \
        pytest.approx(0.4)                                             # says 0.9, gets 0.5
    assert rs.expected_calibration_error(np.array([0.3, 0.7]), np.array([np.nan, 1.0])) == pytest.approx(0.3)
    assert rs.graded_rows(np.array([[0, 1], [0.5, 1], [np.nan, 0]])).tolist() == [False, True, False]


def test_pooled_metrics_gain_and_cost_to_match():
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    C = np.tile([1.0, 10.0], (4, 1))
    best = np.ones(4, int)                       # model 1 is the best single: quality 0.5 at cost 10
    oracle = np.array([0, 1, 0, 0])              # 0.75 at cost (1 + 10 + 1 + 1) / 4
    cheap = np.zeros(4, int)                     # 0.5 at cost 1
    m = rs.pooled_metrics([oracle, cheap], Y, C, best, rs.graded_rows(Y))
    assert m["gain"] == pytest.approx(0.25)
    assert m["cost_to_match"] == pytest.approx(0.1)
    assert m["graded_n"] == 0 and m["graded_gain"] is None


def test_average_beliefs_widen_where_heads_disagree():
    a = BetaPrediction.from_mean_concentration(np.array([0.2, 0.5]), np.array([50.0, 50.0]))
    b = BetaPrediction.from_mean_concentration(np.array([0.8, 0.5]), np.array([50.0, 50.0]))
    m = average_beliefs(a, b)
    assert m.p_success == pytest.approx([0.5, 0.5])
    assert m.std[0] > 3 * m.std[1]                # disagreement: wide; agreement: as narrow as the parts
    assert m.std[1] == pytest.approx(a.std[1], rel=1e-6)


def test_similarity_helpers():
    H = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert max_similarity(np.array([[0.0, 2.0]]), H)[0] == pytest.approx(1.0)
    loo = history_similarity(H)
    assert loo[2] < 0.2 < loo[0]                  # the lone row is far from the rest, leaving itself out


class TopicEncoder(Encoder):
    """One feature per topic word; a prompt with none of them points nowhere near the history."""

    name = "test-topic"
    WORDS = ("easy", "hard", "poem")

    def encode(self, texts, *, show_progress=False):
        X = np.array([[float(w in t) for w in self.WORDS] + [0.05] for t in texts], dtype=np.float32)
        return X / np.linalg.norm(X, axis=1, keepdims=True)


def _histories(n=40):
    h = {"cheap": [], "dear": []}
    for i in range(n):
        h["cheap"].append(Outcome(prompt=f"easy {i}", successes=1.0, attempts=1.0))
        h["dear"].append(Outcome(prompt=f"easy {i}", successes=1.0, attempts=1.0))
        h["cheap"].append(Outcome(prompt=f"hard {i}", successes=float(i % 5 == 0), attempts=1.0))
        h["dear"].append(Outcome(prompt=f"hard {i}", successes=float(i % 5 != 0), attempts=1.0))
    return h


SPECS = [ModelSpec(name="cheap", cost_per_call=1.0), ModelSpec(name="dear", cost_per_call=2.0)]


def test_guard_falls_back_to_the_best_on_average_on_far_queries():
    router = Router(models=SPECS, encoder=TopicEncoder(), head="ensemble", lam=0.0, guard=True).fit(_histories())
    X = router.embed(["easy new", "hard new", "poem about the sea"])
    assert router.far_from_history(X).tolist() == [False, False, True]
    # A belief that prefers "cheap" by a hair with a wide spread: the plain rule takes it everywhere; the guard
    # keeps the best on average ("dear", 0.9 vs 0.6 in the history) on the far query, where the gain is unsure.
    belief = BetaPrediction.from_mean_concentration(np.tile([0.62, 0.60], (3, 1)), np.full((3, 2), 4.0))
    C = np.tile([1.0, 2.0], (3, 1))
    far = router.far_from_history(X)
    assert router.rank_models(belief, C, "utility", 0.0)[:, 0].tolist() == [0, 0, 0]
    assert router.rank_models(belief, C, "utility", 0.0, far=far)[:, 0].tolist() == [0, 0, 1]
    # A confident gain still moves the far query.
    sure = BetaPrediction.from_mean_concentration(np.tile([0.95, 0.30], (3, 1)), np.full((3, 2), 400.0))
    assert router.rank_models(sure, C, "utility", 0.0, far=far)[:, 0].tolist() == [0, 0, 0]
    # Off: route() is the plain rule; on: route() passes the far mask itself.
    plain = Router(models=SPECS, encoder=TopicEncoder(), head="ensemble", lam=0.0, guard=False).fit(_histories())
    assert not plain.far_from_history(X).any()
    assert [d.model for d in router.route(["easy new", "hard new"])] == \
        [d.model for d in plain.route(["easy new", "hard new"])]


def test_defaults_are_the_ensemble_head_with_the_guard_on():
    r = Router(models=SPECS, encoder=TopicEncoder()).fit(_histories())
    assert r.joint_ is None and len(r.heads_) == 2
    assert r.far_from_history(r.embed(["poem"])).tolist() == [True]


def test_guard_settings_are_checked():
    with pytest.raises(RouteConfigError, match="far_quantile"):
        Router(models=SPECS, encoder=TopicEncoder(), guard={"far_quantile": 2.0}).fit(_histories())
    with pytest.raises(RouteConfigError, match="guard"):
        Router(models=SPECS, encoder=TopicEncoder(), guard="yes").fit(_histories())
    r = Router(models=SPECS, encoder=TopicEncoder(), head="ensemble", guard=DepthGuard(far_quantile=0.0, z=2.0))
    r.fit(_histories())
    assert r.far_below_ <= 1.0


def test_average_head_is_the_mixture_of_joint_and_ensemble():
    kw = {"models": SPECS, "encoder": TopicEncoder(), "lam": 0.0}
    avg = Router(head="average", **kw).fit(_histories())
    joint = Router(head="joint", **kw).fit(_histories())
    ens = Router(head="ensemble", **kw).fit(_histories())
    X = avg.embed(["easy a", "hard b", "poem c"])
    evidence = avg.evidence_
    for r in (avg, joint, ens):  # the heads' own beliefs: humility (preroll.heads.humble) comes once, after mixing
        r.evidence_ = None
    want = average_beliefs(joint.predict_beta_embeddings(X), ens.predict_beta_embeddings(X))
    got = avg.predict_beta_embeddings(X)
    assert got.p_success == pytest.approx(want.p_success, abs=1e-6)
    assert got.std == pytest.approx(want.std, abs=1e-6)
    avg.evidence_ = evidence
    humbled = humble(want, evidence)
    assert avg.predict_beta_embeddings(X).p_success == pytest.approx(humbled.p_success, abs=1e-6)
    assert avg.predict_proba_embeddings(X) == pytest.approx(humbled.p_success, abs=1e-6)
    assert avg.route(["hard q"])[0].model == "dear"


def test_shift_bench_small_real_run():
    from preroll.bench.route_shift_run import ShiftBenchConfig, run_shift_bench

    cfg = ShiftBenchConfig(folds=3, seeds=(0,), protocols=("cluster4", "reweight"), max_prompts=300,
                           encoder="lexical", cluster_encoder="lexical", cache_dir=None, reweight_k=4,
                           heads=("joint", "ensemble"), grid=21, guard_quantiles=(0.25,))
    res = run_shift_bench(cfg)
    assert [(r["protocol"], r["seed"]) for r in res["runs"]] == [("cluster4", 0), ("reweight", 0)]
    for run in res["runs"]:
        assert set(run["methods"]) == {"joint", "ensemble", "average", "joint+guard0.25", "ensemble+guard0.25",
                                       "average+guard0.25"}
        for m in run["methods"].values():
            assert -1 <= m["gain"] <= run["oracle_gain"] + 1e-9
            assert 0 <= m["far_share"] <= 1 if "far_share" in m else True
        assert set(run["ece"]["joint"]["per_model"]) == set(res["models"])
        assert all(0 <= v <= 1 for v in run["ece"]["average"]["per_model"].values())
    cluster = res["runs"][0]
    assert sum(f["n_test"] for f in cluster["folds"]) == 300         # cluster-out: every row held out once
    assert all(f["tv_distance"] > 0 for f in res["runs"][1]["folds"])
    worst = [e["worst_gain"] for e in res["summary"]]
    assert worst == sorted(worst, reverse=True)
    from rich.console import Console

    from preroll.cli.bench_route_shift import print_nine_shift

    console = Console(record=True, width=200)
    print_nine_shift(res, console)
    text = console.export_text()
    assert "Worst case over protocols" in text and "average+guard0.25" in text and "ECE joint" in text


def test_cli_refuses_bad_protocol_options(tmp_path):
    from typer.testing import CliRunner

    from preroll.cli.main import app

    for args, hint in ((["--protocol", "cluster1"], "cluster"), (["--protocol", "shuffle"], "shuffle"),
                       (["--fold-seeds", "a,b"], "integers"), (["--heads", "joint,magic"], "magic")):
        r = CliRunner().invoke(app, ["bench", "route", "--models", "9", "--out", str(tmp_path / "o"), *args])
        assert r.exit_code != 0 and hint in r.output
        assert "Traceback" not in r.output


class VectorEncoder(Encoder):
    """Reads the vector written in the prompt ("v 0.1 0.2 0.3"): geometry chosen by the test."""

    name = "test-vector"

    def encode(self, texts, *, show_progress=False):
        return np.array([[float(x) for x in t.split()[1:]] for t in texts], dtype=np.float32)


def test_default_guard_counts_only_the_loneliest_tenth_as_far():
    from preroll.route.depth import far_threshold

    rng = np.random.default_rng(0)
    H = rng.normal(size=(60, 3))
    texts = ["v " + " ".join(f"{x:.6f}" for x in row) for row in H]
    hist = {"cheap": [Outcome(prompt=t, successes=float(i % 2), attempts=1.0) for i, t in enumerate(texts)],
            "dear": [Outcome(prompt=t, successes=float(i % 3 > 0), attempts=1.0) for i, t in enumerate(texts)]}
    enc = VectorEncoder()
    X = enc.encode(texts)
    lo, hi = far_threshold(X, DepthGuard(far_quantile=0.1)), far_threshold(X, DepthGuard(far_quantile=0.25))
    assert lo < hi
    Q = rng.normal(size=(20_000, 3))
    s = max_similarity(Q, X)
    between = Q[(s > lo + 1e-4) & (s < hi - 1e-4)][:3]          # as isolated as the loneliest 10-25% of the history
    assert len(between) == 3
    default = Router(models=SPECS, encoder=enc, lam=0.0).fit(hist)
    quarter = Router(models=SPECS, encoder=enc, lam=0.0, guard={"far_quantile": 0.25}).fit(hist)
    assert default.far_below_ == pytest.approx(lo) and quarter.far_below_ == pytest.approx(hi)
    assert not default.far_from_history(between).any()          # near for the default guard (quantile 0.1)
    assert quarter.far_from_history(between).all()              # far for the former default (0.25)
