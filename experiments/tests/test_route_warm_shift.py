"""The warm-start-under-shift replay: its worlds hold new topics out of the labels, its variants do what they say."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import route_warm_shift as ws


@pytest.fixture(scope="module")
def data():
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.bench.route import random_subset

    return random_subset(load_llmrouter(None), 600, 0)


def test_the_two_new_topics_are_absent_from_the_labels(data):
    from preroll.bench import route_shift as rs

    world = ws.build_world(data.prompts, 3, history=200)
    labels_u = rs.text_clusters(rs.text_embeddings(data.prompts, "lexical"), 5, 3)
    at = {t: i for i, t in enumerate(dict.fromkeys(data.prompts))}
    topic = np.array([labels_u[at[p]] for p in data.prompts])
    assert not np.isin(topic[world.history], world.new_topics).any()
    parts = [world.history, world.stream, world.held]
    assert sum(len(p) for p in parts) == len(data) == len(np.unique(np.concatenate(parts)))
    traffic = np.concatenate([world.stream, world.held])
    assert world.new_share == pytest.approx(np.isin(topic[traffic], world.new_topics).mean())
    assert 0 < world.new_share < 1


def test_variants_replay_the_stream(data):
    world = ws.build_world(data.prompts, 3, history=200)
    small = ws.World(world.history[:120], world.stream[:96], world.held[:40], world.new_topics, world.new_share)
    offline = ws.run_variant(data, small, "offline", 3, encoder="lexical", last=48)
    greedy = ws.run_variant(data, small, "greedy", 3, encoder="lexical", last=48)
    everywhere = ws.run_variant(data, small, "explore-everywhere", 3, encoder="lexical", last=48)
    assert offline["explored_share"] is None and greedy["explored_share"] == 0.0
    assert everywhere["explored_share"] > 0
    for r in (offline, greedy, everywhere):
        assert r["stream"] == 96 and r["held"] == 40 and sum(r["picks_last"]) == 48
        assert all(np.isfinite(r[k]) and -100 <= r[k] <= 100 for k in ("all", "last", "frozen"))
    with pytest.raises(ValueError, match="unknown variant"):
        ws.run_variant(data, small, "nope", 3, encoder="lexical")


def test_points_are_of_utility_at_a_price_weight(data):
    """At a price weight where cost outweighs any score, the router and the best single model by utility are
    both the cheapest model: zero points; at ``lam = 0`` the same world is scored on quality alone."""
    world = ws.build_world(data.prompts, 3, history=200)
    small = ws.World(world.history[:120], world.stream[:96], world.held[:40], world.new_topics, world.new_share)
    dear = ws.run_variant(data, small, "offline", 3, encoder="lexical", last=48, lam=1e6)
    cheapest = min(range(len(data.models)), key=lambda j: data.prices[data.models[j]][0])
    assert dear["lam"] == 1e6 and dear["picks_last"][cheapest] == 48
    assert dear["all"] == pytest.approx(0.0, abs=1e-9) and dear["frozen"] == pytest.approx(0.0, abs=1e-9)
