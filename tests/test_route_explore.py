"""Live routing from bandit feedback: ``Router(explore=...)``, ``route(explore=...)``, ``Router.observe``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from preroll.beliefs import BetaPrediction
from preroll.route import (
    ExploreSettings,
    ModelSpec,
    NotFittedError,
    RouteConfigError,
    RouteError,
    Router,
    UnknownModelError,
)
from preroll.route.explore import ExploreState

TOPICS = ["math sum add numbers", "poem rhyme verse", "code python function", "history rome emperor"]


def _names(n):
    return [f"prompt {i}" for i in range(n)]


def _prompts(rng, n):
    return [f"{TOPICS[rng.integers(len(TOPICS))]} item {rng.integers(10_000)}" for _ in range(n)]


def _specs(dear: float = 3.0):
    return [ModelSpec(name="cheap", cost_per_call=0.1), ModelSpec(name="mid", cost_per_call=0.5),
            ModelSpec(name="dear", cost_per_call=dear)]


def _histories(rng, n=60):
    ps = _prompts(rng, n)
    return {"cheap": [{"prompt": p, "success_rate": float("math" in p)} for p in ps],
            "mid": [{"prompt": p, "success_rate": float("code" in p or "math" in p)} for p in ps],
            "dear": [{"prompt": p, "success_rate": 0.9} for p in ps]}


def test_explore_routes_before_any_history():
    router = Router(_specs(), encoder="lexical", explore=True, lam=0.1)
    decisions = router.route(["what is 2 + 2?", "write a poem about the sea"])
    assert len(decisions) == 2
    assert all(d.model in {"cheap", "mid", "dear"} for d in decisions)
    assert all(abs(v - 0.5) < 1e-9 for d in decisions for v in d.p_success.values())  # Beta(1, 1) priors
    with pytest.raises(NotFittedError):
        Router(_specs(), encoder="lexical").route(["what is 2 + 2?"])  # without exploration: not fitted


def test_explore_false_is_the_non_exploring_router():
    rng = np.random.default_rng(0)
    hist = _histories(rng)
    plain = Router(_specs(), encoder="lexical", lam=0.2).fit(hist)
    exploring = Router(_specs(), encoder="lexical", lam=0.2, explore=ExploreSettings(seed=1, max_share=1.0)).fit(hist)
    prompts = _prompts(np.random.default_rng(1), 40)
    a, b = plain.route(prompts), exploring.route(prompts, explore=False)
    assert [d.model for d in a] == [d.model for d in b]
    assert [d.p_success for d in a] == [d.p_success for d in b]
    assert not any(d.explored for d in b)
    explored = exploring.route(prompts * 5)  # with exploration some decisions leave the greedy choice
    assert any(d.explored for d in explored)
    assert all(d.explored == (d.model != g.model) for d, g in zip(explored, a * 5))


def test_observe_moves_beliefs_toward_outcomes():
    rng = np.random.default_rng(2)
    router = Router(_specs(), encoder="lexical", lam=0.0, explore=ExploreSettings(first_refit=10 ** 6)).fit(
        _histories(rng))
    prompt = "poem rhyme verse item 77"
    before = router.route([prompt], explore=False)[0].p_success
    report = router.observe([prompt] * 20, ["cheap"] * 20, [1.0] * 20)
    assert report.observed == 20 and not report.refitted
    up = router.route([prompt], explore=False)[0].p_success
    assert up["cheap"] > before["cheap"] + 0.1
    assert up["mid"] == pytest.approx(before["mid"])  # another model's belief is untouched
    router.observe([prompt] * 60, ["cheap"] * 60, [0.0] * 60)
    assert router.route([prompt], explore=False)[0].p_success["cheap"] < up["cheap"]


def test_observe_refits_on_schedule_and_learns_from_empty_history():
    router = Router(_specs(), encoder="lexical", lam=0.0, explore=ExploreSettings(first_refit=24, max_share=1.0))
    rng = np.random.default_rng(3)
    refits = []
    for _ in range(12):
        ps = _prompts(rng, 8)
        ds = router.route(ps)
        ys = [float(("math" in p) if d.model == "cheap" else 0.2) for p, d in zip(ps, ds)]
        refits.append(router.observe(ps, [d.model for d in ds], ys).refitted)
    assert refits.count(True) == 3 and refits[2] and refits[5] and refits[11]  # at 24, 48 and 96 outcomes
    assert router.explore_stats()["refits"] == 3 and router.explore_stats()["observed"] == 96
    p = router.route(["math sum add numbers item 5"], explore=False)[0].p_success
    q = router.route(["poem rhyme verse item 5"], explore=False)[0].p_success
    assert p["cheap"] > q["cheap"]


def test_observe_checks_its_input():
    router = Router(_specs(), encoder="lexical", explore=True)
    with pytest.raises(UnknownModelError):
        router.observe(["a prompt"], ["nope"], [1.0])
    with pytest.raises(RouteError):
        router.observe(["a prompt"], ["cheap"], [1.5])
    with pytest.raises(RouteError):
        router.observe(["a prompt", "another"], ["cheap"], [1.0])
    with pytest.raises(RouteConfigError):
        Router(_specs(), encoder="lexical", explore={"max_share": 2}).route(["x"])


def test_hopeless_dear_model_is_never_explored():
    """Its optimistic utility is below the cheap model's pessimistic one: no draw may pick it."""
    n = 20_000
    alpha = np.tile([30.0, 1.0], (n, 1))
    beta = np.tile([30.0, 1.0], (n, 1))
    belief = BetaPrediction(alpha, beta)
    C = np.tile([0.0, 1.0], (n, 1))
    greedy = np.zeros(n, dtype=int)

    def dear_picks(z):
        state = ExploreState(ExploreSettings(seed=0, max_share=1.0, exclude_z=z, warmup=None), ["cheap", "dear"])
        chosen = state.choose(belief, C, greedy, 0.6, np.array([True, True]), True, _names(len(C))).columns
        return int((chosen == 1).sum()), state.ledger.excluded

    picks, excluded = dear_picks(2.0)
    assert picks == 0 and excluded == n
    assert dear_picks(50.0)[0] > 0  # bounds wide enough to keep it: Thompson alone does pick it sometimes


