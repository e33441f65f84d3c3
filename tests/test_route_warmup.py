"""The elimination warm-up of an exploring router: decisions blind to the prompt, models ruled out on them."""

from __future__ import annotations

import numpy as np

from preroll.route import ExploreSettings, ModelSpec, Router
from preroll.route.explore import MIN_TO_RULE_OUT, carry_over

TOPICS = ["math sum add numbers", "poem rhyme verse", "code python function", "history rome emperor"]


def _prompts(rng, n):
    return [f"{TOPICS[rng.integers(len(TOPICS))]} item {rng.integers(10_000)}" for _ in range(n)]


def _specs():
    return [ModelSpec(name=n, cost_per_call=c) for n, c in (("a", 0.1), ("b", 0.2), ("c", 0.3))]


def _stream(router, truth, n, seed, batch=8):
    """Route ``n`` prompts in batches, observing ``truth(model, prompt)``; returns the chosen models."""
    rng = np.random.default_rng(seed)
    chosen = []
    for _ in range(n // batch):
        ps = _prompts(rng, batch)
        ds = router.route(ps)
        router.observe(ps, [d.model for d in ds], [truth(d.model, p) for d, p in zip(ds, ps)])
        chosen += [d.model for d in ds]
    return chosen


def test_warmup_spreads_its_decisions_evenly_whatever_the_prompt():
    router = Router(_specs(), encoder="lexical", lam=0.0, explore=ExploreSettings(warmup=12, seed=0))
    # 'a' is best on math prompts only: a router that read the prompt would send them to it.
    chosen = _stream(router, lambda m, p: float(m == "a" and "math" in p or m != "a" and "math" not in p), 36, 0, batch=4)
    assert sorted(np.unique(chosen[:36], return_counts=True)[1].tolist()) == [12, 12, 12]
    st = router.explore_state_
    assert st.warm.sums[:, 1].tolist() == [12.0, 12.0, 12.0]
    assert router.explore_stats()["warmup"] == 36


def test_warmup_rules_out_a_model_worse_on_average_and_thompson_then_leaves_it():
    settings = ExploreSettings(warmup=60, seed=1, max_share=1.0, first_refit=16)
    router = Router(_specs(), encoder="lexical", lam=0.0, explore=settings)
    rng = np.random.default_rng(5)
    truth = {"a": 0.05, "b": 0.8, "c": 0.75}
    chosen = _stream(router, lambda m, p: float(rng.random() < truth[m]), 400, 2)
    warm = router.explore_state_.warm
    assert MIN_TO_RULE_OUT <= warm.sums[0, 1] < 60          # 'a' dropped after the minimum, before the target
    assert warm.sums[1:, 1].tolist() == [60.0, 60.0]
    after = chosen[int(warm.sums[:, 1].sum()) + 8:]
    assert "a" not in after and "c" in after               # Thompson explores the near model, never the ruled-out one


def test_no_model_is_ruled_out_on_a_handful_of_outcomes():
    router = Router(_specs(), encoder="lexical", lam=0.0, explore=ExploreSettings(warmup=100, seed=0))
    st = router.explore_state_ if hasattr(router, "explore_state_") else None
    router.route(["x"])
    st = router.explore_state_
    st.warm.sums[:] = [[0.0, 10.0], [10.0, 10.0], [9.0, 10.0]]   # 0 of 10 against 10 of 10
    assert st.warm.running(2.0, 0.0, np.ones(3, bool)).tolist() == [True, True, True]
    st.warm.sums[:] = [[0.0, 40.0], [40.0, 40.0], [36.0, 40.0]]
    assert st.warm.running(2.0, 0.0, np.ones(3, bool)).tolist() == [False, True, True]


def test_only_warmup_decisions_enter_the_tally():
    router = Router(_specs(), encoder="lexical", lam=0.0, explore=ExploreSettings(warmup=4, seed=0))
    router.observe(["never routed"] * 5, ["a"] * 5, [1.0] * 5)      # feedback with no warm-up decision behind it
    assert router.explore_state_.warm.sums.sum() == 0
    ds = router.route(["p1", "p2", "p3"])
    router.observe(["p1", "p2", "p3"], [d.model for d in ds], [1.0, 0.0, 1.0])
    assert router.explore_state_.warm.sums[:, 1].sum() == 3
    router.observe(["p1"], [ds[0].model], [1.0])                     # the same outcome again: not a second draw
    assert router.explore_state_.warm.sums[:, 1].sum() == 3


def test_warmup_keeps_to_the_spending_budget():
    settings = ExploreSettings(warmup=50, seed=0, budget_per_1k=20.0)
    router = Router(_specs(), encoder="lexical", lam=0.5, explore=settings)
    rng = np.random.default_rng(3)
    for _ in range(40):
        ps = _prompts(rng, 5)
        ds = router.route(ps)
        router.observe(ps, [d.model for d in ds], [0.5] * 5)
        led = router.explore_state_.ledger
        assert led.extra_cost <= 20.0 * led.decisions / 1000.0 + 1e-9


def test_a_background_refit_carries_the_warmup_on():
    settings = ExploreSettings(warmup=30, seed=0)
    live = Router(_specs(), encoder="lexical", lam=0.0, explore=settings)
    _stream(live, lambda m, p: 1.0, 24, 0)
    fresh = Router(_specs(), encoder="lexical", lam=0.0, explore=settings)
    fresh.fit(live.explore_state_.histories())
    carry_over(live, fresh)
    assert fresh.explore_state_.warm.sums.tolist() == live.explore_state_.warm.sums.tolist()
    assert fresh.explore_state_.warm.sums[:, 1].sum() == 24


def test_warmup_never_tries_a_model_its_price_rules_out():
    specs = [ModelSpec(name="a", cost_per_call=0.1), ModelSpec(name="b", cost_per_call=0.2),
             ModelSpec(name="gold", cost_per_call=50.0)]
    router = Router(specs, encoder="lexical", lam=0.05, explore=ExploreSettings(warmup=40, seed=0))
    rng = np.random.default_rng(4)
    chosen = _stream(router, lambda m, p: float(rng.random() < 0.9), 120, 1, batch=4)
    assert "gold" not in chosen                       # 1 - 0.05 * 50 < 0: hopeless at this lam, whatever it scores
    assert router.explore_state_.warm.sums[2, 1] == 0 and router.explore_state_.warm.sums[:2, 1].sum() == 80


def test_a_users_histories_count_toward_the_warmup():
    rng = np.random.default_rng(6)

    def hist(n):
        return {m: [{"prompt": p, "success_rate": float(rng.random() < 0.6)} for p in _prompts(rng, n)]
                for m in ("a", "b", "c")}

    full = Router(_specs(), encoder="lexical", lam=0.0, explore=ExploreSettings(warmup=50, seed=0)).fit(hist(60))
    ps = _prompts(rng, 40)
    full.route(ps)
    assert full.explore_stats()["warmup"] == 0          # 60 outcomes each already: nothing to warm up
    thin = Router(_specs(), encoder="lexical", lam=0.0, explore=ExploreSettings(warmup=50, seed=0)).fit(hist(45))
    thin.route(ps)
    assert thin.explore_stats()["warmup"] == 15          # 5 more decisions per model
    assert thin.explore_state_.warm.n_pending.tolist() == [5.0, 5.0, 5.0]


def test_the_elimination_is_the_documented_bound():
    """Beta(1, 1) means over the warm-up outcomes, s.e. sqrt(mu (1 - mu) / (n + 3)), utility = mean - lam * price."""
    from preroll.route.explore import Warmup

    rng = np.random.default_rng(11)
    for _ in range(200):
        m = 4
        n = rng.integers(MIN_TO_RULE_OUT, 300, m).astype(float)
        s = np.floor(rng.uniform(0, 1, m) * (n + 1))
        cost = rng.uniform(0, 0.01, m)
        lam, z = float(rng.choice([0.0, 5.0])), float(rng.choice([1.0, 2.0]))
        w = Warmup(m)
        w.sums[:] = np.stack([s, n], axis=1)
        w.cost_sum, w.cost_n = cost * 10, 10
        mu = (1 + s) / (2 + n)
        se = np.sqrt(mu * (1 - mu) / (n + 3))
        u = mu - lam * cost
        expected = u + z * se >= np.max(u - z * se)
        assert w.running(z, lam, np.ones(m, bool)).tolist() == expected.tolist()
