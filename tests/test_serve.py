"""``preroll serve`` over real HTTP: a uvicorn proxy on loopback in front of fake OpenAI-compatible backends."""

from __future__ import annotations

import json
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import yaml

from preroll.data import Outcome, RecordError
from preroll.encoders.base import Encoder
from preroll.serve.app import BackendUnreachableError, create_app
from preroll.serve.config import ConfigError, load_config
from preroll.serve.testing import FakeBackend, create_fake_backend_app, serve_in_thread


class HashingEncoder(Encoder):
    """Bag of hashed words: stateless and instant, so the tests exercise serving, not embedding."""

    name = "test-hashing-128"

    def encode(self, texts, *, show_progress=False):
        X = np.zeros((len(texts), 128), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().replace("?", " ").split():
                X[i, zlib.crc32(word.encode()) % 128] += 1.0
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)


MATH = [f"math question {i}: add {i} and {i + 3} then multiply" for i in range(30)]
HISTORY = [f"history question {i}: which emperor ruled rome in year {100 + i}" for i in range(30)]
MATH_Q = "math question 99: add 5 and 8 then multiply"
HISTORY_Q = "history question 99: which emperor ruled rome in year 250"


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def backends():
    """Two fake upstreams: 'small' (cheap, good at math only) and 'large' (dear, good at both)."""
    fakes = {"small": FakeBackend("small-upstream"), "large": FakeBackend("large-upstream")}
    with serve_in_thread(create_fake_backend_app(fakes["small"])) as small_url, \
            serve_in_thread(create_fake_backend_app(fakes["large"])) as large_url:
        yield fakes, {"small": small_url, "large": large_url}


@pytest.fixture(autouse=True)
def _reset_backends(request):
    yield
    if "backends" in request.fixturenames:
        for fake in request.getfixturevalue("backends")[0].values():
            fake.fail_status, fake.delay_s = None, 0.0
            fake.requests.clear()


def _config_dict(tmp_path, urls, **router):
    hist = tmp_path / "hist"
    hist.mkdir(exist_ok=True)
    _write_jsonl(hist / "small.jsonl", [{"prompt": p, "successes": 1, "attempts": 1} for p in MATH]
                 + [{"prompt": p, "successes": 0, "attempts": 1} for p in HISTORY])
    _write_jsonl(hist / "large.jsonl", [{"prompt": p, "successes": 1, "attempts": 1} for p in MATH + HISTORY])
    return {
        "store": "state/history.sqlite",
        "router": {"rule": "utility", "lam": 0.5, "refit_every": 1000, **router},
        "backends": [
            {"name": "small", "base_url": f"{urls['small']}/v1", "model": "small-upstream",
             "api_key_env": "PREROLL_TEST_SMALL_KEY", "cost_per_call": 0.1, "timeout_s": 0.5,
             "history": "hist/small.jsonl"},
            {"name": "large", "base_url": f"{urls['large']}/v1", "model": "large-upstream",
             "cost_per_call": 1.0, "timeout_s": 0.5, "history": ["hist/large.jsonl"]},
        ],
    }


