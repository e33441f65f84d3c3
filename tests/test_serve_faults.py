"""``preroll serve`` under faults: bad Unicode, a full store, unsendable backend names, broken or runaway upstreams.

Each case here was a 500, a reset connection or an unbounded relay before; each
now gets a JSON answer a client can act on, and the proxy keeps routing.
"""

from __future__ import annotations

import json

import httpx
import pytest
import yaml
from test_serve import (  # noqa: F401  (fixtures are used by name)
    ENV,
    HISTORY_Q,
    MATH_Q,
    HashingEncoder,
    _chat,
    _config_dict,
    _write_config,
    backends,
)

from preroll.data import Outcome
from preroll.serve.app import create_app
from preroll.serve.config import ConfigError, load_config
from preroll.serve.store import HistoryStore
from preroll.serve.testing import serve_in_thread


@pytest.fixture(autouse=True)
def _reset_fakes(request):
    yield
    if "backends" in request.fixturenames:
        for fake in request.getfixturevalue("backends")[0].values():
            fake.fail_status, fake.delay_s, fake.raw_body, fake.raw_status, fake.pad_bytes = None, 0.0, None, 200, 0
            fake.requests.clear()


def _app(tmp_path, urls, **sections):
    data = _config_dict(tmp_path, urls)
    data.update(sections)
    config = load_config(_write_config(tmp_path, data), environ=ENV)
    return create_app(config, encoder=HashingEncoder(), environ=ENV)


@pytest.fixture
def proxy(tmp_path, backends):
    fakes, urls = backends
    app = _app(tmp_path, urls)
    with serve_in_thread(app) as url:
        yield url, fakes, app


@pytest.fixture
def capped(tmp_path, backends):
    """A proxy relaying at most 64 KiB from an upstream."""
    fakes, urls = backends
    app = _app(tmp_path, urls, limits={"max_upstream_bytes": 65536})
    with serve_in_thread(app) as url:
        yield url, fakes, app


def _post_raw(url, path, raw: bytes):
    return httpx.post(f"{url}{path}", content=raw, headers={"content-type": "application/json"}, timeout=10)


def _error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
    assert "Traceback" not in r.text
    return body["error"]


# -- lone surrogates -------------------------------------------------------------------------------

# JSON's \ud800 escape decodes to a Python string UTF-8 cannot encode (the probe's "x\ud800").
SURROGATE_CASES = [
    ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "user", "content": "x\\ud800"}]}',
     "messages[0].content"),
    ("/v1/chat/completions", b'{"model": "small", "messages": [{"role": "user", "content": "x\\ud800"}]}',
     "messages[0].content"),
    ("/v1/chat/completions", b'{"model": "auto", "messages": [{"role": "user", "content": "fine"}], '
                             b'"user": "\\udfff"}', "user"),
    ("/v1/route", b'{"prompt": "x\\ud800"}', "prompt"),
    ("/v1/feedback", b'{"model": "small", "prompt": "x\\ud800", "successes": 1, "attempts": 1}', "prompt"),
    ("/v1/feedback", b'{"model": "small", "outcomes": [{"prompt": "ok", "successes": 1, "attempts": 1}, '
                     b'{"prompt": "x\\ud800y", "successes": 1, "attempts": 1}]}', "outcomes[1].prompt"),
    ("/v1/feedback", b'{"model": "small", "prompt": "ok", "successes": 1, "attempts": 1, "x\\ud800": 1}', "body"),
]


@pytest.mark.parametrize("path, raw, param", SURROGATE_CASES)
def test_lone_surrogates_are_refused_with_400_naming_the_field(proxy, path, raw, param):
    url, fakes, app = proxy
    before = app.state.store.count()
    error = _error(_post_raw(url, path, raw), 400)
    assert error["param"] == param and error["code"] == "invalid_unicode"
    assert app.state.store.count() == before                         # nothing stored
    assert not fakes["small"].requests and not fakes["large"].requests  # nothing forwarded
    assert _chat(url, MATH_Q).status_code == 200                     # and the proxy serves on


def test_paired_surrogates_are_ordinary_text(proxy):
    url, fakes, _ = proxy
    r = _post_raw(url, "/v1/chat/completions",
                  b'{"model": "small", "messages": [{"role": "user", "content": "smile \\ud83d\\ude00"}]}')
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].endswith("smile \U0001F600")


# -- a full store --------------------------------------------------------------------------------------


def _fill(store: HistoryStore) -> None:
    """Cap the file at its current size and use up its free space: the next write fails with SQLITE_FULL."""
    import sqlite3

    conn = store._conn
    with store._lock:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        for size in (4096, 512, 64, 8, 1):
            while True:
                try:
                    conn.execute("INSERT INTO filler VALUES (?)", (b"f" * size,))
                except sqlite3.OperationalError:
                    break


