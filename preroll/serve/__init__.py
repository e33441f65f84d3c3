"""``preroll serve``: an OpenAI-compatible proxy that routes each request to the cheapest capable backend.

Modules: :mod:`.config` (the YAML schema), :mod:`.app` (the FastAPI app, built from
:mod:`.routers` over the shared :mod:`.state`),
:mod:`.security` (Host/Origin checks, bearer token, body cap),
:mod:`.exposure` (no open proxy on a public address), :mod:`.body` (JSON
parsing and field checks), :mod:`.errors` (the service's errors and their
one response shape), :mod:`.routing` (the live router: batching, background
refits), :mod:`.proxy` (forwarding and fallback), :mod:`.breaker`
(per-backend circuit breakers), :mod:`.store` (SQLite histories),
:mod:`.decision_log` (who answered what, for grading), :mod:`.stats` (counts
and latencies), :mod:`.testing` (a small OpenAI-compatible backend for tests
and load tests), :mod:`.fuzzing` (the HTTP fuzz harness; needs hypothesis and
schemathesis).
"""

__all__ = ["ConfigError", "ServeConfig", "load_config", "create_app"]


def __getattr__(name: str):
    # The app pulls in FastAPI and the router, the config PyYAML (both the 'serve' extra); the history
    # store and the errors (``preroll feedback --store``) need neither, so nothing is imported here.
    if name == "create_app":
        from preroll.serve.app import create_app

        return create_app
    if name in ("ConfigError", "ServeConfig", "load_config"):
        from preroll.serve import config

        return getattr(config, name)
    raise AttributeError(name)
