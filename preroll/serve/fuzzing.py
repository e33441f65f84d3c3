"""A fuzz harness for the proxy's HTTP surface: generated requests, one rule for every answer.

The rule (:func:`problem`): a request may be refused, never crash the server.
Every answer is a 2xx, a 4xx, or an upstream/store status (502, 503, 504,
507); every non-streamed body is JSON, and every error has the one error
shape; no answer is a 500 or carries a traceback.

:func:`requests` generates whole requests (method, path, headers, body) with
hypothesis: well-formed chat, route and feedback bodies with fields swapped for
odd values (wrong types, non-finite numbers, lone surrogates, huge integers,
long and empty text, unknown models), arbitrary JSON, raw bytes, deep
nesting, and odd headers (``x-preroll-lambda``, ``content-type``, bearer
tokens, ``Origin``), and one upstream that now and then misbehaves
(:data:`UPSTREAM_MODES`: not JSON, a JSON list, a cut body, an HTML 400, an
answer past the size limit, a 503). :class:`FuzzTarget` runs a real proxy app in process (a
:class:`starlette.testclient.TestClient`) in front of two fake upstreams on
loopback (:mod:`preroll.serve.testing`), with a bearer token and the lexical
encoder, so each case costs milliseconds.

Used by ``tests/test_serve_fuzz.py`` (a small sample) and
``benchmarks/fuzz_http.py`` (>= 10,000 cases). Needs hypothesis (the ``dev``
extra).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from preroll.serve.testing import FakeBackend, create_fake_backend_app, serve_in_thread

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = f"Bearer {TOKEN}"

#: Statuses an answer may have besides 2xx and 4xx: the upstream failed (502, 504), a breaker or the
#: store is unavailable (503), the store is full (507).
SERVER_SIDE_OK = frozenset({502, 503, 504, 507})

ENDPOINTS = [("POST", "/v1/chat/completions"), ("POST", "/v1/route"), ("POST", "/v1/feedback"),
             ("GET", "/stats"), ("GET", "/v1/models"), ("GET", "/health"), ("POST", "/v1/refit")]

#: Endpoints drawn in 1% of the cases: a refit takes no body and costs a whole fit (~0.5 s).
_RARE = frozenset({("POST", "/v1/refit")})

_MATH = [f"math question {i}: add {i} and {i + 3} then multiply" for i in range(20)]
_HISTORY = [f"history question {i}: which emperor ruled rome in year {100 + i}" for i in range(20)]


#: How the "small" upstream behaves during one case: as it should, or broken in one of the ways a real one is.
UPSTREAM_MODES = {
    "ok": {},
    "not_json": {"raw_body": b"<html>502 Bad Gateway</html>"},
    "json_list": {"raw_body": b"[1, 2]"},
    "truncated": {"raw_body": b'{"choices": [{"message": {"content": "cut'},
    "html_400": {"raw_body": b"<html>bad request</html>", "raw_status": 400},
    "oversized": {"pad_bytes": 200_000},
    "failing": {"fail_status": 503},
}
_UPSTREAM_DEFAULTS = {"raw_body": None, "raw_status": 200, "pad_bytes": 0, "fail_status": None}


@dataclass
class HttpCase:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    upstream: str = "ok"  # a key of UPSTREAM_MODES

    def __repr__(self) -> str:
        body = None if self.body is None else self.body[:300]
        return f"HttpCase({self.method} {self.path}, headers={self.headers}, body={body!r}, upstream={self.upstream})"


# -- strategies --------------------------------------------------------------------------------------------

_surrogate = st.sampled_from(["\ud800", "x\udfff", "a\ud83d", "\udc00b", "math question\ud800"])
_text = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "\n", "\x00", "é", "😀", "auto", "small"]),
                  _surrogate, _surrogate, st.integers(1000, 1700).map(lambda n: "ab " * n))  # long, cheap to draw
_number = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 0.5, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, 1e308]))
_scalar = st.one_of(st.none(), st.booleans(), _number, _text)
_json = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(_text, inner, max_size=4)), max_leaves=12)


def _maybe(good: st.SearchStrategy, clean: bool) -> st.SearchStrategy:
    """A valid value in a clean case; in a dirty one mostly valid, sometimes anything at all."""
    return good if clean else st.one_of(good, good, good, _json)


#: Request ids of requests the target served at start-up, so feedback by request id can succeed.
KNOWN_REQUEST_IDS: list[str] = []

_prompt = st.sampled_from(_MATH + _HISTORY)
_content_parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _prompt}), min_size=1, max_size=2)


def _messages(clean: bool) -> st.SearchStrategy:
    content = st.one_of(_prompt, _content_parts) if clean else st.one_of(_prompt, _text, st.lists(
        st.fixed_dictionaries({"type": _maybe(st.just("text"), False), "text": _maybe(_text, False)}),
        max_size=3), _json)
    role = st.sampled_from(["user", "system", "assistant"])
    message = st.fixed_dictionaries({"role": st.just("user") if clean else _maybe(role, False),
                                     "content": content})
    return st.lists(message, min_size=1, max_size=3) if clean else _maybe(
        st.lists(st.one_of(message, _json), min_size=1, max_size=4), False)


@st.composite
def _chat_body(draw) -> Any:
    clean = draw(st.booleans())
    models = ["auto", "preroll", "small", "large"] + ([] if clean else ["nope", ""])
    body = {"model": draw(_maybe(st.sampled_from(models), clean)), "messages": draw(_messages(clean))}
    extras = {"stream": st.booleans(), "preroll_lambda": st.floats(0, 10), "temperature": st.floats(0, 2),
              "max_tokens": st.integers(1, 100), "user": st.text(max_size=10)}
    for key in draw(st.lists(st.sampled_from(sorted(extras)), max_size=2, unique=True)):
        body[key] = draw(_maybe(extras[key], clean))
    if not clean:
        for key in draw(st.lists(st.sampled_from(list(body)), max_size=2)):
            body.pop(key, None)
    return body


@st.composite
def _route_body(draw) -> Any:
    clean = draw(st.booleans())
    body: dict[str, Any] = draw(st.one_of(st.fixed_dictionaries({"prompt": _maybe(_prompt, clean)}),
                                          st.fixed_dictionaries({"messages": _messages(clean)})))
    if draw(st.booleans()):
        body["lambda"] = draw(_maybe(st.floats(0, 10), clean))
    return body


@st.composite
def _outcome(draw, clean: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"prompt": draw(_maybe(_prompt, clean))}
    kind = draw(st.sampled_from(["counts", "rate", "reward"]))
    if kind == "counts":
        attempts = draw(st.integers(1, 4))
        row.update(successes=draw(_maybe(st.integers(0, attempts), clean)), attempts=draw(_maybe(st.just(attempts),
                                                                                                  clean)))
    elif kind == "rate":
        row["success_rate"] = draw(_maybe(st.floats(0, 1), clean))
    else:
        row["reward"] = draw(_maybe(st.floats(0, 1), clean) if clean else _number)
    optional = {"step": st.integers(0, 10), "policy": st.sampled_from(["p1", "p2"]), "id": st.text(max_size=8)}
    for key in draw(st.lists(st.sampled_from(sorted(optional)), max_size=2, unique=True)):
        row[key] = draw(_maybe(optional[key], clean))
    return row


@st.composite
def _feedback_body(draw) -> Any:
    clean = draw(st.booleans())
    model = _maybe(st.sampled_from(["small", "large"] if clean else ["small", "large", "auto", "nope"]), clean)
    kind = draw(st.sampled_from(["one", "many", "request_id"]))
    if kind == "one":
        body = {"model": draw(model), **draw(_outcome(clean))}
    elif kind == "many":
        body = {"model": draw(model), "outcomes": draw(_maybe(st.lists(_outcome(clean), min_size=1, max_size=4),
                                                              clean))}
    else:
        rid = st.integers(0, 7).map(lambda i: KNOWN_REQUEST_IDS[i % len(KNOWN_REQUEST_IDS)]
                                    if KNOWN_REQUEST_IDS else "none")
        body = {"request_id": draw(_maybe(rid, clean)), "success_rate": draw(_maybe(st.floats(0, 1), clean))}
    if "reward" in body or (kind == "many" and draw(st.booleans())) or draw(st.integers(0, 4)) == 0:
        body["reward_range"] = draw(_maybe(st.just([0, 1]), clean) if clean
                                    else _maybe(st.lists(_number, min_size=2, max_size=2), False))
    return body


def _encode(value: Any) -> bytes:
    # ensure_ascii: lone surrogates travel as \ud800 escapes, as a client's JSON encoder would send them.
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


_raw = st.one_of(st.binary(max_size=64), st.sampled_from([
    b"", b"{", b"null", b"[]", b'"text"', b"NaN", b'{"a": 1e999}', b'{"model": "auto"', b"\xff\xfe\x00",
    b"[" * 5000 + b"]" * 5000, b"[" * 40 + b"]" * 40, b'{"n": ' + b"9" * 5000 + b"}"]))


def _body_for(path: str) -> st.SearchStrategy:
    structured = {"/v1/chat/completions": _chat_body(), "/v1/route": _route_body(),
                  "/v1/feedback": _feedback_body()}.get(path, st.fixed_dictionaries({}))
    return st.one_of(structured.map(_encode), structured.map(_encode), structured.map(_encode),
                     _json.map(_encode), _raw)


_header_value = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
_HEADERS = {
    "x-preroll-lambda": st.one_of(st.sampled_from(["0", "1", "-1", "nan", "inf", "1e999", "abc", ""]),
                                  _header_value),
    "content-type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "application/json; charset=latin-1"]),
    "authorization": st.one_of(st.just("Bearer wrong"), st.just(""), st.just(f"bearer  {TOKEN} "), st.just(TOKEN),
                               _header_value),
    "origin": st.sampled_from(["http://evil.example", "null", "http://127.0.0.1"]),
    "accept-encoding": st.sampled_from(["gzip", "br", "identity", "*"]),
}


@st.composite
def _headers(draw) -> dict[str, str]:
    """The right token, and now and then one odd header (so most requests still reach the endpoint)."""
    headers = {"authorization": AUTH}
    for name, values in _HEADERS.items():
        if draw(st.integers(0, 11)) == 0:
            headers[name] = draw(values)
    if headers["authorization"] == "":
        del headers["authorization"]
    return headers


@st.composite
def requests(draw, endpoints: list[tuple[str, str]] = ENDPOINTS, broken_upstream: float = 0.25) -> HttpCase:
    """One generated request against one of ``endpoints`` (or a near miss: an odd method or path).

    In a share ``broken_upstream`` of the cases the "small" upstream misbehaves (:data:`UPSTREAM_MODES`).
    """
    rare = [e for e in endpoints if e in _RARE]
    common = [e for e in endpoints if e not in _RARE] or rare
    pick = rare if rare and draw(st.integers(0, 99)) == 0 else common
    method, path = draw(st.sampled_from(pick))
    roll = draw(st.integers(0, 19))
    if roll == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    elif roll == 1:
        path = draw(st.sampled_from(["/", "/v1", "/v1/chat", "/v2/chat/completions", "/stats/", "/v1/models/x",
                                     "/v1/feedback?x=1", "/%00", "/v1/route/../stats"]))
    headers = draw(_headers())
    body = draw(_body_for(path)) if method in ("POST", "PUT", "PATCH") else None
    broken = draw(st.floats(0, 1, exclude_max=True)) < broken_upstream
    upstream = draw(st.sampled_from(sorted(set(UPSTREAM_MODES) - {"ok"}))) if broken else "ok"
    return HttpCase(method, path, headers, body, upstream)


# -- the rule -------------------------------------------------------------------------------------------------


#: ``limits.max_upstream_bytes`` of the target: no answer may be much longer.
MAX_UPSTREAM_BYTES = 65536


def problem(status: int, headers: Any, content: bytes, *, max_bytes: int | None = None) -> str | None:
    """What is wrong with an answer, or ``None`` if it keeps the rule (and, given ``max_bytes``, is not longer)."""
    if max_bytes is not None and len(content) > max_bytes + 4096:
        return f"{len(content)} bytes relayed, over the {max_bytes}-byte upstream limit"
    if status == 500 or status > 599 or (status >= 500 and status not in SERVER_SIDE_OK):
        return f"status {status}"
    if b"Traceback" in content or b'File "' in content:
        return "traceback in the body"
    if headers.get("content-type", "").startswith("text/event-stream"):
        return None if status == 200 else f"event stream with status {status}"
    try:
        body = json.loads(content)
    except ValueError:
        return f"status {status} with a body that is not JSON: {content[:80]!r}"
    if status >= 400:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict) or not isinstance(error.get("message"), str):
            return f"status {status} without the error shape: {content[:120]!r}"
    return None


# -- the target -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def FuzzTarget(workdir: str | Path | None = None) -> Iterator[Any]:
    """A running proxy (in process) over two fake upstreams; yields a ``TestClient`` whose answers go to :func:`problem`."""
    import yaml
    from starlette.testclient import TestClient

    from preroll.serve.app import create_app
    from preroll.serve.config import load_config

    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="preroll-fuzz-"))
        root = Path(workdir)
        urls, fakes = {}, {}
        for name in ("small", "large"):
            fakes[name] = FakeBackend(f"{name}-up")
            urls[name] = stack.enter_context(serve_in_thread(create_fake_backend_app(fakes[name])))
        rows = {"small": [(p, 1) for p in _MATH] + [(p, 0) for p in _HISTORY],
                "large": [(p, 1) for p in _MATH + _HISTORY]}
        for name, pairs in rows.items():
            (root / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p, "successes": s, "attempts": 1}) + "\n"
                                                        for p, s in pairs))
        config = {
            "store": "fuzz.sqlite", "check_backends": False,
            "router": {"encoder": "lexical", "rule": "utility", "lam": 0.5, "refit_every": 200, "cache_dir": False},
            "server": {"auth_token_env": "PREROLL_FUZZ_TOKEN"},
            "limits": {"max_body_bytes": 65536, "max_upstream_bytes": MAX_UPSTREAM_BYTES},
            "breaker": {"failures": 5, "cooldown_s": 0.5},
            "backends": [{"name": n, "base_url": f"{urls[n]}/v1", "cost_per_call": c, "timeout_s": 5,
                          "history": f"{n}.jsonl"} for n, c in (("small", 0.1), ("large", 1.0))]}
        path = root / "serve.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {"PREROLL_FUZZ_TOKEN": TOKEN}
        app = create_app(load_config(path, environ=env), environ=env)
        client = stack.enter_context(TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False))
        client.fakes = fakes
        KNOWN_REQUEST_IDS.clear()
        for prompt in (_MATH + _HISTORY)[::5]:
            r = client.post("/v1/chat/completions", headers={"authorization": AUTH},
                            json={"model": "auto", "messages": [{"role": "user", "content": prompt}]})
            KNOWN_REQUEST_IDS.append(r.headers["x-preroll-request-id"])
        yield client


def send(client: Any, case: HttpCase):
    """Set the "small" upstream's behaviour, send one case; return the response (a stream is read to its end)."""
    fake = client.fakes["small"]
    for key, value in {**_UPSTREAM_DEFAULTS, **UPSTREAM_MODES[case.upstream]}.items():
        setattr(fake, key, value)
    fake.requests.clear()
    return client.request(case.method, case.path, headers=case.headers, content=case.body)


def schema_requests(app: Any) -> st.SearchStrategy:
    """Requests schemathesis derives from the app's own OpenAPI schema, valid and invalid, as :class:`HttpCase`.

    The schema is read from ``app.openapi()`` rather than fetched through
    schemathesis' ASGI loader, which would run the app's lifespan a second
    time on another event loop.
    """
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_dict(app.openapi())
    strategies = [result.ok().as_strategy(generation_mode=mode)
                  for result in schema.get_all_operations()
                  for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]

    def to_case(case: Any) -> HttpCase:
        kw = case.as_transport_kwargs(base_url="http://127.0.0.1")
        headers = {k: str(v) for k, v in (kw.get("headers") or {}).items()
                   if k.lower() not in ("user-agent", "connection", "x-schemathesis-testcaseid")}
        headers.setdefault("authorization", AUTH)
        if "json" in kw:
            body = _encode(kw["json"])
        else:
            raw = kw.get("content", kw.get("data"))
            body = raw.encode() if isinstance(raw, str) else raw if isinstance(raw, bytes) else None
        path = kw["url"].removeprefix("http://127.0.0.1")
        return HttpCase(kw["method"], path, headers, body)

    return st.one_of(strategies).map(to_case)