def _write_config(tmp_path, data, name="serve.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


ENV = {"PREROLL_TEST_SMALL_KEY": "sk-small-secret"}


@pytest.fixture
def proxy(tmp_path, backends):
    """(base URL of a running proxy, fake backends, app)."""
    fakes, urls = backends
    config = load_config(_write_config(tmp_path, _config_dict(tmp_path, urls)), environ=ENV)
    app = create_app(config, encoder=HashingEncoder(), environ=ENV)
    with serve_in_thread(app) as url:
        yield url, fakes, app


def _chat(url, prompt, *, model="auto", headers=None, timeout=10, **extra):
    body = {"model": model, "messages": [{"role": "system", "content": "be brief"},
                                         {"role": "user", "content": prompt}], **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers or {}, timeout=timeout)


# -- routing and forwarding -------------------------------------------------------------


def test_routes_each_prompt_to_the_cheapest_capable_backend(proxy):
    url, fakes, _ = proxy
    r = _chat(url, MATH_Q)
    assert r.status_code == 200, r.text
    assert r.headers["x-preroll-model"] == "small"
    assert r.headers["x-preroll-decision"] == "routed"
    assert r.json()["choices"][0]["message"]["content"] == f"[small-upstream] {MATH_Q}"
    p_small = float(r.headers["x-preroll-p-success"])
    assert 0.5 < p_small <= 1.0

    r = _chat(url, HISTORY_Q)
    assert r.status_code == 200 and r.headers["x-preroll-model"] == "large"
    assert r.json()["choices"][0]["message"]["content"] == f"[large-upstream] {HISTORY_Q}"

    seen = fakes["small"].requests[-1]
    assert seen["body"]["model"] == "small-upstream"               # the upstream's own model name
    assert seen["authorization"] == "Bearer sk-small-secret"      # key from the environment
    assert fakes["large"].requests[-1]["authorization"] is None   # no key configured, none sent


def test_lambda_per_request_moves_traffic_to_the_cheap_backend(proxy):
    url, fakes, _ = proxy
    assert _chat(url, HISTORY_Q).headers["x-preroll-model"] == "large"
    r = _chat(url, HISTORY_Q, headers={"x-preroll-lambda": "50"})
    assert r.headers["x-preroll-model"] == "small" and r.headers["x-preroll-param"] == "50"
    r = _chat(url, HISTORY_Q, preroll_lambda=50)
    assert r.headers["x-preroll-model"] == "small"
    assert "preroll_lambda" not in fakes["small"].requests[-1]["body"]   # proxy-only fields are stripped
    r = _chat(url, HISTORY_Q, headers={"x-preroll-lambda": "-1"})
    assert r.status_code == 400 and "x-preroll-lambda" in r.json()["error"]["message"]


def test_pinning_a_backend_and_unknown_models(proxy):
    url, _, _ = proxy
    r = _chat(url, MATH_Q, model="large")
    assert r.status_code == 200
    assert r.headers["x-preroll-model"] == "large" and r.headers["x-preroll-decision"] == "pinned"
    r = _chat(url, MATH_Q, model="gpt-5-ultra")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "model" and "gpt-5-ultra" in err["message"]
    assert "small" in err["message"] and "large" in err["message"]
    models = httpx.get(f"{url}/v1/models").json()["data"]
    assert {m["id"] for m in models} == {"auto", "preroll", "small", "large"}


def test_malformed_requests_get_clear_400s(proxy):
    url, _, _ = proxy
    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "auto", "messages": [{"role": "system", "content": "x"}]})
    assert r.status_code == 400 and "no user message" in r.json()["error"]["message"]


def test_streaming_passes_server_sent_events_through(proxy):
    url, _, _ = proxy
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": HISTORY_Q}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-preroll-model"] == "large"
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) >= 3   # really streamed in pieces, not one blob
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == f"[large-upstream] {HISTORY_Q}"


# -- fallback ---------------------------------------------------------------------------


def test_failing_backend_falls_back_to_the_next_best_and_says_so(proxy):
    url, fakes, _ = proxy
    fakes["small"].fail_status = 503
    r = _chat(url, MATH_Q)
    assert r.status_code == 200
    assert r.headers["x-preroll-model"] == "large"
    assert r.headers["x-preroll-fallback"] == "small->large; upstream status 503"
    assert r.json()["choices"][0]["message"]["content"].startswith("[large-upstream]")
    stats = httpx.get(f"{url}/stats").json()
    assert stats["fallbacks"] == {"small->large": 1}


