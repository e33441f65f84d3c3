"""The proxy's front door: Host and Origin checks, a bearer token, and a body-size cap.

It is plain ASGI middleware rather than FastAPI dependencies because every
check must happen *before* the body is read: an unauthenticated client, a web
page in someone's browser (a cross-origin POST carries an ``Origin`` header;
a DNS-rebinding page carries a foreign ``Host``), or a 100 MB upload must not
cost the server more than reading the headers. The body is read here with a
running cap (this also bounds chunked uploads, which have no
``Content-Length``) and handed to the app already in memory.
"""

from __future__ import annotations

import hmac
from typing import Awaitable, Callable, Iterable

from preroll.serve.errors import error_response

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

#: Paths that need no token: a load balancer's liveness probe must not hold the secret.
OPEN_PATHS = frozenset({"/health"})


def host_name(host: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class Guard:
    """ASGI middleware enforcing the ``server:`` and ``limits.max_body_bytes`` settings.

    ``on_reject(kind)`` is called for every refused request (for ``/stats``).
    """

    def __init__(self, app, *, token: str | None, allowed_hosts: Iterable[str], allowed_origins: Iterable[str],
                 max_body_bytes: int, on_reject: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
        self.allowed_hosts = frozenset(allowed_hosts)
        self.allowed_origins = frozenset(allowed_origins)
        self.max_body_bytes = max_body_bytes
        self.on_reject = on_reject or (lambda kind: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await self._refuse(scope, receive, send, *refusal)
            return
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            body = await self._read_body(receive)
            if body is None:
                await self._refuse(scope, receive, send, *self._too_large())
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple | None:
        host = headers.get("host")
        if host is None or ("*" not in self.allowed_hosts and host_name(host) not in self.allowed_hosts):
            return (400, f"host {host!r} is not in server.allowed_hosts", "host", "host_not_allowed", "host", {})
        origin = headers.get("origin")
        if origin is not None and origin.strip().lower().rstrip("/") not in self.allowed_origins:
            return (403, f"origin {origin!r} is not in server.allowed_origins (cross-origin requests are refused)",
                    "origin", "origin_not_allowed", "origin", {})
        if self.token is not None and scope.get("path") not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token):
                return (401, "missing or wrong bearer token (Authorization: Bearer <token>)", "authorization",
                        "invalid_api_key", "auth", {"www-authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return (400, f"bad content-length {length!r}", "content-length", "invalid_request", "bad_length", {})
            if int(length) > self.max_body_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> tuple:
        return (413, f"request body exceeds limits.max_body_bytes ({self.max_body_bytes} bytes)", "body",
                "request_too_large", "body_too_large", {})

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or ``None`` as soon as it passes the cap (the rest is never read)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(parts)

    async def _refuse(self, scope, receive, send, status, message, param, code, kind, headers) -> None:
        self.on_reject(kind)
        if status == 413:
            headers = {**headers, "connection": "close"}  # the unread rest of the body is not wanted
        await error_response(status, message, param=param, code=code, headers=headers)(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the buffered body once, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
