"""The value model on a small real subset of DAPO-Math, with the fast lexical encoder."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import HashingEncoder
from sklearn.metrics import roc_auc_score

from preroll.data import load_v0
from preroll.data.paths import dapo_dir
from preroll.heads import EnsembleHead, GPHead, KNNBetaHead, LogisticHead, TabPFNUnavailable, make_head
from preroll.model.crossval import cross_val_predict
from preroll.model.value_model import ValueModel




@pytest.fixture(scope="module")
def qwen(dapo):
    recs = [r for r in load_v0(dapo_dir() / "context.jsonl") if r.policy == "Qwen3-4B-Instruct"]
    return recs[:160] + recs[512:672]  # two snapshots, step 16 and 64


@pytest.mark.parametrize("head", [LogisticHead(), KNNBetaHead(), GPHead(), EnsembleHead()])
def test_heads_learn_a_planted_signal(head):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5))
    p = 1 / (1 + np.exp(-2 * X[:, 0]))
    n = np.full(300, 8.0)
    s = rng.binomial(8, p).astype(float)
    pred = head.fit(X[:200], s[:200], n[:200]).predict(X[200:])
    assert roc_auc_score(p[200:] > 0.5, pred.p_success) > 0.8
    assert np.all(pred.alpha > 0) and np.all(pred.beta > 0) and np.all(pred.std > 0)


@pytest.mark.parametrize("head", [LogisticHead(), KNNBetaHead(), GPHead(), EnsembleHead()])
def test_groups_share_difficulty_and_keep_their_own_base_rate(head):
    """Two contexts, one difficulty direction, base rates far apart: each query gets its context's level."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 4))
    g = np.repeat([0, 1], 200)
    p = 1 / (1 + np.exp(-(2 * X[:, 0] + np.where(g == 1, 1.5, -1.5))))
    n = np.full(400, 10.0)
    s = rng.binomial(10, p).astype(float)
    head.fit(X, s, n, groups=g)
    Q = rng.normal(size=(200, 4))
    low, high = head.predict(Q, groups=np.zeros(200, int)), head.predict(Q, groups=np.ones(200, int))
    assert high.p_success.mean() - low.p_success.mean() > 0.25
    for pred in (low, high):  # the shared direction still ranks prompts within a context
        assert roc_auc_score(Q[:, 0] > 0, pred.p_success) > 0.8
    with pytest.raises(ValueError, match="group 2 was not in the fitted history"):
        head.predict(Q[:2], groups=np.array([0, 2]))
    with pytest.raises(ValueError, match="groups must be"):
        make_head(head).fit(X, s, n, groups=g[:-1])


def test_make_head_clones_instances_and_auto_is_the_recommended_head():
    from preroll.defaults import AUTO_HEAD, DEFAULT_HEAD

    custom = LogisticHead(Cs=(0.5,))
    copy = make_head(custom)
    assert copy is not custom and copy.Cs == (0.5,)
    # "auto" means one thing everywhere: the component's recommended head (the value model's default).
    assert AUTO_HEAD["value_model"] == DEFAULT_HEAD
    assert type(make_head("auto")) is type(make_head(DEFAULT_HEAD))
    assert isinstance(make_head("ensemble"), EnsembleHead)
    with pytest.raises(ValueError, match="head must be"):
        make_head(3)


