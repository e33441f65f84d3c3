"""Selection and allocation with exploration: dead prompts are revisited (less and less), unseen ones get chosen."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from preroll.online import OnlineSettings, PromptBook


def _texts(n):
    return [f"prompt {i}" for i in range(n)]


def _group(k, g=8):
    return [1.0] * k + [0.0] * (g - k)


def _revisit_rate(streak_target: int, trials: int = 400) -> float:
    """How often a prompt with ``streak_target`` dead groups in a row is picked from a pool of live ones."""
    book = PromptBook(_texts(41), settings=OnlineSettings(encoder="none", explore=0.0, seed=1))
    live = list(range(1, 41))
    step = 0
    for _ in range(streak_target):
        book.record(step, [0] + live, [_group(0)] + [_group(4)] * 40)
        step += 1
    picks = 0
    for _ in range(trials):
        sel = book.select([0] + live, 10)
        picks += int(0 in sel.indices)
        if 0 in sel.indices:
            assert sel.reason[list(sel.indices).index(0)] == "revisit"
    return picks / trials


def test_dead_prompt_is_revisited_with_decaying_probability():
    once, thrice = _revisit_rate(1), _revisit_rate(3)
    assert 0.1 < once < 0.3          # settings.revisit = 0.2
    assert 0.0 < thrice < once / 2   # revisit_decay = 0.5 per further dead group
    # and without exploration it would never be chosen
    book = PromptBook(_texts(41), settings=OnlineSettings(encoder="none", explore=0.0, revisit=0.0))
    book.record(0, range(41), [_group(0)] + [_group(4)] * 40)
    assert all(0 not in book.select(range(41), 10).indices for _ in range(50))


def test_revisit_outcomes_are_counted():
    book = PromptBook(_texts(41), settings=OnlineSettings(encoder="none", explore=0.0, revisit=1.0,
                                                          max_revisit_share=0.2))
    book.record(0, range(41), [_group(0)] + [_group(4)] * 40)
    sel = book.select(range(41), 10)
    assert "revisit" in set(sel.reason)
    book.record(1, sel.indices, [_group(3)] * len(sel))
    st_ = book.stats()
    assert st_.revisits_informative >= 1 and st_.revisits_pending == 0
    assert st_.selections["revisit"] >= 1


def test_exploration_in_a_small_batch_costs_the_declared_share():
    """B = 8 and 10% shares: revisits and Thompson slots average 0.8 and ~0.7 a step, not a whole slot each."""
    settings = OnlineSettings(encoder="none", revisit=1.0, max_revisit_share=0.1, explore=0.1, seed=3)
    book = PromptBook(_texts(64), settings=settings)
    book.record(0, range(64), [_group(0)] * 32 + [_group(4)] * 32)   # half dead: revisits are always wanted
    steps = 400
    for _ in range(steps):
        book.select(range(64), 8)
    picks = book.stats().selections
    assert abs(picks["revisit"] / steps - 0.8) < 0.1
    assert abs(picks["explore"] / steps - 0.1 * (8 - 0.8)) < 0.1


def test_unseen_prompts_get_chosen():
    book = PromptBook(_texts(200), settings=OnlineSettings(encoder="none", seed=0))
    rng = np.random.default_rng(0)
    seen = list(range(100))
    # known prompts at moderate difficulty, and a pool that mixes them with never-seen ones
    book.record(0, seen, [_group(int(k)) for k in rng.binomial(8, 0.25, 100)])
    chosen_unseen = 0
    for _ in range(20):
        pool = rng.choice(200, 80, replace=False)
        sel = book.select(pool, 20)
        chosen_unseen += int((sel.indices >= 100).sum())
    assert chosen_unseen > 20


def test_select_prefers_informative_prompts():
    book = PromptBook(_texts(60), settings=OnlineSettings(encoder="none", explore=0.0, revisit=0.0))
    book.record(0, range(60), [_group(8)] * 20 + [_group(0)] * 20 + [_group(4)] * 20)
    sel = book.select(range(60), 20)
    assert set(sel.indices) == set(range(40, 60))
    assert set(sel.reason) == {"exploit"}


def test_allocate_spends_the_budget_on_live_prompts():
    book = PromptBook(_texts(60), settings=OnlineSettings(encoder="none", revisit=0.0))
    book.record(0, range(60), [_group(8)] * 20 + [_group(0)] * 20 + [_group(4)] * 20)
    x = book.allocate(list(range(60)), 160, min_rollouts=4, max_rollouts=16)
    assert x.sum() == 160 and ((x == 0) | (x >= 4)).all()
    assert (x[40:] >= 4).all()                 # every live prompt gets a group
    assert (x[:40] > 0).sum() <= 20            # the dead ones share what is left (V_0 greedy: uncertain beats more of the same)


@hsettings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.integers(0, 8), min_size=1, max_size=30), st.integers(1, 20))
def test_beliefs_stay_valid_and_selection_is_distinct(seed, ks, n):
    rng = np.random.default_rng(seed)
    book = PromptBook(_texts(50), settings=OnlineSettings(encoder="none", seed=seed))
    idx = rng.choice(50, len(ks), replace=True)
    book.record(0, idx, [_group(k) for k in ks])
    book.record(3, idx[:1], [[0.25, 1.0]])
    b = book.predict()
    assert np.isfinite(b.alpha).all() and np.isfinite(b.beta).all()
    assert (b.alpha > 0).all() and (b.beta > 0).all()
    assert ((b.p_success > 0) & (b.p_success < 1)).all()
    pool = rng.choice(50, 25, replace=False)
    sel = book.select(pool, min(n, 25))
    assert len(sel.indices) == min(n, 25) == len(set(sel.indices.tolist()))
    assert set(sel.indices.tolist()) <= set(pool.tolist())
    assert sel.indices.dtype == np.int64
    assert set(sel.reason) <= {"exploit", "explore", "revisit"}
