"""``POST /v1/feedback``: graded outcomes, stored durably before the reply, refits in the background.

``{"model": ..., "prompt": ..., <outcome>}`` or ``{"model": ..., "outcomes": [...]}``
adds rows; ``{"request_id": <x-preroll-request-id>, <outcome>}`` grades a served
request (its prompt and answering backend come from the decision log), and a
second grade of the same request replaces the first.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import APIRouter

from preroll.data import Outcome, RecordError, make_outcome
from preroll.serve.body import check_prompt_size
from preroll.serve.config import LimitSettings
from preroll.serve.decision_log import DecisionLog
from preroll.serve.errors import RequestError
from preroll.serve.state import JsonBody, State
from preroll.serve.store import INT64_MAX, INT64_MIN, HistoryStore

router = APIRouter()

_OUTCOME = {"prompt": {"type": "string", "minLength": 1}, "successes": {"type": "number", "minimum": 0},
            "attempts": {"type": "number", "exclusiveMinimum": 0}, "success_rate": {"type": "number"},
            "reward": {"type": "number"}, "policy": {"type": "string"}, "step": {"type": "integer"},
            "id": {"type": "string"}}
FEEDBACK_BODY = {"type": "object", "additionalProperties": True, "properties": {
    "model": {"type": "string"}, "request_id": {"type": "string", "minLength": 1},
    "reward_range": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    "outcomes": {"type": "array", "minItems": 1, "items": {"type": "object", "properties": _OUTCOME}},
    **_OUTCOME}}


@router.post("/v1/feedback", openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": FEEDBACK_BODY}}}})
async def feedback(body: JsonBody, state: State) -> dict:
    store, stats, limits, names = state.store, state.stats, state.limits, state.names
    request_id = None
    if "request_id" in body:
        request_id = body["request_id"]
        body = await _resolve_request_id(body, store, state.decision_log)
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
    await state.routing.observe(model, outcomes)  # bandit feedback for an exploring router (router.explore)
    refit_started = state.routing.outcomes_added(added + updated)
    return {"model": model, "added": added, "updated": updated,
            "history_size": await asyncio.to_thread(store.count, model),
            "refit_started": refit_started, "router": state.routing.status()}


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


def _reward_range(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in value)
            or value[0] >= value[1]):
        raise RequestError(f"reward_range must be [low, high] with low < high, got {value!r}", param="reward_range")
    return float(value[0]), float(value[1])


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False
