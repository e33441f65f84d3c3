"""Routing: send each prompt to the cheapest model that will get it right.

``Router`` keeps one outcome history per model, predicts every model's
success on a prompt from one shared embedding, and picks a model by a rule
that trades predicted success against price.
"""

from preroll.route.errors import (MissingHistoryError, NotFittedError, RouteConfigError, RouteError,
                                  UnknownModelError)
from preroll.route.explore import ExploreSettings
from preroll.route.router import Router
from preroll.route.specs import FrontierPoint, ModelSpec, RouteDecision, RouterConfig, estimate_tokens

__all__ = ["Router", "ExploreSettings", "ModelSpec", "RouteDecision", "FrontierPoint", "RouterConfig", "estimate_tokens",
           "RouteError", "UnknownModelError", "MissingHistoryError", "NotFittedError", "RouteConfigError"]