def test_graded_outcomes_matter():
    """Same binarised labels, different grades: the logistic head must see the difference."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 3))
    n = np.full(200, 10.0)
    hi = np.where(X[:, 0] > 0, 10.0, 0.0)
    soft = np.where(X[:, 0] > 0, 6.0, 4.0)
    p_hi = LogisticHead().fit(X, hi, n).predict(X[:1] * 0 + [[2, 0, 0]]).p_success[0]
    p_soft = LogisticHead().fit(X, soft, n).predict(X[:1] * 0 + [[2, 0, 0]]).p_success[0]
    assert p_hi > 0.9 and 0.5 < p_soft < 0.75


def test_tabpfn_fails_clearly():
    with pytest.raises(TabPFNUnavailable, match="tabpfn"):
        make_head("tabpfn").fit(np.zeros((4, 2)), np.ones(4), np.ones(4) * 2)
    with pytest.raises(ValueError, match="unknown head"):
        make_head("nope")


def test_step_shift_and_direct_evidence(qwen):
    vm = ValueModel(encoder=HashingEncoder(64), head="logistic").fit(qwen)
    texts = [r.prompt for r in qwen[:40]]
    cold = vm.predict(["What is 2+2? completely new words zzz"] * 2, step=16).p_success
    later = vm.predict(["What is 2+2? completely new words zzz"] * 2, step=64).p_success
    # The policy improved from step 16 to 64 on this data; the snapshot offset must follow.
    m16 = np.mean([r.success_rate for r in qwen if r.step == 16])
    m64 = np.mean([r.success_rate for r in qwen if r.step == 64])
    assert np.sign(later[0] - cold[0]) == np.sign(m64 - m16)
    with_ev = vm.predict(texts, step=16)
    without = vm.predict(texts, step=16, use_direct_evidence=False)
    rates = np.array([r.success_rate for r in qwen[:40]])
    assert np.mean(np.abs(with_ev.p_success - rates)) < np.mean(np.abs(without.p_success - rates))
    assert np.all(with_ev.concentration > without.concentration)


def test_predict_errors(qwen):
    with pytest.raises(RuntimeError, match="not fitted"):
        ValueModel().predict(["x"])
    vm = ValueModel(encoder=HashingEncoder(64)).fit(qwen)
    with pytest.raises(ValueError, match="no history for policy"):
        vm.predict(["x"], policy="other")
    with pytest.raises(ValueError, match="empty history"):
        ValueModel().fit([])


def test_cross_val_is_prompt_disjoint_and_beats_chance(qwen):
    pred = cross_val_predict(qwen, n_splits=4, encoder=HashingEncoder(64), head="knn")
    assert len(pred) == len(qwen)
    y = np.array([r.success_rate >= 0.5 for r in qwen])
    # Cold prompts: no direct evidence, so the step-64 copy of a step-16 prompt cannot leak its outcome.
    assert 0.5 < roc_auc_score(y, pred.p_success) < 0.95


@pytest.mark.slow
def test_predict_cli_contract(tmp_path):
    recs = load_v0(dapo_dir() / "context.jsonl")[:120]
    ctx = tmp_path / "ctx.jsonl"
    ctx.write_text("\n".join(json.dumps({"prompt": r.prompt, "successes": r.successes, "attempts": r.attempts,
                                         "policy": r.policy, "step": r.step}) for r in recs))
    q = tmp_path / "q.jsonl"
    q.write_text('{"prompt": "Find x if 2x = 6.", "id": "a1", "extra": [1, 2]}\n{"prompt": "Compute 3+4.", "id": 2}\n')
    out = tmp_path / "pred.jsonl"
    res = subprocess.run([sys.executable, "-m", "preroll.cli.main", "predict", "--context", str(ctx),
                          "--prompts", str(q), "--out", str(out), "--encoder", "lexical"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a1", 2] and rows[0]["extra"] == [1, 2]
    assert all(0 <= r["p_success"] <= 1 and r["p_std"] > 0 for r in rows)


def test_predict_cli_reports_bad_context(tmp_path):
    ctx = tmp_path / "ctx.jsonl"
    ctx.write_text('{"prompt": "a", "success_rate": 0.5}\n{"prompt": "b", "success_rate": 2}\n')
    q = tmp_path / "q.jsonl"
    q.write_text('{"prompt": "a"}\n')
    res = subprocess.run([sys.executable, "-m", "preroll.cli.main", "predict", "--context", str(ctx),
                          "--prompts", str(q), "--out", str(tmp_path / "o.jsonl")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "line 2" in res.stderr and "success_rate" in res.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_auto_is_the_router_s_recommended_head_too():
    """``head="auto"`` resolves through the one table in preroll.defaults for the router as for the value model."""
    from preroll.defaults import AUTO_HEAD
    from preroll.route import ModelSpec, Router

    specs = [ModelSpec(name="a", cost_per_call=1.0), ModelSpec(name="b", cost_per_call=2.0)]
    hist = {m: [{"prompt": f"question {i} about topic {i % 3}", "success_rate": float((i + k) % 2)} for i in range(12)]
            for k, m in enumerate("ab")}
    queries = ["question 40 about topic 1", "something else"]
    default = Router(models=specs, encoder="lexical").fit(hist)
    named = Router(models=specs, encoder="lexical", head=AUTO_HEAD["router"]).fit(hist)
    assert (default.joint_ is None, default.heads_ is None) == (named.joint_ is None, named.heads_ is None)
    assert default.predict_proba(queries) == pytest.approx(named.predict_proba(queries))
