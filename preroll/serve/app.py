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
a message instead of a half-started server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import Any, Callable, Mapping

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from preroll.data import Outcome, RecordError, make_outcome
from preroll.route.errors import RouteConfigError, RouteError
from preroll.serve.body import check_prompt_size, optional_bool, optional_str, parse_json_object, prompt_of
from preroll.serve.breaker import CircuitBreakers
from preroll.serve.config import ROUTE_ALIASES, ConfigError, LimitSettings, ServeConfig
from preroll.serve.decision_log import DecisionLog
from preroll.serve.errors import RequestError, StoreUnavailableError, error_response
from preroll.serve.proxy import Forwarder
from preroll.serve.routing import RoutingService
from preroll.serve.security import Guard
from preroll.serve.stats import ServeStats
from preroll.serve.store import INT64_MAX, INT64_MIN, Decision, HistoryStore

__all__ = ["BackendUnreachableError", "RequestError", "check_backends", "create_app", "prompt_of"]


_log = logging.getLogger("preroll.serve")


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
    names = config.backend_names
    started = time.time()
    breakers = CircuitBreakers(names, failures=config.breaker.failures, cooldown_s=config.breaker.cooldown_s,
                               clock=clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.forwarder = Forwarder(config.backends, api_keys, stats, breakers,
                                        max_body_bytes=limits.max_upstream_bytes)
        app.state.decision_log = DecisionLog(store, stats)
        await routing.start()
        try:
            yield
        finally:
            await routing.stop()
            await app.state.forwarder.aclose()
            app.state.decision_log.close()
            store.close()

    app = FastAPI(title="preroll router proxy", lifespan=lifespan)
    app.state.config, app.state.store, app.state.stats, app.state.routing = config, store, stats, routing
    app.state.breakers = breakers
    # Outermost check: Host, Origin, token and body size, before any body byte is read.
    app.add_middleware(Guard, token=token, allowed_hosts=config.server.allowed_hosts,
                       allowed_origins=config.server.allowed_origins, max_body_bytes=limits.max_body_bytes,
                       on_reject=lambda kind: stats.count(f"refused_{kind}"))

    # Every error leaves in one shape, {"error": {message, type, param, code}}.
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

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "preroll"}
                                           for n in (*ROUTE_ALIASES, *names)]}

    @app.get("/stats")
    async def get_stats() -> dict:
        return {"uptime_s": round(time.time() - started, 3), "backends": names,
                "router": routing.status(), "breakers": breakers.snapshot(), **stats.snapshot()}

    async def json_body(request: Request) -> dict[str, Any]:
        return parse_json_object(await request.body(), max_depth=limits.max_json_depth)

    def bounded(prompt: str) -> str:
        """What the router reads and the store keeps of a prompt: its first ``route_prefix_chars``."""
        return prompt[:limits.route_prefix_chars]

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.perf_counter()
        body = await json_body(request)
        stats.count("chat_requests")
        model = optional_str(body, "model") or "auto"
        lam = _lambda(request, body)
        upstream_body = {k: v for k, v in body.items() if not k.startswith("preroll_")}
        stream = optional_bool(body, "stream")
        prompt = None
        if model in ROUTE_ALIASES:
            prompt = prompt_of(body)
            check_prompt_size(prompt, limits.max_prompt_chars, "messages")
            prompt = bounded(prompt)
            try:
                decided = await routing.decide(prompt, lam)
            except Exception as exc:  # the router's own failure: the detail goes to the log, not the client
                _log.exception("routing failed")
                raise RequestError(f"routing failed ({type(exc).__name__}; details in the server log)",
                                   status=500, code="routing_failed") from None
            decision = decided.decision
            ranking = decision.ranking
            headers = {"x-preroll-decision": "routed", "x-preroll-rule": decision.rule,
                       "x-preroll-param": f"{decision.param:g}",
                       "x-preroll-router-ms": f"{decided.call_ms:.3f}",
                       "x-preroll-router-wait-ms": f"{decided.wait_ms:.3f}",
                       "x-preroll-router-batch": str(decided.batch)}
            p_success = decision.p_success
        elif model in names:
            ranking, headers, p_success = [model], {"x-preroll-decision": "pinned"}, None
            with contextlib.suppress(RequestError):  # logged for grading; a pin needs no user text
                prompt = bounded(prompt_of(body))
        else:
            raise RequestError(f"unknown model {model!r}; configured models: {', '.join(names)} "
                               f"(or {' / '.join(ROUTE_ALIASES)} to let the router choose)",
                               param="model", code="model_not_found")
        response = await request.app.state.forwarder.forward(upstream_body, ranking, stream=stream,
                                                             pinned=p_success is None, headers=headers)
        answered = response.headers.get("x-preroll-model")
        if p_success is not None and answered in p_success:
            response.headers["x-preroll-p-success"] = f"{p_success[answered]:.4f}"
        request_id = uuid.uuid4().hex
        response.headers["x-preroll-request-id"] = request_id
        request.app.state.decision_log.record(Decision(
            request_id=request_id, at=time.time(), prompt=prompt, how=headers["x-preroll-decision"],
            routed_to=ranking[0] if p_success is not None else None, answered_by=answered,
            p_success=p_success, fallback=response.headers.get("x-preroll-fallback")))
        stats.latency("total_ms", (time.perf_counter() - t0) * 1000)
        return response

    @app.post("/v1/route")
    async def route(request: Request) -> dict:
        body = await json_body(request)
        prompt = body.get("prompt")
        if prompt is None:
            prompt, param = prompt_of(body), "messages"
        elif not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("'prompt' must be non-empty text", param="prompt")
        else:
            param = "prompt"
        check_prompt_size(prompt, limits.max_prompt_chars, param)
        lam = _number(body.get("lambda"), "lambda")
        try:
            decided = await routing.decide(bounded(prompt), lam)
        except RouteError as exc:
            raise RequestError(str(exc), param="prompt") from None
        return {**decided.decision.model_dump(), "router_ms": round(decided.call_ms, 3),
                "router_wait_ms": round(decided.wait_ms, 3), "router_batch": decided.batch}

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict:
        body = await json_body(request)
        request_id = None
        if "request_id" in body:
            request_id = body["request_id"]
            body = await _resolve_request_id(body, store, request.app.state.decision_log)
        model = body.get("model")
        if not isinstance(model, str) or model not in names:
            raise RequestError(f"unknown model {model!r}; configured models: {', '.join(names)}",
                               param="model", code="model_not_found")
        reward_range = _reward_range(body.get("reward_range"))
        if "outcomes" in body:
            rows = body["outcomes"]
            if not isinstance(rows, list) or not rows:
                raise RequestError("'outcomes' must be a non-empty list of records", param="outcomes")
            if len(rows) > limits.max_outcomes:
                raise RequestError(f"'outcomes' has {len(rows)} rows; limits.max_outcomes is {limits.max_outcomes}",
                                   status=413, param="outcomes", code="request_too_large")
            where = [f"outcomes[{i}]" for i in range(len(rows))]
        else:
            rows = [{k: v for k, v in body.items() if k not in ("model", "reward_range")}]
            where = ["request body"]
        outcomes = [_bounded_outcome(r, w, reward_range, limits) for r, w in zip(rows, where)]
        if request_id is not None:  # one row per served request: a second grade replaces the first
            new = await asyncio.to_thread(store.grade, model, outcomes[0], request_id)
            added, updated = int(new), int(not new)
        else:
            added, updated = await asyncio.to_thread(store.add, model, outcomes), 0  # returns once committed
        stats.count("feedback_outcomes", added)
        stats.count("feedback_regrades", updated)
        refit_started = routing.outcomes_added(added + updated)
        return {"model": model, "added": added, "updated": updated,
                "history_size": await asyncio.to_thread(store.count, model),
                "refit_started": refit_started, "router": routing.status()}

    @app.post("/v1/refit")
    async def refit() -> dict:
        t0 = time.perf_counter()
        try:
            counts = await asyncio.get_running_loop().run_in_executor(routing.refit_pool, routing.refit)
        except RouteError as exc:
            raise RequestError(f"refit failed: {exc}", status=500, code="refit_failed") from None
        return {"fitted_on": counts, "seconds": round(time.perf_counter() - t0, 3)}

    return app