def test_stalled_backend_times_out_and_falls_back(proxy):
    url, fakes, _ = proxy
    fakes["small"].delay_s = 3.0  # timeout_s is 0.5
    t0 = time.perf_counter()
    r = _chat(url, MATH_Q)
    assert r.status_code == 200 and r.headers["x-preroll-model"] == "large"
    assert r.headers["x-preroll-fallback"] == "small->large; timeout after 0.5s"
    assert time.perf_counter() - t0 < 3.0  # did not wait out the stall


def test_streaming_request_falls_back_before_the_first_byte(proxy):
    url, fakes, _ = proxy
    fakes["small"].fail_status = 500
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": MATH_Q}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["x-preroll-model"] == "large"
        assert r.headers["x-preroll-fallback"] == "small->large; upstream status 500"
        assert "[DONE]" in r.read().decode()


def test_pinned_backend_failure_is_reported_not_rerouted(proxy):
    url, fakes, _ = proxy
    fakes["small"].fail_status = 500
    r = _chat(url, MATH_Q, model="small")
    assert r.status_code == 502
    assert r.headers["x-preroll-fallback"] == "small->none; upstream status 500"
    assert "small: upstream status 500" in r.json()["error"]["message"]


def test_all_backends_failing_gives_502_naming_each(proxy):
    url, fakes, _ = proxy
    fakes["small"].fail_status = 500
    fakes["large"].fail_status = 429
    r = _chat(url, MATH_Q)
    assert r.status_code == 502
    msg = r.json()["error"]["message"]
    assert "small: upstream status 500" in msg and "large: upstream status 429" in msg
    assert r.headers["x-preroll-fallback"] == "small->large; upstream status 500, large->none; upstream status 429"


def test_client_errors_from_upstream_pass_through_without_fallback(proxy):
    url, fakes, _ = proxy
    fakes["small"].fail_status = 400
    r = _chat(url, MATH_Q)
    assert r.status_code == 400 and r.headers["x-preroll-model"] == "small"
    assert "x-preroll-fallback" not in r.headers
    assert len(fakes["large"].requests) == 0


def test_stats_count_traffic_and_report_latency_percentiles(proxy):
    url, _, _ = proxy
    for _ in range(3):
        _chat(url, MATH_Q)
    _chat(url, HISTORY_Q)
    _chat(url, MATH_Q, model="large")
    s = httpx.get(f"{url}/stats").json()
    assert s["counts"]["chat_requests"] == 5
    assert s["served_by_model"] == {"small": 3, "large": 2}
    assert s["pinned_by_model"] == {"large": 1}
    lat = s["latency_ms"]
    assert lat["decision_wait_ms"]["n"] == 4 and lat["total_ms"]["n"] == 5 and lat["upstream_ms"]["n"] == 5
    for series in ("decision_ms", "upstream_ms", "total_ms"):
        assert 0 < lat[series]["p50"] <= lat[series]["p99"]
    assert s["router"]["fits"] == 1 and s["router"]["fitted_on"] == {"small": 60, "large": 60}


class GatedHashingEncoder(HashingEncoder):
    """Once armed, its next call blocks until released: the test decides when requests have piled up.

    This is what makes the batching test deterministic: no sleep has to be long
    enough on a busy machine, the router is simply held until the queue is full.
    """

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode(self, texts, *, show_progress=False):
        if self.armed:
            self.armed = False
            self.entered.set()
            assert self.release.wait(30), "test never released the router"
        return super().encode(texts)