def test_hopeless_dear_model_is_never_chosen_on_a_stream():
    router = Router(_specs(dear=20.0), encoder="lexical", lam=0.1, explore=ExploreSettings(max_share=1.0))
    rng = np.random.default_rng(4)
    chosen = []
    for _ in range(30):
        ps = _prompts(rng, 8)
        ds = router.route(ps)
        chosen += [d.model for d in ds]
        router.observe(ps, [d.model for d in ds], rng.random(len(ds)))
    assert "dear" not in chosen
    assert {"cheap", "mid"} <= set(chosen)
    assert router.explore_stats()["excluded"] > 0


@settings(max_examples=25, deadline=None)
@given(max_share=st.floats(0.0, 1.0), budget=st.one_of(st.none(), st.floats(0.0, 50.0)),
       seed=st.integers(0, 10_000), batch=st.integers(1, 9), warmup=st.one_of(st.none(), st.integers(1, 30)))
def test_share_cap_and_budget_hold_at_every_prefix(max_share, budget, seed, batch, warmup):
    """The budget holds over every decision; the share cap over those the warm-up did not make."""
    rng = np.random.default_rng(seed)
    m = 4
    state = ExploreState(ExploreSettings(seed=seed, max_share=max_share, budget_per_1k=budget, warmup=warmup),
                         list("abcd"))
    explored_total = thompson = extra = 0.0
    for step in range(40):
        alpha = rng.uniform(0.5, 5.0, (batch, m))
        beta = rng.uniform(0.5, 5.0, (batch, m))
        C = rng.uniform(0.0, 0.2, (batch, m))
        greedy = np.argmax(alpha / (alpha + beta), axis=1)
        before = state.ledger.decisions
        got = state.choose(BetaPrediction(alpha, beta), C, greedy, 0.1, np.ones(m, bool), True,
                           [f"p{step}-{i}" for i in range(batch)])
        chosen, explored = got.columns, got.explored
        rows = np.arange(batch)
        for i in rows:  # replay the decisions one by one: the bounds hold after each of them
            explored_total += explored[i]
            thompson += explored[i] and not got.warmup[i]
            extra += C[i, chosen[i]] - C[i, greedy[i]]
            k = before + i + 1
            assert thompson <= max_share * k + 1e-9
            if budget is not None:
                assert extra <= budget * k / 1000.0 + 1e-9
        assert np.all(chosen[~explored] == greedy[~explored])
    assert state.ledger.explored == explored_total
    assert state.ledger.extra_cost == pytest.approx(extra)
    assert state.ledger.warmup <= (0 if warmup is None else warmup * m)   # no outcomes came back: each model's
    assert state.ledger.explored - state.ledger.warmup_explored == thompson   # warm-up draws stop at warmup


