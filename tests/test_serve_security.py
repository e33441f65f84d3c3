"""``preroll serve`` facing a network: auth, Host/Origin, size limits, bounded feedback, errors, breakers.

Every server here binds 127.0.0.1; every loop is bounded; the circuit
breakers run on an injected clock, so nothing waits on wall time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx
import pytest
from test_serve import (  # noqa: F401  (fixtures are used by name)
    ENV,
    HISTORY_Q,
    MATH_Q,
    HashingEncoder,
    _chat,
    _config_dict,
    _reset_backends,
    _write_config,
    _write_jsonl,
    backends,
)

from preroll.data import Outcome
from preroll.serve.app import create_app
from preroll.serve.breaker import CircuitBreakers
from preroll.serve.config import ConfigError, load_config
from preroll.serve.errors import ServeSetupError, StoreError
from preroll.serve.exposure import check_exposure
from preroll.serve.security import Guard
from preroll.serve.store import HistoryStore
from preroll.serve.testing import serve_in_thread

TOKEN = "test-token-0123456789abcdef"
AUTH_ENV = {**ENV, "PREROLL_TEST_TOKEN": TOKEN}
AUTH = {"authorization": f"Bearer {TOKEN}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _app(tmp_path, urls, *, environ=ENV, check=None, clock=None, **sections):
    data = _config_dict(tmp_path, urls)
    for key, value in sections.items():
        data[key] = value
    config = load_config(_write_config(tmp_path, data), environ=environ)
    kwargs = {} if clock is None else {"clock": clock}
    return create_app(config, encoder=HashingEncoder(), environ=environ, check=check, **kwargs)


@pytest.fixture
def locked(tmp_path, backends):
    """A proxy that requires a bearer token: (url, fakes, app)."""
    fakes, urls = backends
    app = _app(tmp_path, urls, environ=AUTH_ENV, server={"auth_token_env": "PREROLL_TEST_TOKEN"})
    with serve_in_thread(app) as url:
        yield url, fakes, app


@pytest.fixture
def small_limits(tmp_path, backends):
    fakes, urls = backends
    app = _app(tmp_path, urls, limits={"max_body_bytes": 4096, "max_prompt_chars": 2000, "route_prefix_chars": 64,
                                       "max_attempts": 100, "max_outcomes": 5, "max_json_depth": 8})
    with serve_in_thread(app) as url:
        yield url, fakes, app


# -- authentication --------------------------------------------------------------------------


def test_every_endpoint_but_health_needs_the_bearer_token(locked):
    url, fakes, app = locked
    calls = [("GET", "/stats", None), ("GET", "/v1/models", None),
             ("POST", "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": MATH_Q}]}),
             ("POST", "/v1/route", {"prompt": MATH_Q}), ("POST", "/v1/refit", {}),
             ("POST", "/v1/feedback", {"model": "small", "prompt": "x", "success_rate": 1})]
    n_small = app.state.store.count("small")
    for method, path, body in calls:
        for headers in ({}, {"authorization": "Bearer wrong-token-0123456789ab"}, {"authorization": TOKEN}):
            r = httpx.request(method, f"{url}{path}", json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    assert app.state.store.count("small") == n_small            # nothing got through
    assert httpx.get(f"{url}/health").status_code == 200         # liveness needs no secret
    for method, path, body in calls:
        r = httpx.request(method, f"{url}{path}", json=body, headers=AUTH, timeout=30)
        assert r.status_code == 200, (path, r.text)
    # The client's token is the proxy's business: the upstream sees its own key (or none), never the token.
    assert fakes["small"].requests[-1]["authorization"] == "Bearer sk-small-secret"
    assert httpx.get(f"{url}/stats", headers=AUTH).json()["counts"]["refused_auth"] == 18


def test_token_variable_must_be_set_and_long_enough(tmp_path, backends):
    _, urls = backends
    data = {**_config_dict(tmp_path, urls), "server": {"auth_token_env": "PREROLL_TEST_TOKEN"}}
    path = _write_config(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=ENV)
    assert info.value.field == "server.auth_token_env" and "PREROLL_TEST_TOKEN" in str(info.value)
    with pytest.raises(ConfigError, match="at least 16"):
        load_config(path, environ={**ENV, "PREROLL_TEST_TOKEN": "short"})
    data["server"] = {"auth_token_env": "my secret token"}   # a token pasted where the NAME belongs
    with pytest.raises(ConfigError) as info:
        load_config(_write_config(tmp_path, data), environ=ENV)
    assert info.value.field == "server.auth_token_env" and "NAME" in str(info.value)


def test_a_public_address_needs_a_token_and_its_host_names(tmp_path, backends):
    _, urls = backends
    open_cfg = load_config(_write_config(tmp_path, _config_dict(tmp_path, urls)), environ=ENV)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_exposure(open_cfg, host)
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        with pytest.raises(ServeSetupError) as info:
            check_exposure(open_cfg, host)
        assert info.value.field == "server.auth_token_env"
    data = {**_config_dict(tmp_path, urls), "server": {"auth_token_env": "PREROLL_TEST_TOKEN"}}
    locked_cfg = load_config(_write_config(tmp_path, data), environ=AUTH_ENV)
    with pytest.raises(ServeSetupError) as info:
        check_exposure(locked_cfg, "0.0.0.0")
    assert info.value.field == "server.allowed_hosts"
    data["server"]["allowed_hosts"] = ["proxy.internal"]
    check_exposure(load_config(_write_config(tmp_path, data), environ=AUTH_ENV), "0.0.0.0")


def test_serve_cli_refuses_a_public_address_without_a_token_in_one_line(tmp_path, backends):
    from typer.testing import CliRunner

    from preroll.cli.main import app

    _, urls = backends
    path = _write_config(tmp_path, _config_dict(tmp_path, urls))
    r = CliRunner().invoke(app, ["serve", "--config", str(path), "--host", "0.0.0.0"], env=ENV)
    assert r.exit_code == 2
    out = " ".join(r.output.split())
    assert "refusing to listen on 0.0.0.0" in out and "server.auth_token_env" in out and "Traceback" not in out


# -- Host and Origin -------------------------------------------------------------------------


def test_foreign_host_and_cross_origin_posts_are_refused(proxy_with_origin):
    url, app = proxy_with_origin
    store = app.state.store
    n = store.count("small")
    fb = {"model": "small", "prompt": "poison", "successes": 1, "attempts": 1}
    r = httpx.post(f"{url}/v1/feedback", json=fb, headers={"origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"]["param"] == "origin"
    r = httpx.post(f"{url}/v1/feedback", json=fb, headers={"origin": "null"})       # sandboxed iframe, file://
    assert r.status_code == 403
    r = httpx.post(f"{url}/v1/feedback", json=fb, headers={"host": "evil.example"})  # DNS rebinding
    assert r.status_code == 400 and r.json()["error"]["code"] == "host_not_allowed"
    assert httpx.get(f"{url}/health", headers={"host": "evil.example:8000"}).status_code == 400
    assert store.count("small") == n
    r = httpx.post(f"{url}/v1/feedback", json=fb, headers={"origin": "https://dashboard.example"})
    assert r.status_code == 200, r.text                                             # the configured origin
    assert httpx.post(f"{url}/v1/feedback", json=fb).status_code == 200             # no Origin: not a browser
    assert httpx.get(f"{url}/health", headers={"host": "localhost:8000"}).status_code == 200


@pytest.fixture
def proxy_with_origin(tmp_path, backends):
    _, urls = backends
    app = _app(tmp_path, urls, server={"allowed_origins": ["https://dashboard.example/"]})
    with serve_in_thread(app) as url:
        yield url, app


# -- size limits -----------------------------------------------------------------------------


def test_oversized_bodies_get_413_before_being_read(small_limits):
    url, fakes, app = small_limits
    big = {"model": "auto", "messages": [{"role": "user", "content": "x" * 10_000}]}
    r = httpx.post(f"{url}/v1/chat/completions", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():  # no Content-Length: the cap is enforced while streaming
        yield b'{"model": "auto", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(f"{url}/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"]["message"]
    assert len(fakes["small"].requests) == len(fakes["large"].requests) == 0
    stats = httpx.get(f"{url}/stats").json()
    assert stats["counts"]["refused_body_too_large"] == 2 and stats["counts"].get("chat_requests", 0) == 0


def test_body_cap_stops_reading_a_chunked_upload(tmp_path):
    """Guard alone: a 100-chunk upload is abandoned after the chunk that crosses the cap."""
    reached_app = []

    async def app(scope, receive, send):
        reached_app.append(True)

    guard = Guard(app, token=None, allowed_hosts=["127.0.0.1"], allowed_origins=[], max_body_bytes=4096)
    read, sent = [], []

    async def receive():
        read.append(1)
        return {"type": "http.request", "body": b"z" * 1000, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/feedback", "headers": [(b"host", b"127.0.0.1:1")]}
    asyncio.run(guard(scope, receive, send))
    assert len(read) == 5 and not reached_app
    assert sent[0]["status"] == 413 and json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"


def test_long_prompts_are_refused_and_routed_and_stored_by_their_prefix(small_limits):
    url, fakes, app = small_limits
    r = _chat(url, MATH_Q + " " + "y" * 2500)
    assert r.status_code == 413 and r.json()["error"]["param"] == "messages"
    long_math = MATH_Q + " " + " ".join(["history emperor rome"] * 80)   # 1.7k chars, history words after 64
    assert len(long_math) < 2000
    r = _chat(url, long_math)
    assert r.status_code == 200 and r.headers["x-preroll-model"] == "small"   # decided on the first 64 chars
    fakes_body = fakes["small"].requests[-1]["body"]
    assert fakes_body["messages"][-1]["content"] == long_math                  # the upstream gets it whole
    app.state.decision_log.flush()
    logged = app.state.store.decision(r.headers["x-preroll-request-id"])
    assert logged.prompt == long_math[:64]
    g = httpx.post(f"{url}/v1/feedback", json={"model": "large", "prompt": long_math, "success_rate": 1})
    assert g.status_code == 200 and app.state.store.records("large")[-1].prompt == long_math[:64]
    r = httpx.post(f"{url}/v1/route", json={"prompt": "q" * 2001})
    assert r.status_code == 413 and r.json()["error"]["param"] == "prompt"


# -- feedback bounds and idempotency ---------------------------------------------------------


def test_feedback_rows_are_bounded(small_limits):
    url, _, app = small_limits
    store = app.state.store
    n = store.count("small")
    cases = [({"prompt": "p", "successes": 1e6, "attempts": 1e6}, 422, "attempts"),
             ({"prompt": "p", "successes": 101, "attempts": 101}, 422, "attempts"),
             ({"prompt": "p", "successes": 3, "attempts": 2}, 422, "successes"),
             ({"prompt": "p", "success_rate": 1, "step": 1e20}, 422, "step"),
             ({"prompt": "p", "success_rate": 1, "step": 2 ** 63}, 422, "step"),
             ({"prompt": "p", "success_rate": True, "attempts": [1]}, 422, "attempts"),
             ({"prompt": 7, "success_rate": 1}, 422, "prompt")]
    for row, status, param in cases:
        r = httpx.post(f"{url}/v1/feedback", json={"model": "small", **row})
        assert (r.status_code, r.json()["error"]["param"]) == (status, param), (row, r.text)
    r = httpx.post(f"{url}/v1/feedback", content=b'{"model": "small", "prompt": "p", "successes": NaN, "attempts": 1}')
    assert r.status_code == 400 and r.json()["error"]["param"] == "successes"
    rows = [{"prompt": f"p{i}", "success_rate": 1} for i in range(6)]
    r = httpx.post(f"{url}/v1/feedback", json={"model": "small", "outcomes": rows})
    assert r.status_code == 413 and r.json()["error"]["param"] == "outcomes"
    assert store.count("small") == n
    ok = httpx.post(f"{url}/v1/feedback", json={"model": "small", "prompt": "p", "successes": 100, "attempts": 100,
                                                "step": 2 ** 63 - 1})
    assert ok.status_code == 200 and store.count("small") == n + 1


def test_grading_the_same_request_again_replaces_its_row(proxy_plain):
    url, app = proxy_plain
    store = app.state.store
    rid = _chat(url, HISTORY_Q).headers["x-preroll-request-id"]
    n = store.count("large")
    first = httpx.post(f"{url}/v1/feedback", json={"request_id": rid, "success_rate": 1.0}).json()
    assert (first["added"], first["updated"]) == (1, 0)
    for _ in range(2):
        again = httpx.post(f"{url}/v1/feedback", json={"request_id": rid, "successes": 1, "attempts": 4}).json()
        assert (again["added"], again["updated"]) == (0, 1)
    assert store.count("large") == n + 1                       # three grades, one row
    last = store.records("large")[-1]
    assert (last.prompt, last.successes, last.attempts) == (HISTORY_Q, 1.0, 4.0)   # the latest grade
    r = httpx.post(f"{url}/v1/feedback", json={"request_id": 12345, "success_rate": 1.0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "request_id"


@pytest.fixture
def proxy_plain(tmp_path, backends):
    _, urls = backends
    app = _app(tmp_path, urls)
    with serve_in_thread(app) as url:
        yield url, app


_OLD_SCHEMA = """
CREATE TABLE outcomes (seq INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, prompt TEXT NOT NULL,
    successes REAL NOT NULL, attempts REAL NOT NULL, policy TEXT, step INTEGER, record_id TEXT,
    added_at REAL NOT NULL);