def _wait_for(condition, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_concurrent_requests_are_batched_into_router_calls(tmp_path, backends):
    import concurrent.futures

    _, urls = backends
    data = _config_dict(tmp_path, urls, max_batch=8, cache_dir=False)
    for b in data["backends"]:
        # 32 answers at once on a busy machine can take longer than the fallback tests' 0.5 s:
        # a timeout here would be a fallback to 'large', which is not what this test is about.
        b["timeout_s"] = 30
    config = load_config(_write_config(tmp_path, data), environ=ENV)
    encoder = GatedHashingEncoder()
    app = create_app(config, encoder=encoder, environ=ENV)
    routing = app.state.routing
    with serve_in_thread(app) as url:
        encoder.armed = True   # the first router call will hold ...
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(_chat, url, f"{MATH_Q} variant {i}") for i in range(32)]
            assert encoder.entered.wait(30), "no router call started"
            # ... until at least max_batch more prompts wait behind it (16 in flight, <= 8 in that call).
            _wait_for(lambda: routing.queued() >= 8, "8 queued prompts")
            encoder.release.set()
            results = [f.result(timeout=60) for f in futures]
        assert all(r.status_code == 200 and r.headers["x-preroll-model"] == "small" for r in results)
        batch = httpx.get(f"{url}/stats").json()["router_batch_size"]
    assert batch["prompts"] == 32          # every request decided exactly once
    assert batch["max"] == 8               # the queued prompts were decided together, never more than max_batch
    assert batch["n"] < 32
    assert max(int(r.headers["x-preroll-router-batch"]) for r in results) == 8


# -- feedback ---------------------------------------------------------------------------


def test_feedback_is_stored_and_changes_routing_after_refit(tmp_path, backends):
    fakes, urls = backends
    path = _write_config(tmp_path, _config_dict(tmp_path, urls))
    config = load_config(path, environ=ENV)
    # 'small' got better at history: tell the router.
    news = [{"prompt": f"history question {i}: which emperor ruled rome in year {300 + i}",
             "successes": 3, "attempts": 3} for i in range(60)]
    with serve_in_thread(create_app(config, encoder=HashingEncoder(), environ=ENV)) as url:
        before = httpx.post(f"{url}/v1/route", json={"prompt": HISTORY_Q}).json()
        assert before["model"] == "large"
        r = httpx.post(f"{url}/v1/feedback", json={"model": "small", "outcomes": news})
        assert r.status_code == 200, r.text
        assert r.json()["added"] == 60 and r.json()["history_size"] == 120
        assert httpx.post(f"{url}/v1/refit", timeout=30).json()["fitted_on"]["small"] == 120
        after = httpx.post(f"{url}/v1/route", json={"prompt": HISTORY_Q}).json()
        assert after["p_success"]["small"] > before["p_success"]["small"] + 0.2
        assert after["model"] == "small"
    # A fresh server on the same store starts from the updated history (and does not re-import the files).
    with serve_in_thread(create_app(load_config(path, environ=ENV), encoder=HashingEncoder(), environ=ENV)) as url:
        s = httpx.get(f"{url}/stats").json()
        assert s["router"]["fitted_on"] == {"small": 120, "large": 60}
        assert httpx.post(f"{url}/v1/route", json={"prompt": HISTORY_Q}).json()["model"] == "small"


def test_feedback_triggers_a_background_refit_every_n_outcomes(tmp_path, backends):
    _, urls = backends
    config = load_config(_write_config(tmp_path, _config_dict(tmp_path, urls, refit_every=5)), environ=ENV)
    with serve_in_thread(create_app(config, encoder=HashingEncoder(), environ=ENV)) as url:
        for i in range(4):
            r = httpx.post(f"{url}/v1/feedback", json={"model": "large", "prompt": f"new prompt {i}",
                                                       "success_rate": 0.5})
            assert r.json()["refit_started"] is False
        r = httpx.post(f"{url}/v1/feedback", json={"model": "large", "prompt": "new prompt 4", "reward": 1,
                                                   "reward_range": [-1, 1]})
        assert r.json()["refit_started"] is True
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/stats").json()["router"]["fits"] < 2:
            assert time.monotonic() < deadline, "background refit did not finish"
            time.sleep(0.05)
        router = httpx.get(f"{url}/stats").json()["router"]
        assert router["fitted_on"]["large"] == 65 and router["pending_outcomes"] == 0


