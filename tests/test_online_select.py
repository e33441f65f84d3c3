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
    assert set(sel.reason) <= {"exploit", "explore", "revisit", "fallback"}


# -- selection="coverage" ---------------------------------------------------------------------------------


def _cover_book(selection="coverage", seed=0, **kw):
    """60 prompts seen three times: 20 always solved, 20 never, 20 at 4/8 (the learnable ones, 40..59)."""
    settings = OnlineSettings(encoder="none", explore=0.0, revisit=0.0, selection=selection, seed=seed, **kw)
    book = PromptBook(_texts(60), settings=settings)
    for step in range(3):
        book.record(step, range(60), [_group(8)] * 20 + [_group(0)] * 20 + [_group(4)] * 20)
    return book


def _coverage_pass(book, steps=4, n=5, first_step=3):
    """``steps`` selections from the whole dataset, each chosen prompt coming back informative (3/8)."""
    chosen = []
    for t in range(steps):
        sel = book.select(range(60), n)
        chosen.append(sel)
        book.record(first_step + t, sel.indices, [_group(3)] * n)
    return chosen


def test_coverage_chooses_every_eligible_prompt_once_per_pass_and_skips_dead_ones():
    picks = np.concatenate([s.indices for s in _coverage_pass(_cover_book())])
    # 4 steps x 5 slots = the 20 learnable prompts, each exactly once: least recently trained first
    assert sorted(picks.tolist()) == list(range(40, 60))
    # "value" keeps choosing the prompts it has just seen informative again (more evidence of p near 0.5)
    value = np.concatenate([s.indices for s in _coverage_pass(_cover_book("value"))])
    assert set(value.tolist()) <= set(range(40, 60))
    assert len(set(value.tolist())) < 20


def test_coverage_fills_from_below_the_bar_when_too_few_clear_it():
    book = _cover_book()
    pool = [0, 1, 2, 20, 21, 40, 41]          # two learnable prompts, the rest dead (always or never solved)
    sel = book.select(pool, 4)
    reason = dict(zip(sel.indices.tolist(), sel.reason.tolist()))
    assert {i for i, r in reason.items() if r == "exploit"} == {40, 41}
    fallback = [i for i, r in reason.items() if r == "fallback"]
    assert len(fallback) == 2
    # the fallback slots go to the highest expected informativeness below the bar
    from preroll.online.policy import expected_informative

    value = dict(zip(pool, expected_informative(book.predict(pool), 8)))
    below = sorted((i for i in pool if i not in (40, 41)), key=lambda i: -value[i])
    assert sorted(fallback) == sorted(below[:2])
    assert book.stats().selections["fallback"] == 2


def test_coverage_is_reproducible_with_a_seed_and_random_among_equals():
    def first_choices(seed):
        book = PromptBook(_texts(50), settings=OnlineSettings(encoder="none", selection="coverage", seed=seed))
        return [book.select(range(50), 5).indices.tolist() for _ in range(3)]

    assert first_choices(4) == first_choices(4)
    # a fresh book: every prompt is equally eligible and equally stale, so the seed decides
    assert first_choices(4) != first_choices(5)


def test_coverage_resumes_with_the_same_next_choices(tmp_path):
    book = _cover_book(seed=3)
    _coverage_pass(book, steps=2)
    path = book.save(tmp_path / "book.npz")
    again = PromptBook.load(path, _texts(60))
    a = [s.indices.tolist() for s in _coverage_pass(book, steps=3, first_step=5)]
    b = [s.indices.tolist() for s in _coverage_pass(again, steps=3, first_step=5)]
    assert a == b


def test_coverage_bar_is_validated():
    from preroll.online import OnlineInputError

    with pytest.raises(OnlineInputError, match="coverage_bar"):
        PromptBook(_texts(3), settings={"coverage_bar": 1.5})
    with pytest.raises(OnlineInputError, match="selection"):
        PromptBook(_texts(3), settings={"selection": "best"})
