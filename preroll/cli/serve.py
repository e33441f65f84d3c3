"""``preroll serve``: run the routing proxy (see :mod:`preroll.serve`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer



def serve(
    config: Path = typer.Option(..., "--config", "-c", help="YAML file: backends, router settings, store."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on. A non-loopback address needs "
                                               "server.auth_token_env in the config."),
    port: int = typer.Option(8000, help="Port to listen on."),
    check_backends: Optional[bool] = typer.Option(
        None, "--check-backends/--no-check-backends",
        help="Refuse to start when a backend does not answer GET /models (default: the config's check_backends)."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
) -> None:
    """Serve an OpenAI-compatible endpoint that routes each request to the cheapest capable backend."""
    from rich.console import Console

    from preroll._optional import require
    from preroll.errors import PrerollError

    for module in ("fastapi", "uvicorn", "httpx", "yaml"):
        require(module, extra="serve", what="preroll serve")
    from preroll.serve.config import load_config
    from preroll.serve.exposure import check_exposure

    err = Console(stderr=True)
    try:
        cfg = load_config(config)
        check_exposure(cfg, host, source=config)  # before any slow start-up work
        from preroll.cli.progress import WorkProgress
        from preroll.serve.app import create_app

        # Start-up takes seconds to a minute (backends checked, histories imported, the router fitted):
        # shown as it goes, not silence before the ready line.
        with WorkProgress("preroll serve", None, stage="starting: backends, histories, fitting the router",
                          stream=err.file):
            app = create_app(cfg, check=check_backends)
    except PrerollError as exc:
        where = "" if getattr(exc, "path", None) else f"{config}: "  # start-up errors name the config too
        err.print(f"[red]error:[/red] {where}{exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    import uvicorn

    err.print(f"preroll serve: {', '.join(cfg.backend_names)} on http://{host}:{port}/v1 "
              f"(store {cfg.store})", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
