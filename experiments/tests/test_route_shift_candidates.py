"""The candidate sweep measures what the Router does: one fit's parts reproduce the Router's own decisions."""

from __future__ import annotations

import numpy as np
import pytest

from preroll.bench import route_shift as rs
from experiments import route_shift_candidates as rc


@pytest.fixture(scope="module")
def small():
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route import random_subset

    data = random_subset(load_llmrouter(None), 240, 0)
    X_text = rs.text_embeddings(data.prompts, "lexical")
    _, t = rs._text_ids(data.prompts)
    task = rs.text_clusters(X_text, 6, 0)[t]
    fold = rs.build_folds("cluster4", data.prompts, X_text, 4, 0)[0]
    specs = data.model_specs(256)
    return data, specs, fold, rc.fold_parts(data, specs, fold, "lexical", task)


def test_default_candidate_is_the_routers_default_decision(small):
    from preroll.route import Router

    data, specs, fold, parts = small
    router = Router(models=specs, encoder="lexical", rule="utility", lam=0.0).fit(data.histories(fold.train))
    p_te = [data.prompts[i] for i in fold.test]
    want = [d.model for d in router.route(p_te)]
    names = [s.name for s in specs]
    cols = np.arange(len(names))
    got = rc.candidate_picks(parts, rc.CANDIDATES["ensemble+guard0.1 (default)"], cols, [0.0])[0]
    assert [names[j] for j in got] == want
    # the same belief: the Router's default head is the equal mixture of the logistic and kNN parts
    X = router.embed(p_te)
    assert rc.belief(parts, ("logistic", "knn")).p_success == pytest.approx(
        router.predict_beta_embeddings(X).p_success, abs=1e-6)
    assert parts["sim"].shape == (len(p_te),)
    assert (parts["sim"] < parts["far_below_0.1"]).tolist() == router.far_from_history(X).tolist()


def test_topic_rates_are_shrunk_history_rates(small):
    _, _, fold, parts = small
    for K in rc.TOPIC_KS:
        P = parts[f"p_topics{K}"]
        assert P.shape == parts["Y"].shape and np.all((P > 0) & (P < 1))   # shrunk: never 0 or 1
        assert all(len(np.unique(P[:, j])) <= K for j in range(P.shape[1]))  # one rate per topic


def test_sweep_and_selection_rule(small):
    _, specs, _, parts = small
    names = [s.name for s in specs]
    res = rc.evaluate({("cluster4", 0): [parts]}, names, grid_n=11)
    sets = {e["set"] for e in res["runs"]}
    assert sets == {"nine", "small"}
    small_set = next(e for e in res["runs"] if e["set"] == "small")
    assert all(0 <= m["top_share"] <= 1 for m in small_set["methods"].values())
    for e in res["runs"]:  # each test topic's own best can never lose to one fixed model
        assert e["task_oracle_gain"] >= -1e-12
    # the selection rule: the default stays unless beaten by more than the bar; ties go to the simplest
    summ = [{"name": n, "baseline": c.baseline, "worst": 0.0} for n, c in rc.CANDIDATES.items()]
    assert rc.choose(summ, rc.CANDIDATES) == "ensemble+guard0.1 (default)"
    summ[3]["worst"] = 0.02                     # ensemble+topics20: beats the default by 2 points
    summ[4]["worst"] = 0.018                    # its guarded form ties with it: the simpler one wins
    assert rc.choose(summ, rc.CANDIDATES) == "ensemble+topics20"
    summ[1]["worst"] = 0.004                    # within the bar of the default: not a change
    summ[3]["worst"] = summ[4]["worst"] = 0.0
    assert rc.choose(summ, rc.CANDIDATES) == "ensemble+guard0.1 (default)"
    # third round: a better worst case with a worse nine-model mean does not replace the default
    summ = [{"name": n, "baseline": c.baseline, "worst": 0.0, "mean_nine": 0.03} for n, c in rc.CANDIDATES.items()]
    gated = list(rc.CANDIDATES).index("ensemble+topics20@depth0.1+guard0.1")
    summ[gated]["worst"], summ[gated]["mean_nine"] = 0.02, 0.029
    assert rc.choose(summ, rc.CANDIDATES) == "ensemble+guard0.1 (default)"
    summ[gated]["mean_nine"] = 0.031
    assert rc.choose(summ, rc.CANDIDATES) == "ensemble+topics20@depth0.1+guard0.1"
    soft = list(rc.CANDIDATES).index("ensemble+topics20@soft+guard0.1")
    summ[soft].update(worst=0.021, mean_nine=0.04)     # ties with the depth gate: the simpler gate wins
    assert rc.choose(summ, rc.CANDIDATES) == "ensemble+topics20@depth0.1+guard0.1"


