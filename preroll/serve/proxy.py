"""Forward a chat request to a backend, falling back down the router's ranking on failure.

A failure is anything another backend could fix: a connection error, a
timeout, HTTP 408/429 or 5xx. A client error from the upstream (any other
4xx) is passed back unchanged, since a different model would refuse the same
request. For streams the proxy waits for the upstream's first chunk before it
commits: until then a failing backend can still be replaced; after it, the
bytes pass straight through.

Every outcome feeds the backend's circuit breaker (:mod:`.breaker`): a backend
whose circuit is open is skipped without a connection attempt, so a dead
top-ranked backend costs a request nothing instead of a timeout.

What comes back is checked before it is passed on. A non-streamed success
must be a JSON object (an OpenAI answer): anything else is the backend
failing, so the next backend is tried and, if none answers, the client gets a
502 JSON error instead of the garbage. Every answer is read as a stream and
held to ``limits.max_upstream_bytes``: past it the read stops (a 502, or an
error event ending a stream already under way), so one runaway upstream
cannot make the proxy hold hundreds of megabytes. An upstream client error
(4xx) whose body is not JSON is rewrapped in the proxy's own error shape.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse

from preroll.serve.breaker import CircuitBreakers
from preroll.errors import ServeError
from preroll.serve.config import BackendConfig
from preroll.serve.errors import error_body, error_response
from preroll.serve.stats import ServeStats

#: Upstream statuses worth retrying on another backend.
RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))

#: Upstream response headers that must not be copied (hop-by-hop, or describing a body we re-encode).
_DROP_HEADERS = frozenset({"content-length", "content-encoding", "transfer-encoding", "connection",
                           "keep-alive", "date", "server"})


class UpstreamFailure(ServeError):
    """One backend failed in a way the next backend may not (caught inside the proxy, never shown to a user)."""

    def __init__(self, reason: str, *, timed_out: bool = False) -> None:
        # The reason travels in a response header: one line of printable ASCII, bounded.
        reason = " ".join(reason.split()).encode("ascii", "replace").decode("ascii")[:200]
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out


class UpstreamTooLarge(ServeError):
    """A backend's answer passed ``limits.max_upstream_bytes``: not relayed, and not retried elsewhere.

    Another backend would most likely answer the same request at the same length
    (the request asked for it), so this ends the request instead of falling back,
    and it gives the backend's breaker no verdict.
    """


def _fallback_header(hops: list[str]) -> dict[str, str]:
    return {"x-preroll-fallback": ", ".join(hops)} if hops else {}


class Forwarder:
    """Sends chat requests upstream over one pooled :class:`httpx.AsyncClient`."""

    def __init__(self, backends: list[BackendConfig], api_keys: dict[str, str | None], stats: ServeStats,
                 breakers: CircuitBreakers, *, max_body_bytes: int = 16 * 1024 * 1024) -> None:
        self.backends = {b.name: b for b in backends}
        self.max_body_bytes = max_body_bytes
        self.api_keys = api_keys
        self.stats = stats
        self.breakers = breakers
        # No connection cap: queueing here would show up as spurious timeouts and fallbacks.
        # Idle connections are dropped after 2 s, before common server keep-alive timeouts
        # (uvicorn's is 5 s): reusing one the server is closing fails the request.
        self.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=256,
                                                            keepalive_expiry=2.0))

    async def aclose(self) -> None:
        await self.client.aclose()

    async def forward(self, body: dict[str, Any], ranking: list[str], *, stream: bool, pinned: bool,
                      headers: dict[str, str]) -> Response:
        """Try ``ranking`` in order; answer with the first backend that does not fail.

        ``headers`` are added to the response (the decision's); the chosen
        backend and any fallbacks are added here.
        """
        hops: list[str] = []  # "from->to; reason" per fallback
        failures: list[str] = []
        last_timed_out = False
        all_open = True  # every backend was skipped by its breaker
        retry_after = None
        for i, name in enumerate(ranking):
            backend = self.backends[name]
            nxt = ranking[i + 1] if i + 1 < len(ranking) else None
            if not self.breakers.acquire(name):
                wait = self.breakers.retry_in(name)
                retry_after = wait if retry_after is None else min(retry_after, wait)
                hops.append(f"{name}->{nxt or 'none'}; circuit open")
                failures.append(f"{name}: circuit open")
                last_timed_out = False
                self.stats.fallback(name, nxt)
                self.stats.count("circuit_skips")
                continue
            all_open = False
            try:
                response = await (self._stream(backend, body) if stream else self._once(backend, body))
            except UpstreamFailure as exc:
                self.breakers.failure(name)
                hops.append(f"{name}->{nxt or 'none'}; {exc.reason}")
                failures.append(f"{name}: {exc.reason}")
                last_timed_out = exc.timed_out
                self.stats.fallback(name, nxt)
                continue
            except UpstreamTooLarge as exc:
                self.breakers.release(name)
                self.stats.error("upstream_too_large")
                hops.append(f"{name}->none; answer too large")
                return JSONResponse(
                    error_body(f"backend {name!r} {exc}; not relayed", code="upstream_too_large",
                               kind="upstream_error"),
                    status_code=502, headers={**headers, **_fallback_header(hops)})
            except BaseException:  # cancelled (client gone) or a bug: no verdict on the backend
                self.breakers.release(name)
                raise
            self.breakers.success(name)
            self.stats.served(name, pinned=pinned)
            response.headers.update({**headers, "x-preroll-model": name, **_fallback_header(hops)})
            return response
        self.stats.error("all_backends_failed")
        status = 503 if all_open else 504 if last_timed_out else 502
        extra = {"retry-after": str(max(1, round(retry_after)))} if all_open and retry_after is not None else {}
        return JSONResponse(
            {"error": {"message": "no backend could answer: " + "; ".join(failures),
                       "type": "upstream_error", "code": "all_backends_failed"}},
            status_code=status, headers={**headers, **_fallback_header(hops), **extra})

    def _request(self, backend: BackendConfig, body: dict[str, Any]) -> httpx.Request:
        payload = {**body, "model": backend.upstream_model}
        req_headers = {"content-type": "application/json"}
        key = self.api_keys.get(backend.name)
        if key:
            req_headers["authorization"] = f"Bearer {key}"
        return self.client.build_request("POST", f"{backend.base_url}/chat/completions", json=payload,
                                         headers=req_headers, timeout=backend.timeout_s)

    async def _once(self, backend: BackendConfig, body: dict[str, Any]) -> Response:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(backend.timeout_s):
                upstream = await self.client.send(self._request(backend, body), stream=True)
                try:
                    if upstream.status_code in RETRYABLE_STATUS:
                        raise UpstreamFailure(f"upstream status {upstream.status_code}")
                    content = await _read_bounded(upstream, self.max_body_bytes)
                finally:
                    await upstream.aclose()
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamFailure(f"timeout after {backend.timeout_s:g}s", timed_out=True) from None
        except httpx.HTTPError as exc:
            raise UpstreamFailure(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        self.stats.latency("upstream_ms", (time.perf_counter() - t0) * 1000)
        return _checked_response(upstream, content)

    async def _stream(self, backend: BackendConfig, body: dict[str, Any]) -> Response:
        t0 = time.perf_counter()
        upstream: httpx.Response | None = None
        try:
            async with asyncio.timeout(backend.timeout_s):
                upstream = await self.client.send(self._request(backend, body), stream=True)
                if upstream.status_code in RETRYABLE_STATUS:
                    await upstream.aclose()
                    raise UpstreamFailure(f"upstream status {upstream.status_code}")
                sse = upstream.headers.get("content-type", "").startswith("text/event-stream")
                if upstream.status_code >= 400 or not sse:
                    # A client error, or an upstream that answered a stream request with one body:
                    # read it (bounded) and check it like a non-streamed answer.
                    try:
                        content = await _read_bounded(upstream, self.max_body_bytes)
                    finally:
                        await upstream.aclose()
                    return _checked_response(upstream, content)
                chunks = upstream.aiter_bytes()
                first = await anext(chunks, b"")
        except (UpstreamFailure, UpstreamTooLarge):
            raise
        except (TimeoutError, httpx.TimeoutException):
            if upstream is not None:
                await upstream.aclose()
            raise UpstreamFailure(f"timeout after {backend.timeout_s:g}s", timed_out=True) from None
        except httpx.HTTPError as exc:
            if upstream is not None:
                await upstream.aclose()
            raise UpstreamFailure(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        self.stats.latency("upstream_ms", (time.perf_counter() - t0) * 1000)
        return StreamingResponse(_relay(first, chunks, upstream, self.stats, self.max_body_bytes, sse=True),
                                 status_code=upstream.status_code, headers=_copy_headers(upstream))


async def _relay(first: bytes, rest: AsyncIterator[bytes], upstream: httpx.Response, stats: ServeStats,
                 limit: int, *, sse: bool) -> AsyncIterator[bytes]:
    """Pass a stream through; a break after the first chunk can only end it early (headers are sent).

    Past ``limit`` bytes the stream is cut; a server-sent-event stream then ends
    with an ``error`` event (what OpenAI clients raise on), so the client is not
    left taking a cut answer for a whole one.
    """
    size = 0
    try:
        async for chunk in _chain(first, rest):
            size += len(chunk)
            if size > limit:
                stats.error("upstream_too_large")
                if sse:
                    message = f"the answer passed limits.max_upstream_bytes ({limit} bytes); the stream was cut"
                    yield f"\n\ndata: {json.dumps(error_body(message, code='upstream_too_large', kind='upstream_error'))}\n\n".encode()
                return
            yield chunk
    except httpx.HTTPError:
        stats.error("stream_broken_mid_response")
    finally:
        await upstream.aclose()


async def _chain(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def _read_bounded(upstream: httpx.Response, limit: int) -> bytes:
    """The (decoded) body, read until ``limit`` bytes and no further."""
    length = upstream.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise UpstreamTooLarge(f"announced {int(length)} bytes, over limits.max_upstream_bytes ({limit})")
    parts: list[bytes] = []
    size = 0
    async for chunk in upstream.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise UpstreamTooLarge(f"answered more than limits.max_upstream_bytes ({limit} bytes)")
        parts.append(chunk)
    return b"".join(parts)


def _checked_response(upstream: httpx.Response, content: bytes) -> Response:
    """The upstream's answer to pass on: a success must be a JSON object; a client error is kept in JSON."""
    status = upstream.status_code
    try:
        parsed = json.loads(content)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the decoder
        parsed = None
    if isinstance(parsed, dict):
        return Response(content, status_code=status, headers=_copy_headers(upstream))
    if status < 400:
        what = "a body that is not JSON" if parsed is None else f"JSON {type(parsed).__name__}, not an object"
        raise UpstreamFailure(f"upstream status {status} with {what}")
    snippet = " ".join(content[:200].decode("utf-8", "replace").split())
    return error_response(status, f"upstream answered HTTP {status}: {snippet or '(empty body)'}",
                          code="upstream_error")


def _copy_headers(upstream: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in _DROP_HEADERS}