def _unfill(store: HistoryStore) -> None:
    store._conn.execute("PRAGMA max_page_count=1073741823")


def test_a_full_store_answers_507_and_routing_keeps_serving(proxy):
    url, fakes, app = proxy
    store = app.state.store
    before = {m: store.count(m) for m in ("small", "large")}
    served = _chat(url, HISTORY_Q + " " + "w" * 3000)   # long, so grading it needs a new page
    assert served.status_code == 200
    app.state.decision_log.flush()
    _fill(store)
    big = {"model": "small", "successes": 1, "attempts": 1}
    for i in range(3):  # every attempt, not only the first, gets a JSON answer
        r = httpx.post(f"{url}/v1/feedback", json={**big, "prompt": f"new prompt {i} " + "w" * 3000}, timeout=10)
        error = _error(r, 507)
        assert error["code"] == "store_full" and "full" in error["message"]
    rows = [{"prompt": f"batch {i} " + "w" * 2000, "successes": 0, "attempts": 1} for i in range(5)]
    _error(httpx.post(f"{url}/v1/feedback", json={"model": "large", "outcomes": rows}, timeout=10), 507)
    rid = served.headers["x-preroll-request-id"]
    _error(httpx.post(f"{url}/v1/feedback", json={"request_id": rid, "success_rate": 1}, timeout=10), 507)

    # Routing needs no write: chat, route, stats, models and health keep answering.
    assert _chat(url, MATH_Q).headers["x-preroll-model"] == "small"
    assert httpx.post(f"{url}/v1/route", json={"prompt": HISTORY_Q}).json()["model"] == "large"
    stats = httpx.get(f"{url}/stats").json()
    assert stats["errors"]["507 store_full"] == 5
    assert httpx.get(f"{url}/health").status_code == 200

    assert {m: store.count(m) for m in ("small", "large")} == before   # nothing half-written
    _unfill(store)   # space comes back: the same server stores again, on the same connection
    r = httpx.post(f"{url}/v1/feedback", json={**big, "prompt": "after the disk was freed"}, timeout=10)
    assert r.status_code == 200 and r.json()["added"] == 1
    assert store.count("small") == before["small"] + 1


def test_store_write_on_a_full_database_raises_its_own_error_and_stays_usable(tmp_path):
    from preroll.serve.errors import StoreError, StoreUnavailableError

    store = HistoryStore(tmp_path / "h.sqlite")
    store.add("m", [Outcome(prompt="kept", successes=1, attempts=1)])
    _fill(store)
    with pytest.raises(StoreUnavailableError) as info:
        store.add("m", [Outcome(prompt="x" * 20000, successes=1, attempts=1)])
    assert info.value.full and isinstance(info.value, StoreError)
    assert "full" in str(info.value) and "no transaction is active" not in str(info.value)
    assert [o.prompt for o in store.records("m")] == ["kept"]
    _unfill(store)
    store.add("m", [Outcome(prompt="later", successes=1, attempts=1)])
    assert [o.prompt for o in store.records("m")] == ["kept", "later"]
    store.close()


# -- backend names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "tab\tname", "with space", "x,y", "semi;colon", "é-model",
                                  "-leading", "n" * 129])
def test_backend_names_that_cannot_travel_in_a_header_are_config_errors(tmp_path, backends, name):
    _, urls = backends
    data = _config_dict(tmp_path, urls)
    data["backends"][0]["name"] = name
    with pytest.raises(ConfigError) as info:
        load_config(_write_config(tmp_path, data), environ=ENV)
    message = str(info.value)
    assert "backends[0].name" in message and "\n" not in message and "serve.yaml" in message


def test_usual_backend_names_are_accepted(tmp_path, backends):
    _, urls = backends
    data = _config_dict(tmp_path, urls)
    data["backends"][0]["name"] = "meta-llama/Llama-3.1-8B-Instruct@v2:fast"
    data["backends"][1]["name"] = "gpt_4o+mini"
    config = load_config(_write_config(tmp_path, data), environ=ENV)
    assert config.backend_names == ["meta-llama/Llama-3.1-8B-Instruct@v2:fast", "gpt_4o+mini"]


def test_serve_cli_refuses_a_newline_in_a_backend_name_in_one_line(tmp_path, backends, monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from preroll.cli.main import app

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: started.append(a))   # never block if it gets that far
    _, urls = backends
    data = _config_dict(tmp_path, urls)
    data["backends"][1]["name"] = "a\nb"
    path = _write_config(tmp_path, data)
    r = CliRunner().invoke(app, ["serve", "--config", str(path), "--no-check-backends"], env=ENV)
    assert r.exit_code == 2 and not started, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "backends[1].name" in lines[0] and "Traceback" not in r.output


# -- broken upstream answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"not json at all {", b"", b"[1, 2, 3]", b'"a string"', b'{"choices": [',
                                 b"\xff\xfe binary"])