def test_gated_topic_rates_are_the_ensemble_far_and_the_topic_mixture_near(small):
    *_, parts = small
    parts = dict(parts)   # thresholds inside the 21 test rows' similarities, so that both sides are present
    parts["far_below_0.1"], parts["far_below_0.25"] = np.quantile(parts["sim"], [0.3, 0.7])
    near = parts["sim"] >= parts["far_below_0.1"]
    assert near.any() and (~near).any()
    gated = rc.belief(parts, ("logistic", "knn", "topics20"), "depth0.1")
    plain = rc.belief(parts, ("logistic", "knn"))
    full = rc.belief(parts, ("logistic", "knn", "topics20"))
    assert gated.p_success[~near] == pytest.approx(plain.p_success[~near])
    assert gated.p_success[near] == pytest.approx(full.p_success[near])
    assert not np.allclose(gated.p_success, full.p_success)
    # the soft weight lies between the two everywhere, and is the full mixture beyond the 0.25 threshold
    soft = rc.belief(parts, ("logistic", "knn", "topics20"), "soft").p_success
    lo, hi = np.minimum(plain.p_success, full.p_success), np.maximum(plain.p_success, full.p_success)
    assert np.all((soft >= lo - 1e-9) & (soft <= hi + 1e-9))
    deep = parts["sim"] >= parts["far_below_0.25"]
    assert soft[deep] == pytest.approx(full.p_success[deep])


def test_topic_centrality_is_a_quantile_within_the_topic(small):
    *_, parts = small
    for K in rc.TOPIC_KS:
        tq, tsim = parts[f"tq{K}"], parts[f"tsim{K}"]
        assert np.all((tq >= 0) & (tq <= 1)) and np.all(tsim <= 1 + 1e-6)
    rng = np.random.default_rng(0)
    H = rc._unit(np.vstack([rng.normal(size=(50, 8)) + 6 * np.eye(8)[0], rng.normal(size=(50, 8)) - 6 * np.eye(8)[0]]))
    Q = rc._unit(np.vstack([6 * np.eye(8)[0], np.eye(8)[0] + 3 * np.eye(8)[1]]))
    S = A = np.ones((100, 2))
    t = rc.topic_parts(H, Q, S, A, np.array([1.0, 1.0]), 2)
    assert t["tq"][0] == 1.0                   # at the centre: closer than every member
    assert t["tq"][1] < 0.1                    # off to the side: beyond nearly every member


def test_part_ece_per_belief_and_run(small):
    *_, parts = small
    ece = rc.part_ece({("cluster4", 0): [parts]})
    assert set(ece) == {"logistic+knn", "logistic+knn+topics20", "logistic", "knn", "knn200", "topics20"}
    assert all(0 <= v["cluster4/s0"] <= 1 for v in ece.values())


def test_task_oracle_is_each_topics_best():
    Y = np.array([[1, 0], [1, 0], [0, 1], [0, 1.0]])
    assert rc.task_oracle(Y, np.array([0, 0, 1, 1])).tolist() == [0, 0, 1, 1]
    assert rc.task_oracle(Y, np.zeros(4, int)).tolist() == [0, 0, 0, 0]


