"""The FastAPI app behind ``preroll serve``.

Endpoints
---------
``POST /v1/chat/completions``
    OpenAI-compatible. ``"model": "auto"`` (or ``"preroll"``, or no model)
    routes on the last user message; a configured backend name pins that
    backend. ``x-preroll-lambda`` (header) or ``preroll_lambda`` (body) sets
    the utility rule's λ for this request. Response headers:
    ``x-preroll-model`` (who answered), ``x-preroll-decision`` (routed or
    pinned), ``x-preroll-p-success`` (predicted success of who answered),
    ``x-preroll-fallback`` (each ``from->to; reason``, when a backend failed),
    and for routed requests ``x-preroll-router-ms`` (the router call that
    decided), ``x-preroll-router-wait-ms`` (queueing + that call) and
    ``x-preroll-router-batch`` (prompts in that call).
``POST /v1/route``
    The decision alone, nothing forwarded: ``{"prompt": ..., "lambda": ...}``.
``POST /v1/feedback``
    Graded outcomes for one model, stored durably before the reply; the router
    is refitted in the background after every ``router.refit_every`` outcomes.
    ``{"request_id": <x-preroll-request-id>, "success_rate": 1}`` grades a
    served request (its prompt and answering backend come from the log).
``POST /v1/refit``
    Refit now and wait for it.
``GET /stats``, ``GET /v1/models``, ``GET /health``.

Every request first passes :class:`~preroll.serve.security.Guard` (Host,
Origin, bearer token when ``server.auth_token_env`` is set, body size), and
every refusal anywhere has one JSON shape (:mod:`preroll.serve.errors`).

All start-up work (history import, backend checks, the first fit) happens in
:func:`create_app`, before a socket is opened, so a bad config fails fast with
a message instead of a half-started server. The endpoints themselves are in
:mod:`preroll.serve.routers` (chat and route, feedback, admin), sharing a
:class:`~preroll.serve.state.ServeState` through FastAPI dependencies.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Mapping

from preroll._optional import require

require("fastapi", extra="serve", what="preroll.serve")  # one line naming the extra, not a traceback
import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from preroll.route.errors import RouteConfigError, RouteError
from preroll.serve import routers
from preroll.serve.body import prompt_of
from preroll.serve.breaker import CircuitBreakers
from preroll.serve.config import ConfigError, ServeConfig
from preroll.serve.decision_log import DecisionLog
from preroll.serve.errors import RequestError, StoreUnavailableError, error_response
from preroll.serve.proxy import Forwarder
from preroll.serve.routing import RoutingService
from preroll.serve.security import Guard
from preroll.serve.state import ServeState
from preroll.serve.stats import ServeStats
from preroll.serve.store import HistoryStore

__all__ = ["BackendUnreachableError", "RequestError", "check_backends", "create_app", "prompt_of"]


class BackendUnreachableError(ConfigError):
    """A configured backend did not answer the start-up check."""


def check_backends(config: ServeConfig, api_keys: Mapping[str, str | None]) -> None:
    """``GET {base_url}/models`` on every backend; raise naming each one that does not answer.

    A 401/403 is reported too (the key is wrong); any other answer means the
    server is there, which is all this check is for.
    """
    problems = []
    with httpx.Client(timeout=config.check_timeout_s) as client:
        for i, b in enumerate(config.backends):
            key = api_keys.get(b.name)
            headers = {"authorization": f"Bearer {key}"} if key else {}
            url = f"{b.base_url}/models"
            try:
                r = client.get(url, headers=headers)
            except httpx.HTTPError as exc:
                problems.append(f"backends[{i}] {b.name!r} at {b.base_url} is unreachable "
                                f"({type(exc).__name__}: {exc})")
                continue
            if r.status_code in (401, 403):
                problems.append(f"backends[{i}] {b.name!r} at {b.base_url} refused the API key "
                                f"(HTTP {r.status_code} from GET {url}; check {b.api_key_env or 'api_key_env'})")
            elif r.status_code >= 500:
                problems.append(f"backends[{i}] {b.name!r} at {b.base_url} is failing (HTTP {r.status_code} from GET {url})")
    if problems:
        raise BackendUnreachableError("; ".join(problems) + " (skip this check with --no-check-backends)")


def create_app(config: ServeConfig, *, check: bool | None = None, encoder=None,
               environ: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """Build the proxy: open the store, import histories, check backends, fit the router.

    ``check`` overrides ``config.check_backends``. ``encoder`` (an
    :class:`~preroll.encoders.base.Encoder` instance) replaces
    ``router.encoder``; it is shared by every refit, so it must tolerate
    ``fit`` while it encodes (stateless encoders do). ``clock`` drives the
    circuit breakers (tests step it instead of sleeping).

    The endpoints live in :mod:`preroll.serve.routers`; what they share is one
    :class:`~preroll.serve.state.ServeState` on ``app.state.serve`` (its parts
    are also ``app.state.config``, ``.store``, ``.stats``, ``.routing``,
    ``.breakers``, ``.forwarder`` and ``.decision_log``).
    """
    api_keys = config.api_keys(environ)
    token = config.auth_token(environ)
    limits = config.limits
    if config.check_backends if check is None else check:
        check_backends(config, api_keys)
    store = HistoryStore(config.store)
    stats = ServeStats()
    routing = RoutingService(config, store, stats, encoder=encoder)
    try:
        for b in config.backends:
            for h in b.history:
                store.import_file(b.name, h)
        routing.refit()
    except RouteConfigError as exc:
        store.close()
        raise ConfigError(exc.reason, field=f"router.{exc.field}" if exc.field else "router") from None
    except RouteError as exc:
        store.close()
        raise ConfigError(str(exc)) from None
    except BaseException:
        store.close()
        raise
    breakers = CircuitBreakers(config.backend_names, failures=config.breaker.failures,
                               cooldown_s=config.breaker.cooldown_s, clock=clock)
    state = ServeState(config=config, store=store, stats=stats, routing=routing, breakers=breakers)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state.forwarder = app.state.forwarder = Forwarder(config.backends, api_keys, stats, breakers,
                                                          max_body_bytes=limits.max_upstream_bytes)
        state.decision_log = app.state.decision_log = DecisionLog(store, stats)
        await routing.start()
        try:
            yield
        finally:
            await routing.stop()
            await state.forwarder.aclose()
            state.decision_log.close()
            store.close()

    app = FastAPI(title="preroll router proxy", lifespan=lifespan)
    app.state.serve = state
    app.state.config, app.state.store, app.state.stats, app.state.routing = config, store, stats, routing
    app.state.breakers = breakers
    # Outermost check: Host, Origin, token and body size, before any body byte is read.
    app.add_middleware(Guard, token=token, allowed_hosts=config.server.allowed_hosts,
                       allowed_origins=config.server.allowed_origins, max_body_bytes=limits.max_body_bytes,
                       on_reject=lambda kind: stats.count(f"refused_{kind}"))
    _install_error_handlers(app, stats)
    for module in (routers.chat, routers.feedback, routers.admin):
        app.include_router(module.router)
    return app


def _install_error_handlers(app: FastAPI, stats: ServeStats) -> None:
    """Every error leaves in one shape, ``{"error": {message, type, param, code}}``."""

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        stats.error(f"{exc.status} {exc.code}")
        return exc.response()

    @app.exception_handler(StoreUnavailableError)
    async def _store_unavailable(request: Request, exc: StoreUnavailableError):
        stats.error("507 store_full" if exc.full else "503 store_unavailable")
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404
                              else "invalid_request", headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        first = (exc.errors() or [{}])[0]
        loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return error_response(422, first.get("msg", "invalid request"), param=loc)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        # The traceback goes to the server log (uvicorn logs the re-raised exception), never to the client.
        stats.error(f"500 {type(exc).__name__}")
        return error_response(500, "internal server error", code="internal_error")