def _bounded_outcome(row: Any, where: str, reward_range, limits: LimitSettings) -> Outcome:
    """One feedback row, validated like a history row and then held to the server's bounds.

    The bounds are what keep one client from outweighing the whole history:
    ``attempts`` at most ``limits.max_attempts`` (one row claiming a million
    attempts would otherwise dominate every nearby prediction), a ``step``
    SQLite can store, and a prompt no longer than ``limits.max_prompt_chars``
    (kept as its first ``route_prefix_chars``, the part routing reads).
    """
    try:
        outcome = make_outcome(row, reward_range=reward_range, path=where)
    except RecordError as exc:
        raise RequestError(str(exc), status=422, param=exc.field, code="invalid_outcome") from None
    if outcome.attempts > limits.max_attempts:
        raise RequestError(f"{where}, field 'attempts': {outcome.attempts:g} attempts in one row; "
                           f"limits.max_attempts is {limits.max_attempts:g}", status=422, param="attempts",
                           code="invalid_outcome")
    if outcome.step is not None and not INT64_MIN <= outcome.step <= INT64_MAX:
        raise RequestError(f"{where}, field 'step': {outcome.step} is outside the 64-bit integer range",
                           status=422, param="step", code="invalid_outcome")
    check_prompt_size(outcome.prompt, limits.max_prompt_chars, f"{where}.prompt" if where.startswith("out")
                      else "prompt")
    if len(outcome.prompt) > limits.route_prefix_chars:
        outcome = outcome.model_copy(update={"prompt": outcome.prompt[:limits.route_prefix_chars]})
    return outcome