def test_served_requests_are_logged_and_graded_by_request_id(proxy):
    url, fakes, app = proxy
    store = app.state.store
    fakes["small"].fail_status = 503
    r = _chat(url, MATH_Q)
    rid = r.headers["x-preroll-request-id"]
    n_large = store.count("large")
    g = httpx.post(f"{url}/v1/feedback", json={"request_id": rid, "success_rate": 1.0})
    assert g.status_code == 200, g.text
    assert g.json()["model"] == "large"                 # graded against the backend that really answered
    assert store.count("large") == n_large + 1 and store.records("large")[-1].prompt == MATH_Q
    logged = store.decision(rid)
    assert (logged.how, logged.routed_to, logged.answered_by) == ("routed", "small", "large")
    assert logged.fallback == "small->large; upstream status 503" and set(logged.p_success) == {"small", "large"}
    r = httpx.post(f"{url}/v1/feedback", json={"request_id": "nope", "success_rate": 1.0})
    assert r.status_code == 404
    r = httpx.post(f"{url}/v1/feedback", json={"request_id": rid, "model": "small", "success_rate": 1.0})
    assert r.status_code == 400 and "answered by 'large'" in r.json()["error"]["message"]
    pinned = _chat(url, HISTORY_Q, model="large").headers["x-preroll-request-id"]
    app.state.decision_log.flush()
    assert store.decision(pinned).how == "pinned" and store.decision(pinned).routed_to is None


def test_bad_feedback_is_refused_with_the_field_and_nothing_is_stored(proxy):
    url, _, app = proxy
    store = app.state.store
    n = store.count("small")
    r = httpx.post(f"{url}/v1/feedback", json={"model": "small", "outcomes": [
        {"prompt": "ok", "successes": 1, "attempts": 1},
        {"prompt": "bad", "successes": 3, "attempts": 2}]})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["param"] == "successes" and "outcomes[1]" in err["message"]
    r = httpx.post(f"{url}/v1/feedback", json={"model": "medium", "prompt": "x", "success_rate": 1})
    assert r.status_code == 400 and "medium" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/feedback", json={"model": "small", "prompt": "x", "reward": 3})
    assert r.status_code == 422 and "reward range" in r.json()["error"]["message"]
    assert store.count("small") == n


def test_feedback_cli_adds_a_record_file(tmp_path):
    from typer.testing import CliRunner

    from preroll.cli.main import app
    from preroll.serve.store import HistoryStore

    good = _write_jsonl(tmp_path / "good.jsonl", [{"prompt": f"p{i}", "success_rate": 1.0} for i in range(7)])
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "success_rate": 1.0}, {"prompt": "q"}])
    db = tmp_path / "h.sqlite"
    runner = CliRunner()
    r = runner.invoke(app, ["feedback", "--store", str(db), "--model", "small", str(good)])
    assert r.exit_code == 0, r.output
    assert "added 7 outcomes" in r.output
    r = runner.invoke(app, ["feedback", "--store", str(db), "--model", "small", str(bad)])
    assert r.exit_code == 2
    assert "bad.jsonl" in r.output and "line 2" in r.output
    with HistoryStore(db) as store:
        assert store.count("small") == 7


# -- configuration and start-up errors ---------------------------------------------------


def test_config_paths_are_resolved_against_the_file(tmp_path, backends):
    _, urls = backends
    config = load_config(_write_config(tmp_path, _config_dict(tmp_path, urls)), environ=ENV)
    assert config.store == tmp_path / "state" / "history.sqlite"
    assert config.backend("small").history == [tmp_path / "hist" / "small.jsonl"]
    assert config.backend("small").upstream_model == "small-upstream"


