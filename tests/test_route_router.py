"""The Router: fitting, rules, fallbacks, costs, frontier and every error path."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HashingEncoder

from preroll.data import Outcome, RecordError
from preroll.encoders.base import Encoder
from preroll.route import (MissingHistoryError, ModelSpec, NotFittedError, RouteConfigError, RouteError, Router,
                           RouterConfig, UnknownModelError, estimate_tokens, rules)


class CountingEncoder(Encoder):
    """Two features: is the prompt 'hard', and a constant. Counts its calls."""

    name = "test-counting"

    def __init__(self):
        self.calls = []

    def encode(self, texts, *, show_progress=False):
        self.calls.append(list(texts))
        return np.array([[1.0 if "hard" in t else 0.0, 1.0] for t in texts], dtype=np.float32)


def _history(n=60):
    """Weak solves easy prompts only; mid solves easy and most hard ones; strong solves all."""
    easy = [f"easy question {i}" for i in range(n)]
    hard = [f"hard question {i}" for i in range(n)]
    h = {"weak": [], "mid": [], "strong": []}
    for i, p in enumerate(easy):
        h["weak"].append(Outcome(prompt=p, successes=1.0, attempts=1.0))
        h["mid"].append(Outcome(prompt=p, successes=1.0, attempts=1.0))
        h["strong"].append(Outcome(prompt=p, successes=1.0, attempts=1.0))
    for i, p in enumerate(hard):
        h["weak"].append(Outcome(prompt=p, successes=float(i % 10 == 0), attempts=1.0))
        h["mid"].append(Outcome(prompt=p, successes=7.0, attempts=10.0))  # graded outcome
        h["strong"].append(Outcome(prompt=p, successes=float(i % 10 != 0), attempts=1.0))
    return h


SPECS = [ModelSpec(name="weak", cost_per_call=1.0), ModelSpec(name="mid", cost_per_call=3.0),
         ModelSpec(name="strong", cost_per_call=10.0)]


@pytest.fixture(scope="module")
def router():
    return Router(models=SPECS, encoder=CountingEncoder(), rule="utility", lam=0.01).fit(_history())


def test_predictions_follow_histories(router):
    P = router.predict_proba(["easy new one", "hard new one"])
    assert P.shape == (2, 3)
    assert P[0, 0] > 0.8 and P[1, 0] < 0.3          # weak: good on easy, bad on hard
    assert P[1, 1] == pytest.approx(0.7, abs=0.1)    # mid: 7/10 on hard, learnt from graded outcomes
    assert P[1, 2] > 0.8


def test_each_prompt_is_encoded_once_for_all_models(router):
    enc = router.encoder_
    enc.calls.clear()
    router.route(["easy a", "hard b", "hard c"])
    assert enc.calls == [["easy a", "hard b", "hard c"]]


def test_utility_rule_trades_success_for_cost(router):
    easy, hard = router.route(["easy x", "hard y"])
    assert easy.model == "weak"
    assert hard.model == "strong"
    assert hard.expected_cost == 10.0 and easy.expected_cost == 1.0
    assert set(hard.p_success) == {"weak", "mid", "strong"}
    # a high price on quality-per-cost sends everything to the cheapest
    assert [d.model for d in router.route(["easy x", "hard y"], lam=10.0)] == ["weak", "weak"]
    # lam 0: the most likely model, whatever it costs
    assert router.route(["hard y"], lam=0.0)[0].model == "strong"


def test_fallback_is_the_rest_of_the_ranking(router):
    [d] = router.route(["hard y"], lam=0.01)
    assert d.ranking == ["strong", "mid", "weak"]
    assert d.fallback == ["mid", "weak"]


def test_threshold_rule_picks_the_cheapest_that_clears(router):
    easy, hard = router.route(["easy x", "hard y"], rule="threshold", threshold=0.6)
    assert easy.model == "weak"
    assert hard.model == "mid"        # mid (~0.7) clears 0.6 and is cheaper than strong
    assert hard.fallback == ["strong", "weak"]
    [d] = router.route(["hard y"], rule="threshold", threshold=0.8)
    assert d.model == "strong"
    # nothing clears: the most likely model rather than nothing
    [d] = router.route(["hard y"], rule="threshold", threshold=1.0)
    assert d.model == "strong"


def test_exclude_removes_models_from_choice_and_fallback(router):
    [d] = router.route(["hard y"], exclude=["strong"])
    assert d.model == "mid" and d.fallback == ["weak"]
    with pytest.raises(UnknownModelError, match="'gpt-5'.*exclude"):
        router.route(["hard y"], exclude=["gpt-5"])
    with pytest.raises(RouteError, match="every model is excluded"):
        router.route(["hard y"], exclude=["weak", "mid", "strong"])


def test_gain_rule_is_for_two_models(router):
    with pytest.raises(RouteError, match="exactly two"):
        router.route(["hard y"], rule="gain", threshold=0.1)
    [d] = router.route(["hard y"], rule="gain", threshold=0.1, exclude=["mid"])
    assert d.model == "strong"
    [d] = router.route(["easy y"], rule="gain", threshold=0.1, exclude=["mid"])
    assert d.model == "weak"


def test_rank_rules_directly():
    P = np.array([[0.9, 0.95, 0.99], [0.2, 0.5, 0.9]])
    C = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(rules.rank_threshold(P, C, 0.85), [[0, 1, 2], [2, 1, 0]])
    np.testing.assert_array_equal(rules.rank_utility(P, C, 0.0), [[2, 1, 0], [2, 1, 0]])
    np.testing.assert_array_equal(rules.rank_utility(P, C, 1.0)[:, 0], [0, 0])
    # equal utility: the cheaper model first
    np.testing.assert_array_equal(rules.rank_utility(np.array([[0.5, 0.6]]), np.array([[1.0, 1.1]]), 1.0)[0], [0, 1])
    np.testing.assert_array_equal(rules.rank_gain(P[:, :2], C[:, :2], 0.1), [[0, 1], [1, 0]])


def test_frontier_spans_cheapest_to_best(router):
    prompts = [f"easy z{i}" for i in range(10)] + [f"hard z{i}" for i in range(10)]
    labels = np.array([[1, 1, 1]] * 10 + [[0, 1, 1]] * 10, dtype=float)
    pts = router.frontier(prompts, labels, rule="utility")
    assert pts[0].param == 0.0
    costs = [p.cost for p in pts]
    assert costs[-1] == pytest.approx(1.0)            # huge lam: only the cheapest
    assert pts[-1].quality == pytest.approx(0.5)
    assert max(p.quality for p in pts) == pytest.approx(1.0)
    assert all(abs(sum(p.share.values()) - 1) < 1e-9 for p in pts)
    with pytest.raises(RouteError, match="shape"):
        router.frontier(prompts, labels[:, :2])


def test_token_priced_models():
    spec = ModelSpec(name="t", cost_per_1k_tokens=2.0, output_tokens=100)
    assert spec.cost(400) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="per token"):
        spec.cost()
    assert estimate_tokens("abcd" * 10) == 10
    assert estimate_tokens("a") == 1
    r = Router(models=[ModelSpec(name="a", cost_per_call=0.5), spec], encoder=CountingEncoder())
    assert r.cost("t", prompt="x" * 400) == pytest.approx(2.0 * (100 + 100) / 1000)
    C = r.costs(["x" * 400, "y"], n_tokens=[900, 0])
    np.testing.assert_allclose(C, [[0.5, 2.0], [0.5, 0.2]])
    with pytest.raises(UnknownModelError, match="'nope'"):
        r.cost("nope")


def test_model_spec_validation():
    with pytest.raises(ValueError, match="exactly one"):
        ModelSpec(name="a")
    with pytest.raises(ValueError, match="exactly one"):
        ModelSpec(name="a", cost_per_call=1.0, cost_per_1k_tokens=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        ModelSpec(name="a", cost_per_call=-1.0)
    with pytest.raises(ValueError, match="empty"):
        ModelSpec(name=" ", cost_per_call=1.0)


def test_fit_errors_name_the_model():
    h = _history(5)
    r = Router(models=SPECS, encoder=CountingEncoder())
    with pytest.raises(MissingHistoryError, match="'mid'"):
        r.fit({"weak": h["weak"], "strong": h["strong"]})
    with pytest.raises(MissingHistoryError, match="'mid'.*empty"):
        r.fit({**h, "mid": []})
    with pytest.raises(UnknownModelError, match="'gpt-9'"):
        r.fit({**h, "gpt-9": h["weak"]})
    with pytest.raises(RecordError, match="history\\['weak'\\].*line 2.*successes"):
        r.fit({**h, "weak": [{"prompt": "a", "success_rate": 1.0}, {"prompt": "b", "successes": 3, "attempts": 2}]})
    with pytest.raises(NotFittedError):
        Router(models=SPECS, encoder=CountingEncoder()).route(["x"])


def test_bad_parameters_are_refused_at_fit_or_call(router):
    with pytest.raises(RouteConfigError, match="rule"):
        Router(models=SPECS, encoder=CountingEncoder(), rule="cheapest").fit(_history(3))
    with pytest.raises(RouteConfigError, match="lam"):
        Router(models=SPECS, encoder=CountingEncoder(), lam=-1).fit(_history(3))
    with pytest.raises(RouteConfigError, match="duplicate"):
        Router(models=SPECS + [SPECS[0]], encoder=CountingEncoder()).fit(_history(3))
    with pytest.raises(RouteConfigError, match="models.0.*exactly one"):
        Router(models=[{"name": "weak"}], encoder=CountingEncoder()).fit(_history(3))
    with pytest.raises(RouteConfigError, match="threshold"):
        router.route(["x"], rule="threshold", threshold=float("nan"))
    with pytest.raises(RouteError, match="prompt 1 is empty"):
        router.route(["x", "  "])


def test_config_file_errors_name_file_and_field(tmp_path):
    good = tmp_path / "router.yaml"
    good.write_text("models:\n  - {name: weak, cost_per_call: 1}\n  - {name: strong, cost_per_1k_tokens: 0.5}\n"
                    "rule: threshold\nthreshold: 0.7\n")
    r = Router.from_config(good)
    assert [s.name for s in r.models] == ["weak", "strong"] and r.rule == "threshold"
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  - {name: weak, cost_per_call: 1}\n  - {name: strong}\n")
    with pytest.raises(RouteConfigError, match="bad.yaml.*models.1.*exactly one"):
        RouterConfig.load(bad)
    typo = tmp_path / "typo.json"
    typo.write_text('{"models": [{"name": "a", "cost_per_call": 1}], "lambda": 2}')
    with pytest.raises(RouteConfigError, match="typo.json.*'lambda'.*unknown field"):
        RouterConfig.load(typo)
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [\n")
    with pytest.raises(RouteConfigError, match="broken.yaml.*malformed YAML"):
        RouterConfig.load(broken)
    with pytest.raises(RouteConfigError, match="file not found"):
        RouterConfig.load(tmp_path / "missing.yaml")


def test_library_and_server_router_options_share_one_set_of_checks():
    from preroll.serve.config import RouterSettings

    models = [{"name": "a", "cost_per_call": 1}]
    for bad in ({"lam": -0.5}, {"lam": float("inf")}, {"confidence": -1}, {"margin": float("nan")}):
        with pytest.raises(RouteConfigError):
            RouterConfig.load({"models": models, **bad})
        with pytest.raises(ValueError):
            RouterSettings.model_validate(bad)
    served = RouterSettings.model_validate({"rule": "confident", "confidence": 2.0, "margin": 0.05})
    router = Router(models=models, **served.router_kwargs())
    assert (router.rule, router.confidence, router.margin) == ("confident", 2.0, 0.05)


def test_router_on_real_mmlu_beats_random():
    """A few hundred real prompts from subjects where the gap differs: routing must find it.

    One half/half split of ~850 prompts swings APGR by +-0.15 (0.51-0.86 over four seeds), so a single
    split at a bar of 0.6 passed or failed with the split, not with the router; the mean of three splits
    (random routing: 0.5 in expectation) is what is asserted.
    """
    from preroll.bench.mmlu import load_mmlu
    from preroll.bench import route_metrics as metrics

    # GPT-4 gains a lot on formal logic and abstract algebra, little on the others.
    subjects = ["formal_logic", "abstract_algebra", "marketing", "high_school_government_and_politics",
                "sociology"]
    data = load_mmlu(subjects=subjects)
    specs = [ModelSpec(name=m, cost_per_call=c) for m, c in zip(data.models, (1.0, 10.0))]
    scores = []
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(len(data))
        hist, ev = perm[: len(data) // 2], perm[len(data) // 2:]
        r = Router(models=specs, encoder=HashingEncoder(512), rule="gain").fit(data.subset(hist).histories())
        ev_data = data.subset(ev)
        P = r.predict_proba(ev_data.prompts)
        w, s = ev_data.correct[:, 0], ev_data.correct[:, 1]
        scores.append(metrics.apgr(metrics.routing_curve(P[:, 1] - P[:, 0], w, s)))
    assert np.mean(scores) > 0.6, scores


@pytest.mark.slow
def test_default_encoder_end_to_end(tmp_path):
    from preroll.bench.mmlu import load_mmlu

    data = load_mmlu(subjects=["abstract_algebra", "marketing"]).subset(np.arange(0, 300, 5))
    specs = [ModelSpec(name=m, cost_per_call=c) for m, c in zip(data.models, (1.0, 10.0))]
    r = Router(models=specs, rule="utility", lam=0.001, cache_dir=tmp_path).fit(data.histories())
    decisions = r.route(["Let G be a group of order 15. Is G cyclic?\nA. Yes\nB. No\nAnswer:"])
    assert decisions[0].model in data.models
    assert 0.0 <= min(decisions[0].p_success.values()) <= max(decisions[0].p_success.values()) <= 1.0
    assert r.predict_proba(data.prompts[:4]).shape == (4, 2)


def test_concatenated_views_keep_unit_norm_and_a_joined_name():
    from preroll.encoders import ConcatEncoder, get_encoder

    enc = ConcatEncoder([CountingEncoder(), HashingEncoder(512)])
    X = enc.encode(["hard one", "easy two"])
    assert X.shape == (2, 2 + 512)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    assert enc.name == "test-counting+test-hashing-512"
    assert isinstance(get_encoder("lexical+lexical"), ConcatEncoder)
    with pytest.raises(RouteConfigError, match="encoder"):
        Router(models=SPECS, encoder=3.5).fit(_history(3))


def test_one_standard_error_rule_prefers_the_smoother_tied_candidate():
    from preroll.heads.selection import one_se_choice as _one_se_choice

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, 400)
    loss = np.stack([1.0 + noise, 0.99 + noise + rng.normal(0, 0.01, 400), 1.5 + noise])
    # candidate 1 is best; 0 is within one standard error; 2 is far worse
    assert _one_se_choice(loss, most_regular_last=False) == 0
    assert _one_se_choice(loss, most_regular_last=True) == 1


def test_heads_learn_graded_outcomes():
    from preroll.heads import EnsembleHead, LogisticHead
    from preroll.heads import KNNBetaHead as KNNHead

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    rate = 1 / (1 + np.exp(-2 * X[:, 0]))
    att = np.full(300, 10.0)
    succ = rng.binomial(10, rate).astype(float)
    for head in (LogisticHead(), KNNHead(), EnsembleHead()):
        p = head.fit(X, succ, att).predict(X).p_success
        assert np.corrcoef(p, rate)[0, 1] > 0.8, type(head).__name__
        assert np.all((p >= 0) & (p <= 1))
    assert KNNHead().fit(X, succ, att).k_ in KNNHead().ks


def test_nearest_rows_match_a_full_sort():
    from preroll.heads.knn import nearest as _nearest, unit_rows as _unit_rows

    rng = np.random.default_rng(1)
    H = _unit_rows(rng.normal(size=(500, 16)))
    Q = _unit_rows(rng.normal(size=(30, 16)))
    idx = _nearest(Q, H, 25, chunk=7)
    expected = np.argsort(-(Q @ H.T), axis=1)[:, :25]
    np.testing.assert_array_equal(idx, expected)
    assert _nearest(Q, H, 900).shape == (30, 500)
