"""The proxy's HTTP surface under generated requests: refusals in JSON, never a 500 or a traceback.

A small sample of :mod:`preroll.serve.fuzzing` for CI (seconds);
``benchmarks/fuzz_http.py`` runs the same harness for >= 10,000 cases.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from preroll.serve.fuzzing import (
    AUTH,
    MAX_UPSTREAM_BYTES,
    FuzzTarget,
    HttpCase,
    problem,
    requests,
    schema_requests,
    send,
)

_SETTINGS = {"database": None, "deadline": None, "phases": [Phase.generate], "derandomize": True,
             "suppress_health_check": list(HealthCheck)}


@pytest.fixture(scope="module")
def target():
    with FuzzTarget() as client:
        yield client


def _check(client, case: HttpCase) -> None:
    r = send(client, case)
    what = problem(r.status_code, r.headers, r.content, max_bytes=MAX_UPSTREAM_BYTES)
    assert what is None, f"{what}: {case!r} -> {r.status_code} {r.content[:300]!r}"


@settings(max_examples=100, **_SETTINGS)
@given(case=requests())
def test_generated_requests_are_answered_or_refused_in_json(target, case):
    _check(target, case)


@settings(max_examples=60, **_SETTINGS)
@given(case=requests(endpoints=[("POST", "/v1/chat/completions")], broken_upstream=0.6))
def test_chat_requests_over_a_misbehaving_upstream_are_answered_in_json(target, case):
    _check(target, case)


def test_schema_derived_requests_are_answered_or_refused_in_json(target):
    @settings(max_examples=50, **_SETTINGS)
    @given(case=schema_requests(target.app))
    def run(case):
        _check(target, case)

    run()


def test_the_proxy_still_routes_after_the_fuzzing(target):
    r = target.post("/v1/chat/completions", headers={"authorization": AUTH},
                    json={"model": "auto", "messages": [{"role": "user", "content": "math question 3: add 3 and 6"}]})
    assert r.status_code == 200 and r.headers["x-preroll-model"] in ("small", "large")
    stats = target.get("/stats", headers={"authorization": AUTH}).json()
    assert not any(key.startswith("500") for key in stats["errors"])


@pytest.mark.parametrize("status, headers, content, broken", [
    (200, {"content-type": "application/json"}, b'{"ok": 1}', False),
    (404, {}, b'{"error": {"message": "no such path"}}', False),
    (507, {}, b'{"error": {"message": "the store is full"}}', False),
    (200, {"content-type": "text/event-stream"}, b"data: [DONE]\n\n", False),
    (500, {}, b'{"error": {"message": "internal server error"}}', True),
    (501, {}, b'{"error": {"message": "x"}}', True),
    (400, {}, b"Internal Server Error", True),
    (400, {}, b'{"detail": "bad"}', True),
    (422, {}, b'{"error": {"message": "Traceback (most recent call last):"}}', True),
    (200, {}, b"", True),
])
def test_the_rule_catches_what_it_must(status, headers, content, broken):
    assert (problem(status, headers, content) is not None) == broken
