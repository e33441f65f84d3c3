"""Refuse, at start-up, to listen where the config does not protect the proxy.

A proxy on a non-loopback address without a token lets anyone on the network
spend the backends' money and poison the router's history through
``/v1/feedback``. That is never what an operator means, so it is an error, not
a warning that scrolls away.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from preroll.serve.config import LOOPBACK_HOSTS, ServeConfig
from preroll.serve.errors import ServeSetupError


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServeConfig, host: str, *, source: str | Path | None = None) -> None:
    """Raise :class:`ServeSetupError` if binding ``host`` with ``config`` would expose an open proxy."""
    if is_loopback(host):
        return
    if config.server.auth_token_env is None:
        raise ServeSetupError(f"refusing to listen on {host} without a bearer token: set server.auth_token_env "
                              "to the name of an environment variable holding one (or listen on 127.0.0.1)",
                              path=source, field="server.auth_token_env")
    if set(config.server.allowed_hosts) <= set(LOOPBACK_HOSTS):
        raise ServeSetupError(f"listening on {host}, but server.allowed_hosts admits only loopback names, so "
                              "every remote request would be refused; list the host names clients use",
                              path=source, field="server.allowed_hosts")