def test_share_cap_holds_on_a_router_stream():
    router = Router(_specs(), encoder="lexical", lam=0.05,
                    explore=ExploreSettings(max_share=0.1, budget_per_1k=20.0, first_refit=10 ** 6))
    rng = np.random.default_rng(5)
    explored, extra, n = 0, 0.0, 0
    greedy_router_cost = 0.0
    for _ in range(25):
        ps = _prompts(rng, 8)
        ds = router.route(ps)
        for d in ds:
            n += 1
            explored += d.explored
            assert explored <= 0.1 * n + 1e-9
        router.observe(ps, [d.model for d in ds], rng.random(len(ds)))
    stats = router.explore_stats()
    assert stats["decisions"] == n and stats["explored"] == explored > 0
    assert stats["extra_cost"] <= 20.0 * n / 1000 + 1e-9
    del greedy_router_cost, extra


def test_stream_bench_small_run(llmrouter, tmp_path):
    from preroll.bench.route_stream import (
        StreamBenchConfig,
        plot_regret,
        run_stream_bench,
    )

    res = run_stream_bench(StreamBenchConfig(max_prompts=300, encoder="lexical", baseline_encoder="hashed", last=100,
                                             full_info=False, explore={"first_refit": 64, "warmup": 20}))
    names = [r["method"] for r in res["rows"]]
    assert names[0] == "explore router" and any(n.startswith("LinUCB") for n in names)
    assert any(n.startswith("epsilon-greedy") for n in names)
    best = next(r for r in res["rows"] if r["method"].startswith("best single"))
    assert all(r["quality"] <= best["quality"] + 0.3 for r in res["rows"])  # scores of real picks, in [0, 1]
    info = res["info"]["explore router"]
    assert info["decisions"] == res["n_stream"] == 240 and info["observed"] == 240 and info["refits"] == 2
    assert 0 < info["explored"] - info["warmup_explored"] <= 0.25 * 240   # the share cap: decisions after warm-up
    assert 0 < info["warmup"] <= 20 * len(res["models"])
    assert 0 <= res["frozen"]["router"] <= 1 and res["frozen"]["n"] == 60
    assert plot_regret(res, tmp_path / "regret.png").stat().st_size > 0