@pytest.mark.parametrize("mutate, field, line_hint", [
    (lambda d: d["backends"][1].update(cost_per_call=None), "backends[1]", None),
    (lambda d: d["backends"][0].update(cost_per_1k_tokens=0.01), "backends[0]", None),
    (lambda d: d["backends"][0].update(base_url="localhost:9"), "backends[0].base_url", None),
    (lambda d: d["backends"][1].update(colour="red"), "backends[1].colour", None),
    (lambda d: d["router"].update(rule="cheapest"), "router.rule", None),
    (lambda d: d["router"].update(threads=0), "router.threads", None),
    (lambda d: d["router"].update(lam=-1), "router.lam", None),
    (lambda d: d["router"].update(confidence=float("inf")), "router.confidence", None),
    (lambda d: d.pop("store"), "store", None),
    (lambda d: d["backends"].append(dict(d["backends"][0])), "backends", None),
    (lambda d: d["backends"][0].update(name="auto"), "backends[0].name", None),
])
def test_config_errors_name_the_field(tmp_path, backends, mutate, field, line_hint):
    _, urls = backends
    data = _config_dict(tmp_path, urls)
    mutate(data)
    path = _write_config(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV)
    assert info.value.field == field
    assert str(path) in str(info.value)
    assert info.value.line is not None


