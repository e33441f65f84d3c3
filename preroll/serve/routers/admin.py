"""``GET /health``, ``GET /v1/models``, ``GET /stats`` and ``POST /v1/refit``: the service looking at itself."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter

from preroll.route.errors import RouteError
from preroll.serve.config import ROUTE_ALIASES
from preroll.serve.errors import RequestError
from preroll.serve.state import State

router = APIRouter()


@router.get("/health")
async def health() -> dict:
    return {"status": "ok"}


@router.get("/v1/models")
async def models(state: State) -> dict:
    return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "preroll"}
                                       for n in (*ROUTE_ALIASES, *state.names)]}


@router.get("/stats")
async def get_stats(state: State) -> dict:
    """One JSON object; new sections are new keys (``router`` is :meth:`RoutingService.status`)."""
    return {"uptime_s": round(time.time() - state.started, 3), "backends": state.names,
            "router": state.routing.status(), "breakers": state.breakers.snapshot(), **state.stats.snapshot()}


@router.post("/v1/refit")
async def refit(state: State) -> dict:
    t0 = time.perf_counter()
    routing = state.routing
    try:
        counts = await asyncio.get_running_loop().run_in_executor(routing.refit_pool, routing.refit)
    except RouteError as exc:
        raise RequestError(f"refit failed: {exc}", status=500, code="refit_failed") from None
    return {"fitted_on": counts, "seconds": round(time.perf_counter() - t0, 3)}