def test_stream_cli_writes_table_json_and_png(llmrouter, tmp_path):
    from typer.testing import CliRunner

    from preroll.cli.main import app

    # No MiniLM in CI time: with --encoder lexical the baselines read hashed n-grams (a view that needs no fit).
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", "route", "--stream", "--max-prompts", "200", "--encoder", "lexical",
                                   "--no-full-info", "--max-share", "0.2", "--budget-per-1k", "0.05",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "explore router" in res.output and "LinUCB" in res.output and "frozen" in res.output
    result = json.loads((out / "results-stream-seed0.json").read_text())
    assert result["info"]["explore router"]["settings"]["max_share"] == 0.2
    info = result["info"]["explore router"]
    assert info["explored"] - info["warmup_explored"] <= 0.2 * info["decisions"]
    assert result["info"]["explore router"]["extra_cost_per_1k"] <= 0.05 + 1e-12
    assert (out / "regret-seed0.png").stat().st_size > 10_000


def test_annealed_cap_shrinks_the_explored_share():
    """anneal_after: explored decisions stay within max_share * sqrt(anneal_after * decisions) at every prefix."""
    rng = np.random.default_rng(7)
    m, batch = 3, 8
    flat = ExploreState(ExploreSettings(seed=1, max_share=0.5, anneal_after=None, warmup=None), list("abc"))
    annealed = ExploreState(ExploreSettings(seed=1, max_share=0.5, anneal_after=40, warmup=None), list("abc"))
    counts = {id(flat): [], id(annealed): []}
    for _ in range(150):
        alpha, beta = rng.uniform(1.0, 3.0, (batch, m)), rng.uniform(1.0, 3.0, (batch, m))  # wide: always tempted
        C = np.zeros((batch, m))
        greedy = np.argmax(alpha / (alpha + beta), axis=1)
        for state in (flat, annealed):
            explored = state.choose(BetaPrediction(alpha, beta), C, greedy, 0.0, np.ones(m, bool), True,
                                    _names(len(C))).explored
            counts[id(state)].append(int(explored.sum()))
    n = 150 * batch
    cum = np.cumsum(counts[id(annealed)])
    steps = batch * np.arange(1, 151)
    assert np.all(cum <= 0.5 * np.sqrt(40 * np.maximum(steps, 40)) + 1e-9)
    assert np.all(cum <= 0.5 * steps + 1e-9)
    assert annealed.ledger.explored <= 0.5 * np.sqrt(40 * n) + 1e-9 < 0.5 * flat.ledger.explored
    assert sum(counts[id(annealed)][-50:]) > 0       # it still explores late, at a falling rate
    assert annealed.settings.share_cap(20) == pytest.approx(10.0)   # a flat cap until anneal_after


def test_refit_schedule_doubling_with_a_gap_cap():
    def points(settings, n=100):
        at, out = 0, []
        for k in range(1, n + 1):
            if settings.refit_due(k, at):
                out.append(k)
                at = k
        return out

    assert points(ExploreSettings(first_refit=8)) == [8, 16, 32, 64]
    assert points(ExploreSettings(first_refit=8, max_gap=16)) == [8, 16, 32, 48, 64, 80, 96]
    assert points(ExploreSettings(first_refit=30, refit=25)) == [30, 55, 80]
    # The defaults: doubling from 32, then at least every 1,024 outcomes; null: doubling without a cap.
    assert points(ExploreSettings(), 5000)[-6:] == [256, 512, 1024, 2048, 3072, 4096]
    assert points(ExploreSettings(max_gap=None), 5000)[-3:] == [1024, 2048, 4096]
    with pytest.raises(ValueError):
        ExploreSettings(max_gap=0)
    router = Router(_specs(), encoder="lexical", lam=0.0, explore=ExploreSettings(first_refit=8, max_gap=16))
    rng = np.random.default_rng(8)
    refits = []
    for _ in range(6):                       # 48 outcomes: refits at 8, 16, 32, 48
        ps = _prompts(rng, 8)
        ds = router.route(ps)
        refits.append(router.observe(ps, [d.model for d in ds], rng.random(8)).refitted)
    assert refits == [True, True, False, True, False, True]


