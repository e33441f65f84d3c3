"""The book at scale: the approximate neighbour graph's recall, sums over seen prompts only, the hashing view."""

from __future__ import annotations

import json

import numpy as np
import pytest

from preroll.online import OnlineSettings, PromptBook
from preroll.online.neighbours import (
    graph_recall,
    neighbour_graph,
    neighbour_sums,
    reverse_weights,
)


@pytest.fixture(scope="module")
def dapo_2k(dapo):
    """2,000 prompts: the real DAPO-Math texts, the ones past 2,722 none (a plain slice of the real data)."""
    texts = list(json.loads((dapo / "prompts.json").read_text(encoding="utf-8")).values())[:2000]
    from preroll.encoders import HashingEncoder

    emb = HashingEncoder(dim=64).fit(texts).encode(texts)
    return texts, emb


def test_approximate_graph_recall_on_2k_real_prompts(dapo_2k):
    pytest.importorskip("faiss")
    _, emb = dapo_2k
    exact_idx, _ = neighbour_graph(emb, 16, method="exact")
    approx_idx, approx_sim = neighbour_graph(emb, 16, method="approximate")
    assert approx_idx.shape == exact_idx.shape == (2000, 16)
    # Never its own neighbour (a padded slot would be itself at weight 0).
    own = approx_idx == np.arange(2000)[:, None]
    assert (approx_sim[own] == 0).all()
    assert graph_recall(emb, exact_idx, sample=300) == pytest.approx(1.0)
    recall = graph_recall(emb, approx_idx, sample=300)
    assert 0.7 <= recall < 1.0 + 1e-9
    # Found neighbours' similarities are the true cosines, nearest first.
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    row = 5
    ok = approx_idx[row] != row
    np.testing.assert_allclose(approx_sim[row][ok], x[approx_idx[row][ok]] @ x[row], atol=1e-4)
    assert (np.diff(approx_sim[row][ok]) <= 1e-6).all()


def test_sums_over_seen_prompts_match_the_dense_gather(dapo_2k):
    _, emb = dapo_2k
    idx, sim = neighbour_graph(emb, 16, method="exact")
    rng = np.random.default_rng(0)
    seen = np.sort(rng.choice(2000, 300, replace=False))
    rate, weight = rng.random(300), rng.random(300) * 8
    full_rate, full_weight = np.zeros(2000), np.zeros(2000)
    full_rate[seen], full_weight[seen] = rate, weight
    dense = neighbour_sums(idx, sim, full_rate, full_weight, power=4.0)
    sparse = neighbour_sums(idx, sim, rate, weight, power=4.0, reverse=reverse_weights(idx, sim, 4.0), seen=seen)
    np.testing.assert_allclose(sparse[0], dense[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sparse[1], dense[1], rtol=1e-5, atol=1e-6)


def test_auto_encoder_is_the_hashing_view_above_the_threshold(monkeypatch, dapo_2k):
    from preroll.online import book as book_module

    texts, _ = dapo_2k
    assert book_module.encoder_spec("auto", 2000) == "lexical"
    monkeypatch.setattr(book_module, "LARGE_DATASET", 1000)
    assert book_module.encoder_spec("auto", 2000) == "hashing"
    emb = book_module.embed_prompts(texts[:1500], "auto")
    assert emb.shape == (1500, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Streamed in chunks: the same vectors as one call.
    monkeypatch.setattr(book_module, "EMBED_CHUNK", 400)
    np.testing.assert_allclose(book_module.embed_prompts(texts[:1500], "hashing"), emb, atol=1e-6)


def test_book_on_an_approximate_graph_learns_from_neighbours(dapo_2k):
    pytest.importorskip("faiss")
    texts, emb = dapo_2k
    from preroll.online import neighbours

    # reward_range declared: with a learnt scale, a run that has only seen 1.0 knows no success from failure yet.
    book = PromptBook(texts, settings=OnlineSettings(neighbours=8, fit_drift=False, reward_range=(0.0, 1.0)),
                      embeddings=emb)
    book._graph = neighbours.neighbour_graph(emb, 8, method="approximate")
    idx = book._graph[0]
    # A prompt's neighbours all succeed: its prior rises above an unrelated prompt's.
    target = 7
    nbrs = [int(j) for j in idx[target] if j != target]
    book.record(0, nbrs, [[1.0] * 8] * len(nbrs))
    far = int(np.argmin(emb @ emb[target]))
    assert book.predict([target]).p_success[0] > book.predict([far]).p_success[0]