CREATE INDEX outcomes_by_model ON outcomes (model, seq);
"""


def test_a_store_from_before_request_ids_is_migrated_without_loss(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as c:
        c.executescript(_OLD_SCHEMA)
        c.executemany("INSERT INTO outcomes (model, prompt, successes, attempts, step, added_at) "
                      "VALUES (?, ?, ?, ?, ?, 0)", [("m", f"old {i}", 1.0, 2.0, i) for i in range(5)])
    with HistoryStore(path) as store:
        assert [r.prompt for r in store.records("m")] == [f"old {i}" for i in range(5)]
        assert store.grade("m", Outcome(prompt="new", successes=1, attempts=1), "rid-1") is True
        assert store.grade("m", Outcome(prompt="new", successes=0, attempts=1), "rid-1") is False
        assert store.count("m") == 6 and store.records("m")[-1].successes == 0
    with HistoryStore(path) as store:   # reopening an up-to-date store changes nothing
        assert store.count("m") == 6
    with sqlite3.connect(path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == 2
        with pytest.raises(sqlite3.IntegrityError):
            c.execute("INSERT INTO outcomes (model, prompt, successes, attempts, added_at, request_id) "
                      "VALUES ('m', 'dup', 1, 1, 0, 'rid-1')")


def test_store_refuses_non_sqlite_files_and_huge_steps(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("these are not the rows you are looking for\n" * 100)
    with pytest.raises(StoreError) as info:
        HistoryStore(text)
    assert "notes.txt" in str(info.value) and "SQLite" in str(info.value)
    with HistoryStore(tmp_path / "h.sqlite") as store:
        with pytest.raises(StoreError) as info:
            store.add("m", [Outcome(prompt="p", successes=1, attempts=1, step=10 ** 20)])
        assert info.value.field == "step" and store.count() == 0


def test_feedback_cli_reports_bad_model_store_and_step_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from preroll.cli.main import app

    runner = CliRunner()
    good = _write_jsonl(tmp_path / "good.jsonl", [{"prompt": "p", "success_rate": 1.0}])
    huge = _write_jsonl(tmp_path / "huge.jsonl", [{"prompt": "p", "success_rate": 1.0},
                                                  {"prompt": "q", "success_rate": 1.0, "step": 1e20}])
    not_db = tmp_path / "notes.txt"
    not_db.write_text("plain text, not SQLite\n" * 50)
    db = tmp_path / "h.sqlite"
    for args, expect in [(["--store", str(db), "--model", "", str(good)], "--model is empty"),
                         (["--store", str(not_db), "--model", "m", str(good)], "not a usable SQLite"),
                         (["--store", str(db), "--model", "m", str(huge)], "step")]:
        r = runner.invoke(app, ["feedback", *args])
        assert r.exit_code == 2, (args, r.output)
        assert expect in r.output and "Traceback" not in r.output
    assert "huge.jsonl" in runner.invoke(app, ["feedback", "--store", str(db), "--model", "m", str(huge)]).output
    with HistoryStore(db) as store:
        assert store.count() == 0   # the bad file stored nothing


# -- one error shape -------------------------------------------------------------------------


@pytest.mark.parametrize("raw, param, code", [
    (b'{"model": "auto", "temperature": NaN, "messages": [{"role": "user", "content": "q"}]}', "temperature",
     "non_finite_number"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": "q", "x": [1e999]}]}', "messages[0].x[0]",
     "non_finite_number"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}',
     "messages[0].content[0].text", "invalid_request"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": ["hi"]}]}', "messages[0].content[0]",
     "invalid_request"),
    (b'{"model": "auto", "messages": [{"role": "user", "content": 12}]}', "messages[0].content", "invalid_request"),
    (b'{"model": "auto", "messages": ["hi"]}', "messages[0]", "invalid_request"),
    (b'{"model": "auto", "messages": [{"role": 1, "content": "q"}]}', "messages[0].role", "invalid_request"),
    (b'{"model": ["auto"], "messages": [{"role": "user", "content": "q"}]}', "model", "invalid_request"),
    (b'{"model": "auto", "stream": "yes", "messages": [{"role": "user", "content": "q"}]}', "stream",
     "invalid_request"),
    (b'{"model": "auto", "preroll_lambda": 1' + b"0" * 400 + b', "messages": [{"role": "user", "content": "q"}]}',
     "preroll_lambda", "invalid_request"),
    (b'{"a": ' + b"[" * 20 + b"]" * 20 + b"}", "a" + "[0]" * 7, "too_deep"),
])
def test_bad_bodies_are_4xx_naming_the_field(small_limits, raw, param, code):
    url, _, _ = small_limits
    r = httpx.post(f"{url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert (err["param"], err["code"]) == (param, code), err


def test_deep_nesting_past_the_decoder_and_huge_integers(proxy_plain):
    url, _ = proxy_plain
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"x": 1' + b"1" * 5000 + b"}"):
        r = httpx.post(f"{url}/v1/route", content=raw)
        assert r.status_code == 400 and r.json()["error"]["param"] == "body", r.text
    r = httpx.post(f"{url}/v1/feedback", json={"model": "small", "prompt": "p", "reward": 0.5,
                                               "reward_range": [0, 10 ** 400]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "reward_range"


def test_unknown_paths_and_internal_errors_keep_the_error_shape(proxy_plain, monkeypatch):
    url, app = proxy_plain
    r = httpx.get(f"{url}/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.get(f"{url}/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.json()

    def broken():
        raise RuntimeError("secret internal detail at /srv/preroll/key.pem")

    monkeypatch.setattr(app.state.routing, "status", broken)
    r = httpx.get(f"{url}/stats")
    assert r.status_code == 500
    assert r.json() == {"error": {"message": "internal server error", "type": "server_error", "param": None,
                                  "code": "internal_error"}}
    assert "secret" not in r.text and "Traceback" not in r.text


# -- circuit breakers ------------------------------------------------------------------------


def test_breaker_opens_after_n_failures_and_probes_once_after_the_cooldown():
    clock = FakeClock()
    b = CircuitBreakers(["a"], failures=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert b.acquire("a")
        b.failure("a")
    assert b.acquire("a") and b.state("a") == "closed"
    b.success("a")                                   # a success resets the count
    for _ in range(3):
        assert b.acquire("a")
        b.failure("a")
    assert b.state("a") == "open" and not b.acquire("a")
    clock.now += 9.9
    assert not b.acquire("a") and b.retry_in("a") == pytest.approx(0.1)
    clock.now += 0.1
    assert b.state("a") == "half_open"
    assert b.acquire("a")                            # the probe
    assert not b.acquire("a")                        # only one at a time
    b.failure("a")                                   # probe failed: open again, full cooldown
    assert b.state("a") == "open" and b.retry_in("a") == 10
    clock.now += 10
    assert b.acquire("a")
    b.release("a")                                   # probe abandoned: the slot is free again
    assert b.acquire("a")
    b.success("a")
    assert b.state("a") == "closed" and b.acquire("a") and b.acquire("a")
    snap = b.snapshot()["a"]
    assert (snap["state"], snap["opens"], snap["skipped"]) == ("closed", 2, 3)


def test_an_open_circuit_skips_the_dead_top_choice_instantly(tmp_path, backends):
    fakes, urls = backends
    clock = FakeClock()
    app = _app(tmp_path, urls, clock=clock, breaker={"failures": 2, "cooldown_s": 30})
    with serve_in_thread(app) as url:
        fakes["small"].fail_status = 503
        for _ in range(2):
            r = _chat(url, MATH_Q)
            assert r.headers["x-preroll-fallback"] == "small->large; upstream status 503"
        tried = len(fakes["small"].requests)
        r = _chat(url, MATH_Q)
        assert r.status_code == 200 and r.headers["x-preroll-model"] == "large"
        assert r.headers["x-preroll-fallback"] == "small->large; circuit open"
        assert len(fakes["small"].requests) == tried              # not even a connection
        br = httpx.get(f"{url}/stats").json()["breakers"]
        assert br["small"]["state"] == "open" and br["small"]["retry_in_s"] == 30 and br["large"]["state"] == "closed"
        r = _chat(url, MATH_Q, model="small")                     # a pin is not rerouted: fail fast
        assert r.status_code == 503 and r.headers["retry-after"] == "30"
        assert "small: circuit open" in r.json()["error"]["message"]
        clock.now += 30
        fakes["small"].fail_status = None                         # it came back
        r = _chat(url, MATH_Q)                                    # the half-open probe
        assert r.headers["x-preroll-model"] == "small" and "x-preroll-fallback" not in r.headers
        assert httpx.get(f"{url}/stats").json()["breakers"]["small"]["state"] == "closed"


def test_an_unreachable_backend_stops_costing_connection_attempts(tmp_path, backends):
    import socket

    _, urls = backends
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    clock = FakeClock()
    app = _app(tmp_path, {"small": dead, "large": urls["large"]}, check=False, clock=clock,
               breaker={"failures": 1, "cooldown_s": 5})
    with serve_in_thread(app) as url:
        r = _chat(url, MATH_Q)
        assert r.headers["x-preroll-model"] == "large" and "ConnectError" in r.headers["x-preroll-fallback"]
        for _ in range(3):
            assert _chat(url, MATH_Q).headers["x-preroll-fallback"] == "small->large; circuit open"
        clock.now += 5
        r = _chat(url, MATH_Q)                                    # one probe, it fails, the circuit re-opens
        assert "ConnectError" in r.headers["x-preroll-fallback"]
        assert _chat(url, MATH_Q).headers["x-preroll-fallback"] == "small->large; circuit open"
        small = httpx.get(f"{url}/stats").json()["breakers"]["small"]
        assert (small["state"], small["opens"], small["skipped"]) == ("open", 2, 4)
