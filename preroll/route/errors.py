"""Routing errors, typed so a service can map each one to the right reply.

A router that silently ignores an unknown model name or a missing history
sends traffic to the wrong place without anyone noticing; every such case is
raised here with the offending name in the message.
"""

from __future__ import annotations

from preroll.errors import ConfigError, NotFittedError, PrerollError

__all__ = ["RouteError", "UnknownModelError", "MissingHistoryError", "NotFittedError", "RouteConfigError"]


class RouteError(PrerollError, ValueError):
    """Base class of every routing error (a ``ValueError``: the input is wrong)."""


class UnknownModelError(RouteError):
    """A model name that is not among the router's models."""

    def __init__(self, name: str, known: list[str] | tuple[str, ...], *, where: str = "") -> None:
        self.name = name
        self.known = list(known)
        ctx = f" ({where})" if where else ""
        super().__init__(f"unknown model {name!r}{ctx}; the router's models are: {', '.join(map(repr, self.known))}")


class MissingHistoryError(RouteError):
    """A listed model has no (or an empty) history, so its success cannot be predicted."""

    def __init__(self, name: str, reason: str = "no history given") -> None:
        self.name = name
        super().__init__(f"model {name!r}: {reason}; every routed model needs a non-empty history of outcomes")


class RouteConfigError(RouteError, ConfigError):
    """A malformed router configuration (file or dict), with the file and field at fault."""