def test_the_doubling_counts_the_fit_history():
    """A router fitted on 180 outcomes (60 prompts, three models) refits when the outcomes it observed reach
    the history's size, not after ``first_refit`` of them: a refit reads the labels too."""
    settings = ExploreSettings(first_refit=8, max_gap=None)
    assert [k for k in range(1, 400) if settings.refit_due(k, 0, base=180)][:1] == [180]
    assert settings.refit_due(180 + 360, 180, base=180) and not settings.refit_due(539, 180, base=180)
    assert ExploreSettings(first_refit=8, max_gap=16).refit_due(16, 0, base=180)   # the cap still holds
    router = Router(_specs(), encoder="lexical", lam=0.0, explore=settings).fit(_histories(np.random.default_rng(3)))
    rng = np.random.default_rng(9)
    reports = []
    for _ in range(12):                      # 12 x 16 outcomes: the one refit comes once 180 are observed
        ps = _prompts(rng, 16)
        reports.append(router.observe(ps, [d.model for d in router.route(ps)], rng.random(16)))
    assert [r.total for r in reports if r.refitted] == [192]


def test_refits_read_the_newest_outcomes_and_memory_stays_bounded():
    # max_history 24: every refit fits each model on at most its 24 newest outcomes (fit history first, then
    # observed ones), and observed outcomes older than that leave memory once twice as many have come.
    rng = np.random.default_rng(11)
    hist = _histories(rng, 20)
    router = Router(_specs(), encoder="lexical", lam=0.0,
                    explore=ExploreSettings(first_refit=16, refit=16, max_history=24, warmup=None)).fit(hist)
    state = router.explore_state_
    sent: dict[str, list[str]] = {"cheap": [], "mid": [], "dear": []}
    for _ in range(8):
        ps = _prompts(rng, 16)
        ds = router.route(ps)
        for p, d in zip(ps, ds):
            sent[d.model].append(p)
        router.observe(ps, [d.model for d in ds], rng.random(16))
    assert router.explore_stats()["refits"] == 8
    assert all(len(v) <= 2 * 24 for v in state.observed.values())
    newest = state.histories()
    for name in sent:
        expected = ([r["prompt"] for r in hist[name]] + sent[name])[-24:]
        assert [r.prompt for r in newest[name]] == expected
        assert router.n_history_[name] == len(expected)     # the last refit read exactly that window
    with pytest.raises(ValueError):
        ExploreSettings(max_history=0)
    assert ExploreSettings(max_history=None).max_history is None


def test_careful_greedy_is_the_confident_rule():
    rng = np.random.default_rng(9)
    hist = _histories(rng, 40)
    prompts = _prompts(np.random.default_rng(10), 60)
    careful = Router(_specs(), encoder="lexical", lam=0.2, explore=ExploreSettings(careful=True)).fit(hist)
    confident = Router(_specs(), encoder="lexical", lam=0.2, rule="confident").fit(hist)
    utility = Router(_specs(), encoder="lexical", lam=0.2).fit(hist)
    got = [d.model for d in careful.route(prompts, explore=False)]
    assert got == [d.model for d in confident.route(prompts)]
    assert got != [d.model for d in utility.route(prompts)]   # the two rules differ on these prompts


def _counted_state(contenders_z, counts):
    state = ExploreState(ExploreSettings(seed=0, max_share=1.0, contenders_z=contenders_z, warmup=None),
                         ["strong", "near", "weak"])
    state.counts[:] = counts
    return state


def test_contenders_leave_a_model_clearly_worse_on_average_unexplored():
    """Flat per-prompt beliefs would let Thompson pick any model; the contender test keeps the weak one out."""
    n = 5_000
    belief = BetaPrediction(np.ones((n, 3)), np.ones((n, 3)))
    C = np.zeros((n, 3))
    greedy = np.zeros(n, dtype=int)
    counts = [[240.0, 160.0], [11.0, 9.0], [80.0, 320.0]]   # means 0.6 (400 outcomes), 0.55 (20), 0.2 (400)

    def picks(z):
        chosen = _counted_state(z, counts).choose(belief, C, greedy, 0.0, np.ones(3, bool), True, _names(n)).columns
        return np.bincount(chosen, minlength=3)

    with_test, without = picks(2.0), picks(None)
    assert with_test[2] == 0 and with_test[1] > 0   # thinly observed 'near' stays a contender
    assert without[2] > 0