def test_calibration_candidates_weights_shrink_and_z(small):
    _, specs, _, parts = small
    cols = np.arange(len(specs))
    eq = rc.belief(parts, ("logistic", "knn")).p_success
    # weights 1:0 is the logistic part alone; shrink 0 puts the kNN part at the model's base rate
    assert rc.belief(parts, ("logistic", "knn"), weights=(1.0, 0.0)).p_success == pytest.approx(
        rc.belief(parts, ("logistic",)).p_success, abs=1e-9)
    flat = rc.belief(parts, ("knn",), knn_shrink=0.0).p_success
    assert np.allclose(flat, flat[0], atol=0.05)          # base rate (then held to evidence): one value per model
    assert not np.allclose(rc.belief(parts, ("logistic", "knn"), weights=(3.0, 1.0)).p_success, eq)
    # z = 0 on far queries is the plain utility choice; a huge z never leaves the default there
    plain = rc.candidate_picks(parts, rc.Candidate(("logistic", "knn")), cols, [0.0])[0]
    z0 = rc.candidate_picks(parts, rc.Candidate(("logistic", "knn"), 0.1, z=0.0), cols, [0.0])[0]
    assert (plain == z0).all()
    far = parts["sim"] < parts["far_below_0.1"]
    big = rc.candidate_picks(parts, rc.Candidate(("logistic", "knn"), 0.1, z=1e6), cols, [0.0])[0]
    from preroll.route import rules
    d = rules.default_model(parts["base_rate"], parts["mean_cost"], 0.0)
    assert (big[far] == d).all()


def test_calibration_rule():
    cands = {"default": rc.Candidate(("logistic", "knn"), 0.1),
             "a": rc.Candidate(("logistic", "knn"), 0.1, z=0.5),
             "b": rc.Candidate(("logistic", "knn"), 0.1, weights=(2.0, 1.0), z=0.5)}

    def summ(**kw):
        return [{"name": n, "baseline": False, "worst": w, "median_ctm_nine": c} for n, (w, c) in kw.items()]

    # cheaper by 3 points and not worse by more than a quarter point: replaces; both qualify and tie -> simpler
    assert rc.choose_calib(summ(default=(-0.05, 0.40), a=(-0.052, 0.36), b=(-0.051, 0.34)), cands) == "a"
    # the worst case drops by more than a quarter point: stays
    assert rc.choose_calib(summ(default=(-0.05, 0.40), a=(-0.0526, 0.30), b=(-0.06, 0.2)), cands) == "default"
    # cheaper by less than 3 points: stays; a "never" median never qualifies
    assert rc.choose_calib(summ(default=(-0.05, 0.40), a=(-0.05, 0.38), b=(-0.05, np.inf)), cands) == "default"
    assert rc.choose_calib(summ(default=(-0.05, np.inf), a=(-0.05, np.inf), b=(-0.04, 0.9)), cands) == "b"


def test_knn_recalibration_is_leave_one_out(small):
    from preroll.heads.knn import KNNBetaHead, unit_rows

    rng = np.random.default_rng(0)
    H = unit_rows(rng.normal(size=(120, 8)))
    S = rng.integers(0, 2, size=(120, 2)).astype(float)
    A = np.ones_like(S)
    knns = [KNNBetaHead(k=10).fit(H, S[:, j], A[:, j]) for j in range(2)]
    out = rc.knn_recalibration(H, S, A, knns)
    assert out["knn_shrink_fit"].shape == (2,) and np.isin(out["knn_shrink_fit"], rc.SHRINK_GRID).all()
    # outcomes that are pure noise leave nothing to keep, so the fitted factor is small -- unless a prompt's
    # own outcome leaked into its rate (k = 10 with itself among them: the rate tracks the outcome, factor > 1)
    assert (out["knn_shrink_fit"] <= 0.5).all()
    _, _, _, parts = small
    assert {"knn_shrink_fit", "knn_platt", "knn_k"} <= set(parts)
    cand = rc.CALIB_LOO_CANDIDATES["ensemble knn-loo-shrink+guard0.1"]
    p = rc.belief(parts, cand.parts).p_success
    assert p.shape == parts["Y"].shape and np.all((p > 0) & (p < 1))