def test_unknown_field_is_reported_at_its_line(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("store: h.sqlite\nbackends:\n  - name: a\n    base_url: http://127.0.0.1:9/v1\n"
                    "    cost_per_call: 1\n    timeout: 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.line, info.value.field) == (6, "backends[0].timeout")
    assert "unknown field" in str(info.value)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("store: h.sqlite\nbackends:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line is not None and "malformed YAML" in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_missing_api_key_variable_and_history_file(tmp_path, backends):
    _, urls = backends
    path = _write_config(tmp_path, _config_dict(tmp_path, urls))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.field == "backends[0].api_key_env" and "PREROLL_TEST_SMALL_KEY" in str(info.value)
    data = _config_dict(tmp_path, urls)
    data["backends"][1]["history"] = ["hist/nope.jsonl"]
    with pytest.raises(ConfigError) as info:
        load_config(_write_config(tmp_path, data), environ=ENV)
    assert info.value.field == "backends[1].history[0]" and "nope.jsonl" in str(info.value)


def test_backend_without_history_is_refused_at_start_up(tmp_path, backends):
    _, urls = backends
    data = _config_dict(tmp_path, urls)
    del data["backends"][1]["history"]
    config = load_config(_write_config(tmp_path, data), environ=ENV)
    with pytest.raises(ConfigError) as info:
        create_app(config, encoder=HashingEncoder(), environ=ENV)
    assert "'large' has no history" in str(info.value) and info.value.field == "backends[1].history"


def test_bad_history_row_is_refused_at_start_up(tmp_path, backends):
    _, urls = backends
    data = _config_dict(tmp_path, urls)
    config = load_config(_write_config(tmp_path, data), environ=ENV)
    (tmp_path / "hist" / "large.jsonl").write_text('{"prompt": "q", "successes": 1}\n')
    with pytest.raises(RecordError) as info:
        create_app(config, encoder=HashingEncoder(), environ=ENV)
    assert info.value.field == "attempts" and info.value.line == 1


def test_unreachable_backend_is_refused_at_start_up(tmp_path, backends):
    import socket

    _, urls = backends
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    data = _config_dict(tmp_path, {"small": urls["small"], "large": dead})
    config = load_config(_write_config(tmp_path, data), environ=ENV)
    with pytest.raises(BackendUnreachableError) as info:
        create_app(config, encoder=HashingEncoder(), environ=ENV)
    msg = str(info.value)
    assert "'large'" in msg and dead in msg and "unreachable" in msg and "'small'" not in msg
    create_app(config, check=False, encoder=HashingEncoder(), environ=ENV)  # the check can be skipped


def test_serve_cli_reports_config_errors_cleanly(tmp_path):
    from typer.testing import CliRunner

    from preroll.cli.main import app

    path = tmp_path / "serve.yaml"
    path.write_text("store: h.sqlite\nbackends: []\n")
    r = CliRunner().invoke(app, ["serve", "--config", str(path)])
    assert r.exit_code == 2
    assert "serve.yaml" in r.output and "backends" in r.output


@pytest.mark.slow
def test_real_default_encoder_end_to_end(tmp_path, backends):
    """The bundled MiniLM encoder behind the real server: semantic routing over HTTP."""
    _, urls = backends
    data = _config_dict(tmp_path, urls, encoder="minilm", cache_dir="cache")
    config = load_config(_write_config(tmp_path, data), environ=ENV)
    with serve_in_thread(create_app(config, environ=ENV)) as url:
        r = _chat(url, "math question: add 12 and 30 then multiply by 2", timeout=60)
        assert r.status_code == 200 and r.headers["x-preroll-model"] == "small"
        r = _chat(url, "history question: which emperor ruled rome after Nero", timeout=60)
        assert r.status_code == 200 and r.headers["x-preroll-model"] == "large"
        assert float(r.headers["x-preroll-router-ms"]) > 0


@pytest.mark.slow
def test_refit_keeps_the_neural_encoder_and_renews_the_fitted_views(tmp_path):
    """A refit must not reload MiniLM, but the lexical view must be refitted on the new history."""
    urls = {"small": "http://127.0.0.1:9", "large": "http://127.0.0.1:9"}
    data = _config_dict(tmp_path, urls, encoder="minilm+lexical", cache_dir="cache")
    app = create_app(load_config(_write_config(tmp_path, data), environ=ENV), check=False, environ=ENV)
    routing = app.state.routing
    try:
        before = routing.router
        routing.store.add("small", [Outcome(prompt="history question: who followed Tiberius", successes=1, attempts=1)])
        routing.refit()
        after = routing.router
        assert after is not before and after.n_history_["small"] == before.n_history_["small"] + 1
        neural_before, lexical_before = before.encoder_.encoders
        neural_after, lexical_after = after.encoder_.encoders
        assert neural_after is neural_before
        assert lexical_after is not lexical_before and lexical_after.name != lexical_before.name
        assert before.route([HISTORY_Q])[0].model == "large"  # the old router still works after the swap
    finally:
        routing.store.close()


def test_router_setting_the_router_refuses_is_a_config_error(tmp_path, backends):
    _, urls = backends
    config = load_config(_write_config(tmp_path, _config_dict(tmp_path, urls, head="nonsense")), environ=ENV)
    with pytest.raises(ConfigError, match="nonsense"):
        create_app(config, encoder=HashingEncoder(), environ=ENV)


def test_bad_encoder_spec_is_a_config_error_naming_the_field(tmp_path, backends):
    _, urls = backends
    config = load_config(_write_config(tmp_path, _config_dict(tmp_path, urls, encoder="  ")), environ=ENV)
    with pytest.raises(ConfigError) as info:
        create_app(config, environ=ENV)
    assert info.value.field == "router.encoder" and "encoder spec" in str(info.value)


def test_serve_cli_runs_the_proxy_until_stopped(tmp_path, backends):
    """`preroll serve` as a user runs it: a separate process, a lexical encoder, SIGTERM to stop."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    _, urls = backends
    config = _write_config(tmp_path, _config_dict(tmp_path, urls, encoder="lexical", cache_dir=False))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "preroll.cli.main", "serve", "--config", str(config),
                             "--port", str(port)], env={**os.environ, **ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "proxy did not come up"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        r = _chat(url, MATH_Q, model="large")
        assert r.status_code == 200 and r.headers["x-preroll-model"] == "large"
        r = _chat(url, HISTORY_Q)
        assert r.status_code == 200 and r.headers["x-preroll-decision"] == "routed"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -signal.SIGTERM), out
    from preroll.serve.store import HistoryStore

    with HistoryStore(tmp_path / "state" / "history.sqlite") as store:
        assert store.decision_count() == 2   # both decisions reached the store
