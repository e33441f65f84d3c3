"""``preroll serve`` with ``router.explore``: routing from priors, feedback as bandit feedback, spend in /stats."""

from __future__ import annotations

import json
import zlib

import httpx
import numpy as np
import pytest
import yaml

from preroll.encoders.base import Encoder
from preroll.route import ExploreSettings
from preroll.serve.app import create_app
from preroll.serve.config import ConfigError, load_config
from preroll.serve.testing import FakeBackend, create_fake_backend_app, serve_in_thread


class HashingEncoder(Encoder):
    name = "test-explore-hashing-128"

    def encode(self, texts, *, show_progress=False):
        X = np.zeros((len(texts), 128), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace("?", " ").split():
                X[i, zlib.crc32(word.encode()) % 128] += 1.0
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)


MATH = [f"math question {i}: add {i} and {i + 3} then multiply" for i in range(30)]
MATH_Q = "math question 99: add 5 and 8 then multiply"


@pytest.fixture(scope="module")
def urls():
    with serve_in_thread(create_app_backend("small")) as small, serve_in_thread(create_app_backend("large")) as large:
        yield {"small": small, "large": large}


def create_app_backend(name):
    return create_fake_backend_app(FakeBackend(f"{name}-upstream"))


def _config(tmp_path, urls, explore, *, large_history=False, small_history=True):
    (tmp_path / "small.jsonl").write_text("\n".join(json.dumps({"prompt": p, "successes": i % 2, "attempts": 1})
                                                     for i, p in enumerate(MATH)) + "\n")
    (tmp_path / "large.jsonl").write_text("\n".join(json.dumps({"prompt": p, "successes": 1, "attempts": 1})
                                                     for p in MATH) + "\n")
    data = {"store": "history.sqlite", "check_backends": False,
            "router": {"lam": 0.1, "refit_every": 1000, "explore": explore},
            "backends": [{"name": "small", "base_url": f"{urls['small']}/v1", "cost_per_call": 0.1,
                          "history": ["small.jsonl"] if small_history else []},
                         {"name": "large", "base_url": f"{urls['large']}/v1", "cost_per_call": 1.0,
                          "history": ["large.jsonl"] if large_history else []}]}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_config_reads_explore_settings(tmp_path, urls):
    config = load_config(_config(tmp_path, urls, {"max_share": 0.5, "seed": 3, "budget_per_1k": 10}))
    assert config.router.explore == ExploreSettings(max_share=0.5, seed=3, budget_per_1k=10)
    assert load_config(_config(tmp_path, urls, True)).router.explore is True
    with pytest.raises(ConfigError) as err:
        load_config(_config(tmp_path, urls, {"max_share": 3}))
    assert "router.explore" in str(err.value) and "max_share" in str(err.value)


def test_without_exploration_a_backend_without_history_is_refused(tmp_path, urls):
    with pytest.raises(ConfigError, match="no history"):
        create_app(load_config(_config(tmp_path, urls, False)), encoder=HashingEncoder())


def test_exploring_server_fits_on_the_newest_stored_outcomes(tmp_path, urls):
    # explore.max_history bounds what every fit reads from the store (the newest outcomes per backend);
    # the store keeps everything.
    from preroll.serve.routing import build_router
    from preroll.serve.store import HistoryStore

    config = load_config(_config(tmp_path, urls, {"max_history": 12}, large_history=True))
    with HistoryStore(tmp_path / "history.sqlite") as store:
        for b in config.backends:
            store.import_file(b.name, tmp_path / f"{b.name}.jsonl")
        router, counts = build_router(config, store, encoder=HashingEncoder())
        assert counts == {"small": 12, "large": 12} and store.count("small") == 30
        assert [r.prompt for r in router.explore_state_.base["small"]] == MATH[-12:]


def test_exploring_server_routes_from_priors_and_learns_from_feedback(tmp_path, urls):
    # first_refit beyond the test's 60 outcomes: what moves the belief is the incremental update, not a refit.
    config = load_config(_config(tmp_path, urls, {"max_share": 1.0, "seed": 0, "first_refit": 1000}))
    with serve_in_thread(create_app(config, encoder=HashingEncoder())) as url:  # 'large' has no history yet
        seen = set()
        for _ in range(40):
            r = httpx.post(f"{url}/v1/chat/completions", timeout=10,
                           json={"model": "auto", "messages": [{"role": "user", "content": MATH_Q}]})
            assert r.status_code == 200, r.text
            seen.add(r.headers["x-preroll-model"])
            if r.headers["x-preroll-model"] == "large":
                explored_header = r.headers.get("x-preroll-explored")
        assert seen == {"small", "large"}  # the unknown model is tried
        assert explored_header in ("1", None)
        before = httpx.post(f"{url}/v1/route", json={"prompt": MATH_Q}).json()["p_success"]["large"]
        rid = None
        for _ in range(60):  # grade served requests: the answering backend comes from the decision log
            r = httpx.post(f"{url}/v1/chat/completions", timeout=10,
                           json={"model": "large", "messages": [{"role": "user", "content": MATH_Q}]})
            rid = r.headers["x-preroll-request-id"]
            g = httpx.post(f"{url}/v1/feedback", json={"request_id": rid, "success_rate": 0.0})
            assert g.status_code == 200 and g.json()["model"] == "large"
        after = httpx.post(f"{url}/v1/route", json={"prompt": MATH_Q}).json()["p_success"]["large"]
        assert after < before - 0.2           # observed without waiting for a refit
        stats = httpx.get(f"{url}/stats").json()["router"]
        assert stats["fits"] == 1              # no refit ran: the incremental update did it
        ex = stats["explore"]
        assert ex["observed"] == 60 and ex["decisions"] == 42
        assert 0 < ex["explored"] <= ex["decisions"] and ex["extra_cost"] != 0
        assert set(ex) >= {"explored_share", "extra_cost_per_1k", "greedy_cost", "warmup", "warmup_explored"}


