"""What every endpoint shares, handed to the routers as FastAPI dependencies.

:func:`~preroll.serve.app.create_app` builds one :class:`ServeState` (the
config, the store, the live router, the breakers, the counters) and keeps it
on ``app.state.serve``; the endpoint modules under :mod:`preroll.serve.routers`
receive it through :data:`State` instead of closing over local variables, so
each can be read, and tested, on its own. :data:`JsonBody` is the request body
parsed and checked once (:func:`~preroll.serve.body.parse_json_object`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from preroll.serve.body import parse_json_object
from preroll.serve.breaker import CircuitBreakers
from preroll.serve.config import LimitSettings, ServeConfig
from preroll.serve.decision_log import DecisionLog
from preroll.serve.proxy import Forwarder
from preroll.serve.routing import RoutingService
from preroll.serve.stats import ServeStats
from preroll.serve.store import HistoryStore


@dataclass
class ServeState:
    """The running service. ``forwarder`` and ``decision_log`` exist between lifespan start and stop."""

    config: ServeConfig
    store: HistoryStore
    stats: ServeStats
    routing: RoutingService
    breakers: CircuitBreakers
    started: float = field(default_factory=time.time)
    forwarder: Forwarder | None = None
    decision_log: DecisionLog | None = None

    @property
    def names(self) -> list[str]:
        return self.config.backend_names

    @property
    def limits(self) -> LimitSettings:
        return self.config.limits

    def bounded(self, prompt: str) -> str:
        """What the router reads and the store keeps of a prompt: its first ``route_prefix_chars``."""
        return prompt[:self.limits.route_prefix_chars]


def get_state(request: Request) -> ServeState:
    return request.app.state.serve


State = Annotated[ServeState, Depends(get_state)]


async def json_body(request: Request, state: State) -> dict[str, Any]:
    return parse_json_object(await request.body(), max_depth=state.limits.max_json_depth)


JsonBody = Annotated[dict[str, Any], Depends(json_body)]
