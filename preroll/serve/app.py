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

All start-up work (history import, backend checks, the first fit) happens in
:func:`create_app`, before a socket is opened, so a bad config fails fast with
a message instead of a half-started server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from typing import Any, Mapping

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from preroll.data import RecordError, make_outcome
from preroll.route.errors import RouteConfigError, RouteError
from preroll.serve.config import ROUTE_ALIASES, ConfigError, ServeConfig
from preroll.serve.decision_log import DecisionLog
from preroll.serve.proxy import Forwarder
from preroll.serve.routing import RoutingService
from preroll.serve.stats import ServeStats
from preroll.serve.store import Decision, HistoryStore


class BackendUnreachableError(ConfigError):
    """A configured backend did not answer the start-up check."""


class RequestError(Exception):
    """A client mistake, answered with an OpenAI-style error body."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None,
                 code: str = "invalid_request") -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": "invalid_request_error",
                                       "param": self.param, "code": self.code}}, status_code=self.status)


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
               environ: Mapping[str, str] | None = None) -> FastAPI:
    """Build the proxy: open the store, import histories, check backends, fit the router.

    ``check`` overrides ``config.check_backends``. ``encoder`` (an
    :class:`~preroll.encoders.base.Encoder` instance) replaces
    ``router.encoder``; it is shared by every refit, so it must tolerate
    ``fit`` while it encodes (stateless encoders do).
    """
    api_keys = config.api_keys(environ)
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

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.forwarder = Forwarder(config.backends, api_keys, stats)
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

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        stats.error(f"{exc.status} {exc.code}")
        return exc.response()

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
                "router": routing.status(), **stats.snapshot()}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        t0 = time.perf_counter()
        body = await _json_object(request)
        stats.count("chat_requests")
        model = body.get("model") or "auto"
        lam = _lambda(request, body)
        upstream_body = {k: v for k, v in body.items() if not k.startswith("preroll_")}
        stream = bool(body.get("stream"))
        prompt = None
        if model in ROUTE_ALIASES:
            prompt = prompt_of(body)
            try:
                decided = await routing.decide(prompt, lam)
            except Exception as exc:  # the router's own failure: say what it was, in the API's error shape
                raise RequestError(f"routing failed: {type(exc).__name__}: {exc}", status=500,
                                   code="routing_failed") from None
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
                prompt = prompt_of(body)
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
        body = await _json_object(request)
        prompt = body.get("prompt")
        if prompt is None:
            prompt = prompt_of(body)
        elif not isinstance(prompt, str) or not prompt.strip():
            raise RequestError("'prompt' must be non-empty text", param="prompt")
        lam = _number(body.get("lambda"), "lambda")
        try:
            decided = await routing.decide(prompt, lam)
        except RouteError as exc:
            raise RequestError(str(exc), param="prompt") from None
        return {**decided.decision.model_dump(), "router_ms": round(decided.call_ms, 3),
                "router_wait_ms": round(decided.wait_ms, 3), "router_batch": decided.batch}

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> dict:
        body = await _json_object(request)
        if "request_id" in body:
            body = await _resolve_request_id(body, store, request.app.state.decision_log)
        model = body.get("model")
        if model not in names:
            raise RequestError(f"unknown model {model!r}; configured models: {', '.join(names)}",
                               param="model", code="model_not_found")
        reward_range = _reward_range(body.get("reward_range"))
        if "outcomes" in body:
            rows = body["outcomes"]
            if not isinstance(rows, list) or not rows:
                raise RequestError("'outcomes' must be a non-empty list of records", param="outcomes")
            where = [f"outcomes[{i}]" for i in range(len(rows))]
        else:
            rows = [{k: v for k, v in body.items() if k not in ("model", "reward_range")}]
            where = ["request body"]
        try:
            outcomes = [make_outcome(r, reward_range=reward_range, path=w) for r, w in zip(rows, where)]
        except RecordError as exc:
            raise RequestError(str(exc), status=422, param=exc.field, code="invalid_outcome") from None
        added = await asyncio.to_thread(store.add, model, outcomes)  # returns once committed
        stats.count("feedback_outcomes", added)
        refit_started = routing.outcomes_added(added)
        return {"model": model, "added": added, "history_size": await asyncio.to_thread(store.count, model),
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


async def _resolve_request_id(body: dict[str, Any], store: HistoryStore, log: DecisionLog) -> dict[str, Any]:
    """Turn ``{"request_id": ..., <outcome>}`` into ``{"model": <who answered>, "prompt": ..., <outcome>}``."""
    if "outcomes" in body or "prompt" in body:
        raise RequestError("give either 'request_id' or 'prompt'/'outcomes', not both", param="request_id")
    rid = str(body["request_id"])
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


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, got {type(body).__name__}")
    return body


def prompt_of(body: Mapping[str, Any]) -> str:
    """The text the router reads: the last user message (text parts joined).

    The last user turn is what the next answer must get right, and it is the
    shape of the single-question prompts routing histories hold.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = "\n".join(p.get("text", "") for p in content
                                    if isinstance(p, dict) and p.get("type") == "text")
            if isinstance(content, str) and content.strip():
                return content
            raise RequestError("the last user message has no text to route on", param="messages")
    raise RequestError("no user message to route on", param="messages")


def _number(value: Any, param: str) -> float | None:
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
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
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value) or value[0] >= value[1]):
        raise RequestError(f"reward_range must be [low, high] with low < high, got {value!r}", param="reward_range")
    return float(value[0]), float(value[1])