def test_refit_keeps_the_exploration_ledger(tmp_path, urls):
    config = load_config(_config(tmp_path, urls, {"max_share": 1.0}, large_history=True))
    with serve_in_thread(create_app(config, encoder=HashingEncoder())) as url:
        for _ in range(10):
            httpx.post(f"{url}/v1/route", json={"prompt": MATH_Q})
        httpx.post(f"{url}/v1/feedback", json={"model": "large", "prompt": MATH_Q, "success_rate": 1.0})
        assert httpx.post(f"{url}/v1/refit", timeout=30).status_code == 200
        stats = httpx.get(f"{url}/stats").json()["router"]
        assert stats["fits"] == 2 and stats["explore"]["decisions"] == 10 and stats["explore"]["observed"] == 1


def _wait_for_refits(url, timeout=30.0):
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        router = httpx.get(f"{url}/stats").json()["router"]
        if not router["refitting"]:
            return router
        time.sleep(0.05)
    raise AssertionError("background refit did not finish")


def _post_feedback(url, n):
    fits = []
    for i in range(n):
        r = httpx.post(f"{url}/v1/feedback", timeout=10,
                       json={"model": ["small", "large"][i % 2], "prompt": f"{MATH_Q} variant {i}",
                             "success_rate": float(i % 3 == 0)})
        assert r.status_code == 200, r.text
        fits.append(_wait_for_refits(url)["fits"])
    return fits


def test_exploring_server_refits_on_the_routers_schedule(tmp_path, urls):
    """refit_every is 1000; the exploration settings' doubling schedule (4, 8, 16 outcomes) decides instead."""
    # No history: the doubling counts the outcomes alone.
    config = load_config(_config(tmp_path, urls, {"max_share": 1.0, "first_refit": 4}, small_history=False))
    with serve_in_thread(create_app(config, encoder=HashingEncoder())) as url:
        fits = _post_feedback(url, 14)
        assert fits[:3] == [1, 1, 1] and fits[3] == 2      # the first refit at 4 outcomes
        assert fits[6] == 2 and fits[7] == 3               # then at 8 (the count doubled)
        assert fits[-1] == 3                               # not again before 16 (the schedule did not restart)
        assert httpx.get(f"{url}/stats").json()["router"]["explore"]["observed"] == 14


def test_exploring_server_with_histories_counts_them_in_the_doubling(tmp_path, urls):
    """60 stored outcomes: a refit after 4 new ones would re-read them for little; the first is due at 60, or
    at ``max_gap`` when that is smaller."""
    config = load_config(_config(tmp_path, urls, {"max_share": 1.0, "first_refit": 4, "max_gap": None},
                                 large_history=True))
    with serve_in_thread(create_app(config, encoder=HashingEncoder())) as url:
        assert _post_feedback(url, 14) == [1] * 14
    capped = tmp_path / "capped"
    capped.mkdir()
    config = load_config(_config(capped, urls, {"max_share": 1.0, "first_refit": 4, "max_gap": 6},
                                 large_history=True))
    with serve_in_thread(create_app(config, encoder=HashingEncoder())) as url:
        fits = _post_feedback(url, 14)
        assert fits[4] == 1 and fits[5] == 2 and fits[11] == 3 and fits[-1] == 3


def test_server_router_guard_setting(tmp_path, urls):
    """router.guard reaches the served Router (off, defaults, or fields); a malformed one is refused at load."""
    from preroll.route.depth import DepthGuard

    cases = ((False, None), ({"far_quantile": 0.1, "z": 2.0}, DepthGuard(far_quantile=0.1, z=2.0)),
             (True, DepthGuard()))
    for k, (guard, expected) in enumerate(cases):
        folder = tmp_path / str(k)
        folder.mkdir()
        path = _config(folder, urls, False, large_history=True)
        data = yaml.safe_load(path.read_text())
        data["router"]["guard"] = guard
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        app = create_app(load_config(path), encoder=HashingEncoder())
        router = app.state.routing.router
        try:
            assert router._guard() == expected
            assert (router.history_X_ is None) == (expected is None)   # the guard's history kept only when on
        finally:
            app.state.store.close()
    for bad, word in (({"far_quantile": "high"}, "far_quantile"), ({"radius": 2}, "radius"), ("on", "str")):
        data["router"]["guard"] = bad
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        with pytest.raises(ConfigError) as err:
            load_config(path)
        assert "router.guard" in str(err.value) and word in str(err.value)