def test_an_upstream_success_that_is_not_a_json_object_is_a_502(proxy, raw):
    url, fakes, _ = proxy
    fakes["small"].raw_body = raw
    error = _error(_chat(url, MATH_Q, model="small"), 502)   # pinned: no one else to ask
    assert error["code"] == "all_backends_failed" and "small" in error["message"]
    r = _chat(url, MATH_Q)                                   # routed: the next backend answers
    assert r.status_code == 200 and r.headers["x-preroll-model"] == "large"
    assert r.headers["x-preroll-fallback"].startswith("small->large;")
    fakes["large"].raw_body = raw
    _error(_chat(url, MATH_Q), 502)


def test_a_stream_request_answered_with_one_broken_body_is_a_502(proxy):
    """An upstream may ignore ``stream`` and answer one body: it is checked like a non-streamed answer."""
    url, fakes, _ = proxy
    fakes["small"].raw_body = b"<html>502 Bad Gateway</html>"
    error = _error(_chat(url, MATH_Q, model="small", stream=True), 502)
    assert error["code"] == "all_backends_failed"
    r = _chat(url, MATH_Q, stream=True)                       # routed: the next backend streams
    assert r.status_code == 200 and r.headers["x-preroll-model"] == "large"
    assert r.headers["content-type"].startswith("text/event-stream")
    fakes["small"].raw_body = b'{"id": "x", "choices": []}'   # one valid JSON body: passed on as JSON
    r = _chat(url, MATH_Q, model="small", stream=True)
    assert r.status_code == 200 and r.json() == {"id": "x", "choices": []}


def test_an_upstream_client_error_that_is_not_json_is_wrapped(proxy):
    url, fakes, _ = proxy
    fakes["small"].raw_body, fakes["small"].raw_status = b"<html>bad request</html>", 400
    error = _error(_chat(url, MATH_Q, model="small"), 400)
    assert error["code"] == "upstream_error" and "bad request" in error["message"]
    assert len(fakes["large"].requests) == 0                 # a client error is not retried elsewhere


def test_an_oversized_upstream_answer_is_cut_at_the_limit_with_a_502(capped):
    url, fakes, _ = capped
    fakes["small"].pad_bytes = 1_000_000                     # limits.max_upstream_bytes is 64 KiB here
    for model in ("small", "auto"):
        error = _error(_chat(url, MATH_Q, model=model), 502)
        assert error["code"] == "upstream_too_large" and "max_upstream_bytes" in error["message"]
    assert len(fakes["large"].requests) == 0                 # the same request would be as long elsewhere
    fakes["small"].pad_bytes = 1000                          # under the limit: relayed whole
    r = _chat(url, MATH_Q, model="small")
    assert r.status_code == 200 and len(r.json()["padding"]) == 1000
    stats = httpx.get(f"{url}/stats").json()
    assert stats["errors"]["upstream_too_large"] == 2


def test_an_oversized_stream_ends_with_an_error_event(capped):
    url, fakes, _ = capped
    fakes["small"].pad_bytes = 1_000_000
    body = {"model": "small", "stream": True, "messages": [{"role": "user", "content": MATH_Q}]}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_bytes())
    assert len(raw) < 65536 + 4096
    last = [line for line in raw.decode("utf-8", "replace").splitlines() if line.startswith("data: ")][-1]
    assert json.loads(last[len("data: "):])["error"]["code"] == "upstream_too_large"


def test_upstream_limit_is_a_config_field(tmp_path):
    data = {"store": "h.sqlite", "limits": {"max_upstream_bytes": 10},
            "backends": [{"name": "a", "base_url": "http://127.0.0.1:1/v1", "cost_per_call": 1}]}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="limits.max_upstream_bytes"):
        load_config(path)


def test_an_embedding_cache_that_cannot_be_written_does_not_stop_routing(tmp_path, backends):
    """The embedding cache often shares the store's disk: when it cannot be written, routing still answers.

    (A read-only database here: unlike a page cap, it refuses every write, so the test is deterministic.)
    """
    from preroll.encoders import CachedEncoder

    fakes, urls = backends
    data = _config_dict(tmp_path, urls)
    encoder = CachedEncoder(HashingEncoder(), tmp_path / "cache")
    app = create_app(load_config(_write_config(tmp_path, data), environ=ENV), encoder=encoder, environ=ENV)
    with serve_in_thread(app) as url:
        assert _chat(url, MATH_Q).status_code == 200
        cached = encoder.cached_count()
        encoder._conn.execute("PRAGMA query_only=ON")   # every write now fails: "attempt to write a readonly database"
        for i in range(3):
            r = _chat(url, f"math question {200 + i}: add {i} and 7 then multiply")   # new prompts: a cache miss
            assert r.status_code == 200, r.text
            assert r.headers["x-preroll-model"] == "small"
        assert encoder.cached_count() == cached                           # nothing half-written either