async def _resolve_request_id(body: dict[str, Any], store: HistoryStore, log: DecisionLog) -> dict[str, Any]:
    """Turn ``{"request_id": ..., <outcome>}`` into ``{"model": <who answered>, "prompt": ..., <outcome>}``."""
    if "outcomes" in body or "prompt" in body:
        raise RequestError("give either 'request_id' or 'prompt'/'outcomes', not both", param="request_id")
    rid = body["request_id"]
    if not isinstance(rid, str) or not rid:
        raise RequestError(f"'request_id' must be non-empty text, got {rid!r}", param="request_id")
    found = await asyncio.to_thread(store.decision, rid)
    if found is None:
        await asyncio.to_thread(log.flush)  # it may be a request served a moment ago
        found = await asyncio.to_thread(store.decision, rid)
    if found is None:
        raise RequestError(f"no logged request with id {rid!r}", status=404, param="request_id",
                           code="request_not_found")
    if found.answered_by is None or found.prompt is None:
        raise RequestError(f"request {rid!r} has no answer and prompt to grade", status=409, param="request_id")
    model = body.get("model", found.answered_by)
    if model != found.answered_by:
        raise RequestError(f"request {rid!r} was answered by {found.answered_by!r}, not {model!r}",
                           param="model")
    rest = {k: v for k, v in body.items() if k not in ("request_id", "model")}
    return {"model": model, "prompt": found.prompt, **rest}


def _number(value: Any, param: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise RequestError(f"{param} must be a number, got {value!r}", param=param)
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{param} must be a number, got {value!r}", param=param) from None
    if not math.isfinite(x) or x < 0:
        raise RequestError(f"{param} must be a finite number >= 0, got {value!r}", param=param)
    return x


def _lambda(request: Request, body: Mapping[str, Any]) -> float | None:
    header = request.headers.get("x-preroll-lambda")
    if header is not None:
        return _number(header, "x-preroll-lambda")
    return _number(body.get("preroll_lambda"), "preroll_lambda")


def _reward_range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in value)
            or value[0] >= value[1]):
        raise RequestError(f"reward_range must be [low, high] with low < high, got {value!r}", param="reward_range")
    return float(value[0]), float(value[1])


def _finite(v: int | float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False
