"""The one-pass decision path gives the per-head path's numbers and decisions, on real prompts.

The router's default heads (logistic + kNN per model) and its out-of-depth guard each search the
history; the router now computes the query's similarities to it once and hands each head its model's
columns (``Router._head_beliefs``), and the lexical view multiplies its TF-IDF blocks one by one. These
tests pin that nothing a caller sees changed: beliefs, far flags, decisions, fallbacks and exploration.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from preroll.bench.llmrouter import load_llmrouter
from preroll.route import ExploreSettings, Router
from preroll.route import router as router_module

N_HISTORY, N_QUERIES = 360, 60


@pytest.fixture(scope="module")
def data(llmrouter):
    return load_llmrouter(llmrouter)


def _rows(data) -> np.ndarray:
    """History rows then query rows, drawn across the whole file (it is ordered by task)."""
    return np.random.default_rng(0).permutation(len(data))[:N_HISTORY + N_QUERIES]


def _histories(data):
    hist = data.histories(_rows(data)[:N_HISTORY])
    first = data.models[0]
    hist[first] = hist[first][40:]  # one model has seen fewer prompts: its head's rows are a subset
    return hist


def _fit(data, **kw) -> Router:
    return Router(models=data.model_specs(256), encoder="lexical+stats", cache_dir=False, lam=0.0,
                  **kw).fit(_histories(data))


def _per_head(router: Router) -> Router:
    """The same fitted router on the path without the shared search (as fitted before it existed)."""
    old = copy.copy(router)
    old.head_rows_ = None
    return old


def _queries(data) -> list[str]:
    return [data.prompts[i] for i in _rows(data)[N_HISTORY:]]


def _same_decisions(a, b):
    assert [(d.model, d.fallback, d.explored) for d in a] == [(d.model, d.fallback, d.explored) for d in b]
    for x, y in zip(a, b):
        assert x.p_success == pytest.approx(y.p_success, rel=1e-6, abs=1e-9)
        assert x.expected_cost == y.expected_cost


# A guard at the median: a fair share of the queries is far, so both of its branches are compared.
@pytest.mark.parametrize("guard", [{"far_quantile": 0.5}, False])
def test_one_search_gives_the_per_head_beliefs_and_decisions(data, guard, monkeypatch):
    router = _fit(data, guard=guard)
    assert router.head_rows_[0] is not None and len(router.head_rows_[0]) == N_HISTORY - 40
    assert all(r is None for r in router.head_rows_[1:])
    old = _per_head(router)
    prompts = _queries(data)
    X = router.embed(prompts)
    new_b, old_b = router.predict_beta_embeddings(X), old.predict_beta_embeddings(X)
    np.testing.assert_allclose(new_b.alpha, old_b.alpha, rtol=1e-6)
    np.testing.assert_allclose(new_b.beta, old_b.beta, rtol=1e-6)
    far = router._belief_and_far(X, far=True)[1]
    np.testing.assert_array_equal(far, old.far_from_history(X))
    if guard:
        assert far.any() and not far.all()  # both branches of the guard are exercised
    else:
        assert not far.any()
    for lam in (0.0, 0.02):
        _same_decisions(router.route(prompts, lam=lam), old.route(prompts, lam=lam))
        _same_decisions([router.route([p], lam=lam)[0] for p in prompts[:15]],
                        [old.route([p], lam=lam)[0] for p in prompts[:15]])
        _same_decisions(router.route_embeddings(X, prompts, lam=lam), old.route_embeddings(X, prompts, lam=lam))
    # Several query blocks (a batch larger than one block) are joined in order.
    monkeypatch.setattr(router_module, "_QUERY_CHUNK", 7)
    _same_decisions(router.route(prompts), old.route(prompts))


def test_exploration_draws_the_same_decisions(data):
    # No refit: the per-head router stays on its path. The history is labels, so near it a router explores
    # only with explore_near_labels; on, so that the draws this test compares are made.
    settings = ExploreSettings(first_refit=10 ** 9, explore_near_labels=True)
    # head named: "auto" is the joint model when exploring, which has no per-model heads to share a search
    router = _fit(data, explore=settings, head="ensemble")
    old = _fit(data, explore=settings, head="ensemble")  # same fit, same random stream
    assert router.head_rows_ is not None
    old.head_rows_ = None
    prompts = _queries(data)
    new_d, old_d = [], []
    for i, p in enumerate(prompts[:40]):
        new_d += router.route([p])
        old_d += old.route([p])
        y = float(np.nan_to_num(data.scores[_rows(data)[N_HISTORY + i], data.models.index(new_d[-1].model)]))
        router.observe([p], [new_d[-1].model], [y])
        old.observe([p], [old_d[-1].model], [y])
    _same_decisions(new_d, old_d)
    timing = {"observe_ms_mean", "refit_s"}
    assert {k: v for k, v in router.explore_stats().items() if k not in timing} == \
        {k: v for k, v in old.explore_stats().items() if k not in timing}
    assert router.explore_stats()["explored"] > 0


def test_knn_head_takes_a_precomputed_similarity():
    from preroll.heads import EnsembleHead
    from preroll.heads.knn import KNNBetaHead, unit_rows

    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 8))
    succ = rng.binomial(4, 1 / (1 + np.exp(-X[:, 0]))).astype(float)
    att = np.full(200, 4.0)
    Q = rng.normal(size=(9, 8))
    for head in (KNNBetaHead(k=15).fit(X, succ, att), EnsembleHead().fit(X, succ, att)):
        S = unit_rows(Q) @ unit_rows(X).T
        plain, given = head.predict(Q), head.predict(Q, similarity=S, check_input=False)
        np.testing.assert_allclose(given.alpha, plain.alpha, rtol=1e-6)
        np.testing.assert_allclose(given.beta, plain.beta, rtol=1e-6)
    with pytest.raises(ValueError, match="similarity has shape"):
        KNNBetaHead(k=15).fit(X, succ, att).predict(Q, similarity=S[:, :-1])


def test_lexical_encoding_is_the_unions_to_the_bit_on_real_prompts(data):
    """One prompt at a time (long ones, Chinese ones) and in a batch, the lexical view gives exactly the
    vectors of the FeatureUnion path it replaced. Exactly, not approximately: a change of 5e-7 in these
    features moved the heads' fitted Beta spreads (the beta-binomial concentration of one-attempt outcomes is
    not identified, so its optimum is set by rounding), and with them exploration's draws."""
    from sklearn.preprocessing import normalize

    from preroll.encoders import LexicalEncoder

    encoder = LexicalEncoder(n_components=32).fit([data.prompts[i] for i in _rows(data)[:N_HISTORY]])
    prompts = _queries(data)

    def union(texts):
        return normalize(np.asarray(encoder.tfidf_.transform(texts).astype(np.float32) @ encoder.projection_))

    one_by_one = np.vstack([encoder.encode([p]) for p in prompts])
    np.testing.assert_array_equal(one_by_one, np.vstack([union([p]) for p in prompts]))
    np.testing.assert_array_equal(encoder.encode(prompts), union(prompts))
    assert one_by_one.dtype == np.float32
