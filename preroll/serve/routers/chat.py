"""``POST /v1/chat/completions`` (route or pin, then forward) and ``POST /v1/route`` (the decision alone)."""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request

from preroll.route.errors import RouteError
from preroll.serve.body import check_prompt_size, optional_bool, optional_str, prompt_of
from preroll.serve.config import ROUTE_ALIASES
from preroll.serve.errors import RequestError
from preroll.serve.state import JsonBody, State
from preroll.serve.store import Decision

_log = logging.getLogger("preroll.serve")

router = APIRouter()

# The bodies are parsed by hand (preroll.serve.body: every bad field is a 4xx naming its path, and anything
# else passes through to the upstream untouched); these schemas only document them in /openapi.json.
_MESSAGES = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["role"], "properties": {
        "role": {"type": "string"},
        "content": {"anyOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": {
            "type": "object", "required": ["type"],
            "properties": {"type": {"type": "string"}, "text": {"type": "string"}}}}]}}}}
_LAMBDA_HEADER = {"name": "x-preroll-lambda", "in": "header", "required": False,
                  "description": "The utility rule's lambda for this request.",
                  "schema": {"type": "number", "minimum": 0}}


def _json_body(schema: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


CHAT_BODY = {"type": "object", "required": ["messages"], "additionalProperties": True, "properties": {
    "model": {"type": "string", "description": "'auto' or 'preroll' to route; a backend name to pin it."},
    "messages": _MESSAGES,
    "stream": {"type": "boolean"},
    "preroll_lambda": {"type": "number", "minimum": 0, "description": "lambda for this request."}}}
ROUTE_BODY = {"type": "object", "additionalProperties": True, "properties": {
    "prompt": {"type": "string", "minLength": 1}, "messages": _MESSAGES,
    "lambda": {"type": "number", "minimum": 0}}}


@router.post("/v1/chat/completions", openapi_extra={**_json_body(CHAT_BODY), "parameters": [_LAMBDA_HEADER]})
async def chat(request: Request, body: JsonBody, state: State):
    t0 = time.perf_counter()
    stats, limits, names = state.stats, state.limits, state.names
    stats.count("chat_requests")
    model = optional_str(body, "model") or "auto"
    lam = _lambda(request, body)
    upstream_body = {k: v for k, v in body.items() if not k.startswith("preroll_")}
    stream = optional_bool(body, "stream")
    prompt = None
    if model in ROUTE_ALIASES:
        prompt = prompt_of(body)
        check_prompt_size(prompt, limits.max_prompt_chars, "messages")
        prompt = state.bounded(prompt)
        try:
            decided = await state.routing.decide(prompt, lam)
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
                   "x-preroll-router-batch": str(decided.batch),
                   **({"x-preroll-explored": "1"} if decision.explored else {})}
        p_success = decision.p_success
    elif model in names:
        ranking, headers, p_success = [model], {"x-preroll-decision": "pinned"}, None
        with contextlib.suppress(RequestError):  # logged for grading; a pin needs no user text
            prompt = state.bounded(prompt_of(body))
    else:
        raise RequestError(f"unknown model {model!r}; configured models: {', '.join(names)} "
                           f"(or {' / '.join(ROUTE_ALIASES)} to let the router choose)",
                           param="model", code="model_not_found")
    response = await state.forwarder.forward(upstream_body, ranking, stream=stream,
                                             pinned=p_success is None, headers=headers)
    answered = response.headers.get("x-preroll-model")
    if p_success is not None and answered in p_success:
        response.headers["x-preroll-p-success"] = f"{p_success[answered]:.4f}"
    request_id = uuid.uuid4().hex
    response.headers["x-preroll-request-id"] = request_id
    state.decision_log.record(Decision(
        request_id=request_id, at=time.time(), prompt=prompt, how=headers["x-preroll-decision"],
        routed_to=ranking[0] if p_success is not None else None, answered_by=answered,
        p_success=p_success, fallback=response.headers.get("x-preroll-fallback")))
    stats.latency("total_ms", (time.perf_counter() - t0) * 1000)
    return response


@router.post("/v1/route", openapi_extra=_json_body(ROUTE_BODY))
async def route(body: JsonBody, state: State) -> dict:
    prompt = body.get("prompt")
    if prompt is None:
        prompt, param = prompt_of(body), "messages"
    elif not isinstance(prompt, str) or not prompt.strip():
        raise RequestError("'prompt' must be non-empty text", param="prompt")
    else:
        param = "prompt"
    check_prompt_size(prompt, state.limits.max_prompt_chars, param)
    lam = _number(body.get("lambda"), "lambda")
    try:
        decided = await state.routing.decide(state.bounded(prompt), lam)
    except RouteError as exc:
        raise RequestError(str(exc), param="prompt") from None
    return {**decided.decision.model_dump(), "router_ms": round(decided.call_ms, 3),
            "router_wait_ms": round(decided.wait_ms, 3), "router_batch": decided.batch}


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
