"""The online prompt book: beliefs from own outcomes, neighbours and the global level; persistence; errors."""

from __future__ import annotations

import numpy as np
import pytest

from preroll.online import OnlineInputError, OnlineSettings, PromptBook


def _texts(n):
    return [f"problem number {i} about {'algebra' if i % 2 else 'geometry'} {i % 7}" for i in range(n)]


def _clustered(n_clusters=10, per=10, seed=0):
    """Embeddings in tight clusters: a prompt's neighbours are its cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, 16))
    emb = np.repeat(centres, per, axis=0) + 0.05 * rng.standard_normal((n_clusters * per, 16))
    return emb


def _group(k, g=8):
    return [1.0] * k + [0.0] * (g - k)


def test_own_outcomes_move_the_belief():
    book = PromptBook(_texts(20), settings=OnlineSettings(encoder="none"))
    book.record(0, list(range(10)), [_group(4)] * 10)   # sets the level near 0.5
    before = book.predict([3]).p_success[0]
    book.record(1, [3], [_group(8)])
    after = book.predict([3])
    assert after.p_success[0] > before + 0.2
    assert after.p_success[0] > book.predict([15]).p_success[0]   # an unseen prompt stays near the level
    book.record(2, [12], [_group(0)])   # a first group, all wrong
    assert book.predict([12]).p_success[0] < 0.2


def test_old_outcomes_are_discounted_for_drift():
    settings = OnlineSettings(encoder="none", drift_decay=0.8, fit_drift=False, level_gain=0.0)
    book = PromptBook(_texts(20), settings=settings)
    book.record(0, list(range(10)), [_group(4)] * 10)
    book.record(1, [3], [_group(8)])
    fresh = book.predict([3])
    for step in range(2, 12):       # time passes, prompt 3 is not seen again
        book.record(step, [10], [_group(4)])
    stale = book.predict([3])
    assert stale.concentration[0] < fresh.concentration[0]
    assert stale.std[0] > fresh.std[0]
    assert abs(stale.p_success[0] - 0.5) < abs(fresh.p_success[0] - 0.5)


def test_unseen_prompt_falls_back_to_neighbours_and_global_rate():
    emb = _clustered()
    book = PromptBook(_texts(100), settings=OnlineSettings(neighbours=9, fit_drift=False), embeddings=emb)
    # cluster 0 (prompts 0-9) always solved, cluster 1 (10-19) never; other clusters half
    idx = list(range(0, 8)) + list(range(10, 18)) + list(range(20, 100, 3))
    rewards = [_group(8)] * 8 + [_group(0)] * 8 + [_group(4)] * len(range(20, 100, 3))
    book.record(0, idx, rewards)
    p = book.predict([9, 19, 98]).p_success   # unseen members of cluster 0, 1, and 9
    assert p[0] > 0.75 and p[1] < 0.25
    assert abs(p[2] - book.global_rate) < 0.15
    # without neighbours an unseen prompt gets the global rate only
    plain = PromptBook(_texts(100), settings=OnlineSettings(encoder="none"))
    plain.record(0, idx, rewards)
    q = plain.predict([9, 19]).p_success
    assert np.allclose(q, plain.global_rate)


def test_global_level_follows_the_policy():
    book = PromptBook(_texts(200), settings=OnlineSettings(encoder="none"))
    rng = np.random.default_rng(0)
    book.record(0, range(100), [_group(int(k)) for k in rng.binomial(8, 0.3, 100)])
    low = book.global_rate
    for step in range(1, 8):   # the policy improves: the same kind of prompts now succeed 70% of the time
        idx = rng.choice(200, 50, replace=False)
        book.record(step, idx, [_group(int(k)) for k in rng.binomial(8, 0.7, 50)])
    assert low < 0.4 and book.global_rate > 0.55
    # a prompt seen only at step 0 is moved up with the level
    seen_early = 0 if book.last_[0] == 0 else int(np.flatnonzero(book.last_ == 0)[0])
    s0, a0 = book.s_[seen_early], book.a_[seen_early]
    assert book.predict([seen_early]).p_success[0] > (s0 + book.concentration_ * low) / (a0 + book.concentration_) - 1e-9


def test_graded_rewards_and_duplicates_merge():
    book = PromptBook(_texts(5), settings=OnlineSettings(encoder="none", reward_range=(-1.0, 1.0)))
    book.record(0, [1, 1, 2], [[1.0, -1.0], [0.0], [-1.0, -1.0]])
    h = book.history()
    assert list(h["index"]) == [1, 2]
    assert h["successes"][0] == pytest.approx(1.5) and h["attempts"][0] == 3
    assert book.dead_streak_[2] == 1 and book.dead_streak_[1] == 0


def _len_reward_groups(rng, n_prompts, g=8):
    """TRL quickstart-like rewards, -abs(20 - length): negative, unbounded, graded; prompt i favours length ~2i."""
    lengths = rng.poisson(2 * np.arange(n_prompts)[:, None] + 1, size=(n_prompts, g))
    return (-np.abs(20 - lengths)).astype(float).tolist()


def test_any_reward_without_a_declaration_learns_its_scale():
    book = PromptBook(_texts(12), settings=OnlineSettings(encoder="none"))
    rng = np.random.default_rng(0)
    for step in range(4):
        book.record(step, list(range(12)), _len_reward_groups(rng, 12))
    lo, hi = book.reward_scale
    assert lo < -10 and hi <= 0 and book.stats().reward_scale == (lo, hi)
    h = book.history()
    assert ((h["successes"] >= 0) & (h["successes"] <= h["attempts"])).all()
    p = book.predict().p_success
    assert p[10] > p[5] > p[0]   # longer completions score higher here, and the belief follows the reward
    assert book.dead_groups_ + book.informative_groups_ == 4 * 12


def test_a_widening_range_re_expresses_stored_successes_exactly():
    """Learnt online, the successes equal those of a book told the final range up front (the map is linear)."""
    rng = np.random.default_rng(1)
    steps = [_len_reward_groups(rng, 12) for _ in range(5)]
    steps[0] = [[-3.0, -2.0]] * 12            # the first step sees a narrow range; later ones widen it
    learnt = PromptBook(_texts(12), settings=OnlineSettings(encoder="none"))
    for step, groups in enumerate(steps):
        learnt.record(step, list(range(12)), groups)
    declared = PromptBook(_texts(12), settings=OnlineSettings(encoder="none", reward_range=learnt.reward_scale))
    for step, groups in enumerate(steps):
        declared.record(step, list(range(12)), groups)
    assert learnt.reward_scale[0] < -3.0
    np.testing.assert_allclose(learnt.history()["successes"], declared.history()["successes"], atol=1e-9)
    np.testing.assert_allclose(learnt.s_, declared.s_, atol=1e-9)


def test_a_constant_reward_is_logged_once_and_recorded(caplog):
    book = PromptBook(_texts(6), settings=OnlineSettings(encoder="none"))
    with caplog.at_level("WARNING", logger="preroll.online.book"):
        for step in range(5):
            book.record(step, [step % 6, (step + 1) % 6], [[-2.0] * 4, [-2.0] * 4])
    said = [r for r in caplog.records if "every reward so far equals -2" in r.getMessage()]
    assert len(said) == 1
    assert book.dead_groups_ == 10 and book.informative_groups_ == 0 and book.reward_scale == (-2.0, -2.0)
    # ... and once two rewards differ, the scale is learnt from there on
    book.record(5, [0], [[-2.0, 3.0]])
    assert book.reward_scale == (-2.0, 3.0)
    assert book.history()["successes"][-1] == pytest.approx(1.0)


def test_the_learnt_scale_is_saved(tmp_path):
    book = PromptBook(_texts(6), settings=OnlineSettings(encoder="none"))
    book.record(0, [0, 1], [[-5.0, 1.0], [0.0, 0.5]])
    again = PromptBook.load(book.save(tmp_path / "b.npz"), _texts(6))
    assert again.reward_scale == (-5.0, 1.0) and again.settings.reward_range is None
    again.record(1, [2], [[-10.0, 1.0]])
    np.testing.assert_allclose(again.history()["successes"][:2], [(5 + 11) / 11, (10 + 10.5) / 11])


def test_save_and_resume_give_identical_next_choices(tmp_path):
    emb = _clustered()
    settings = OnlineSettings(neighbours=8, seed=3)
    a = PromptBook(_texts(100), settings=settings, embeddings=emb)
    rng = np.random.default_rng(1)
    rates = rng.beta(0.5, 0.5, 100)
    for step in range(6):
        sel = a.select(rng.choice(100, 40, replace=False), 10)
        a.record(step, sel.indices, [_group(int(k)) for k in rng.binomial(8, rates[sel.indices])])
    path = a.save(tmp_path / "book.npz")
    b = PromptBook.load(path, _texts(100))
    c = PromptBook(_texts(100), settings=settings, embeddings=emb)
    c.load_state_dict(a.state_dict())
    for step in range(6, 10):
        pool = rng.choice(100, 40, replace=False)
        sa, sb, sc = a.select(pool, 10), b.select(pool, 10), c.select(pool, 10)
        assert np.array_equal(sa.indices, sb.indices) and np.array_equal(sa.indices, sc.indices)
        assert list(sa.reason) == list(sb.reason)
        rewards = [_group(int(k)) for k in rng.binomial(8, rates[sa.indices])]
        for book in (a, b, c):
            book.record(step, sa.indices, rewards)
        np.testing.assert_allclose(a.predict().alpha, b.predict().alpha)
    assert a.stats() == b.stats()
    x = a.allocate(rng.choice(100, 30, replace=False).tolist(), 64)
    assert x.sum() == 64


def test_saved_book_is_readable_like_any_checkpoint_file(tmp_path):
    """Written through a private temporary file, the book must still get the umask's mode: a team reading a
    checkpoint folder reads the book with it."""
    import os

    book = PromptBook(_texts(10), settings=OnlineSettings(encoder="none"))
    book.record(0, [1], [_group(3)])
    old = os.umask(0o022)
    try:
        path = book.save(tmp_path / "b.npz")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name != "b.npz"]  # no temporary file left behind


def test_load_refuses_another_dataset(tmp_path):
    book = PromptBook(_texts(10), settings=OnlineSettings(encoder="none"))
    book.record(0, [1], [_group(3)])
    path = book.save(tmp_path / "b.npz")
    with pytest.raises(OnlineInputError, match="another dataset"):
        PromptBook.load(path, _texts(11))
    (tmp_path / "junk.npz").write_bytes(b"not a book")
    with pytest.raises(OnlineInputError) as err:
        PromptBook.load(tmp_path / "junk.npz", _texts(10))
    assert err.value.field == "path"


@pytest.mark.parametrize("call, field", [
    (lambda b: b.record(0, [0], [[float("nan")]]), "rewards"),
    (lambda b: b.record(0, [0], [[float("-inf")]]), "rewards"),
    (lambda b: b.record(0, [0], [[]]), "rewards"),
    (lambda b: b.record(0, [0, 1], [[1.0]]), "rewards"),
    (lambda b: b.record(0, [9], [[1.0]]), "indices"),
    (lambda b: b.record(0, [-1], [[1.0]]), "indices"),
    (lambda b: b.record(0, [0.5], [[1.0]]), "indices"),
    (lambda b: b.record(-1, [0], [[1.0]]), "step"),
    (lambda b: b.record("3", [0], [[1.0]]), "step"),
    (lambda b: b.predict([5, 100]), "indices"),
    (lambda b: b.select([0, 1, 1], 1), "pool"),
    (lambda b: b.select([0, 1, 2], 4), "n"),
    (lambda b: b.select([0, 1, 2], 0), "n"),
])
def test_bad_input_is_a_clear_error(call, field):
    book = PromptBook(_texts(9), settings=OnlineSettings(encoder="none"))
    with pytest.raises(OnlineInputError) as err:
        call(book)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


def test_a_declared_reward_range_still_bounds_the_rewards():
    book = PromptBook(_texts(9), settings=OnlineSettings(encoder="none", reward_range=(0, 1)))
    with pytest.raises(OnlineInputError, match=r"reward 1.5, outside reward_range \[0, 1\]") as err:
        book.record(0, [0], [[1.5]])
    assert err.value.field == "rewards"


def test_steps_must_not_go_backwards():
    book = PromptBook(_texts(9), settings=OnlineSettings(encoder="none"))
    book.record(5, [0], [[1.0]])
    book.record(5, [1], [[0.0]])   # the same step again is fine (a step recorded in parts)
    with pytest.raises(OnlineInputError, match="before the last recorded step 5") as err:
        book.record(4, [0], [[1.0]])
    assert err.value.field == "step"


def test_construction_errors():
    with pytest.raises(OnlineInputError) as err:
        PromptBook(["a", "b"], ids=["x", "x"])
    assert err.value.field == "ids" and err.value.index == 1
    with pytest.raises(OnlineInputError) as err:
        PromptBook(["a", "  "])
    assert err.value.field == "prompts" and err.value.index == 1
    with pytest.raises(OnlineInputError) as err:
        PromptBook(["a"], settings={"drift_decay": 1.5})
    assert err.value.field == "settings.drift_decay"
    with pytest.raises(OnlineInputError) as err:
        PromptBook(["a", "b"], settings={"encoder": "none"}, embeddings=np.zeros((3, 2)))
    assert err.value.field == "embeddings"
    # the same text twice with default ids: distinct, stable ids
    book = PromptBook(["same", "same"])
    assert len(set(book.ids)) == 2
    assert PromptBook(["same", "same"]).ids == book.ids


def test_default_lexical_encoder_builds_and_saves_the_graph(tmp_path):
    texts = [f"Find the value of x if {i} x + {i % 5} = {i * 3}. Give the answer as an integer." for i in range(30)]
    texts += [f"How many triangles with integer sides have perimeter {i}?" for i in range(30)]
    book = PromptBook(texts).prepare()
    idx, sim = book._graph
    assert idx.shape == (60, 32) and (idx != np.arange(60)[:, None]).all()
    # a prompt's nearest neighbours are of its own kind
    assert (idx[:30, :5] < 30).mean() > 0.9 and (idx[30:, :5] >= 30).mean() > 0.9
    book.record(0, list(range(0, 60, 2)), [_group(8)] * 15 + [_group(0)] * 15)
    p = book.predict([1, 31]).p_success
    assert p[0] > p[1]                          # unseen prompts follow their kind
    loaded = PromptBook.load(book.save(tmp_path / "b.npz"), texts)
    assert np.array_equal(loaded._graph[0], idx)
    np.testing.assert_allclose(loaded.predict().alpha, book.predict().alpha)


def test_prior_is_fitted_once_enough_first_observations_trickle_in():
    """A small batch over a small dataset: 8 first observations a step must still fit the prior (at 64, not 256)."""
    rng = np.random.default_rng(0)
    book = PromptBook(_texts(120), settings=OnlineSettings(encoder="none", fit_drift=False))
    order = rng.permutation(120)
    for step in range(7):   # 56 first observations (the first step's are not kept): no fit yet
        idx = order[8 * step:8 * (step + 1)]
        book.record(step, idx, [_group(int(k)) for k in rng.binomial(8, 0.5, size=8)])
    assert book.stats().prior_concentration == 2.0
    for step in range(7, 12):
        idx = order[8 * step:8 * (step + 1)]
        book.record(step, idx, [_group(int(k)) for k in rng.binomial(8, 0.5, size=8)])
    # every prompt's rate is exactly 0.5: the fitted prior is far more concentrated than the starting 2 attempts
    assert book.stats().prior_concentration > 10.0