def test_contenders_compare_utilities_at_the_decision_lam():
    state = _counted_state(1.0, [[300.0, 100.0], [200.0, 200.0], [100.0, 300.0]])  # means 0.75, 0.5, 0.25
    keep = np.ones(3, bool)
    C = np.tile([1.0, 0.0, 0.0], (4, 1))
    assert state.contenders(C, 0.0, keep).tolist() == [True, False, False]
    assert state.contenders(C, 0.5, keep).tolist() == [False, True, False]   # 0.75 - 0.5 < 0.5
    assert state.contenders(C, 0.0, np.array([False, True, True])).tolist() == [False, True, False]


def test_exploring_decisions_read_the_guards_far_flags():
    """The explore path ranks with the guard's far flags (from the router's one pass over its history)."""
    hist = _histories(np.random.default_rng(7))
    router = Router(_specs(), encoder="lexical", lam=0.2, explore=True).fit(hist)
    prompts = _prompts(np.random.default_rng(8), 6) + ["zzqx vvbn kkpw", "qqq jjj xxx www"]
    seen = []
    rank = router.rank_models

    def recording(*args, far=None, **kwargs):
        seen.append(far)
        return rank(*args, far=far, **kwargs)

    router.rank_models = recording
    router.route(prompts)
    expected = router.far_from_history(router.embed(prompts))
    assert expected.any() and not expected.all()
    assert len(seen) == 1 and seen[0] is not None and np.array_equal(seen[0], expected)


def _explored_where(router, prompts):
    """Per prompt: explored, and far from the router's history (by its guard)."""
    far = router.far_from_history(router.embed(prompts))
    decisions = router.route(prompts)
    return np.array([d.explored for d in decisions]), far


def test_a_router_fitted_on_labels_explores_only_far_from_them():
    """Labels (several models per prompt) already judge the models near them: Thompson leaves the greedy choice
    only on prompts the guard calls far; with ``explore_near_labels`` it explores near them too."""
    hist = _histories(np.random.default_rng(7))
    prompts = _prompts(np.random.default_rng(8), 30) * 4 + ["zzqx vvbn kkpw", "qqq jjj xxx www"] * 30
    settings = {"seed": 3, "max_share": 1.0, "anneal_after": None, "warmup": None, "contenders_z": None}
    router = Router(_specs(), encoder="lexical", lam=0.05, explore=ExploreSettings(**settings)).fit(hist)
    assert not router.bandit_log_
    explored, far = _explored_where(router, prompts)
    assert far.any() and not far.all()
    assert not explored[~far].any()
    assert explored[far].any()
    everywhere = Router(_specs(), encoder="lexical", lam=0.05,
                        explore=ExploreSettings(**settings, explore_near_labels=True)).fit(hist)
    assert _explored_where(everywhere, prompts)[0][~far].any()


def test_a_router_fitted_on_a_bandit_log_explores_near_it():
    """One model's outcome per prompt (a live router's own log) is not labels: exploration stays everywhere."""
    rng = np.random.default_rng(7)
    full = _histories(rng, n=90)
    hist = {name: rows[j::3] for j, (name, rows) in enumerate(full.items())}
    settings = ExploreSettings(seed=3, max_share=1.0, anneal_after=None, warmup=None, contenders_z=None)
    router = Router(_specs(), encoder="lexical", lam=0.05, explore=settings).fit(hist)
    assert router.bandit_log_
    explored, far = _explored_where(router, _prompts(np.random.default_rng(8), 30) * 4)
    assert explored[~far].any()
