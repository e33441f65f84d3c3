"""``preroll feedback``: add a file of graded outcomes to a model's stored history."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def feedback(
    file: Path = typer.Argument(..., help="Record file (JSONL, CSV or Parquet) of outcomes for MODEL."),
    model: str = typer.Option(..., "--model", "-m", help="Model (backend name) the outcomes belong to."),
    store: Optional[Path] = typer.Option(None, "--store", help="History store (SQLite file)."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="A serve config: its store is used and MODEL must be one of its backends."),
    reward_range: Optional[tuple[float, float]] = typer.Option(
        None, "--reward-range", help="Scale of a 'reward' column, e.g. --reward-range -1 1."),
) -> None:
    """Validate FILE and append it to MODEL's history in one transaction (all rows or none).

    A running server picks the new outcomes up at its next refit (POST /v1/refit forces one).
    """
    from rich.console import Console

    from preroll.data import RecordError, load_records
    from preroll.serve.store import HistoryStore

    err = Console(stderr=True)
    if (store is None) == (config is None):
        err.print("[red]error:[/red] give exactly one of --store or --config")
        raise typer.Exit(2)
    if not model.strip():
        err.print("[red]error:[/red] --model is empty; give the backend name the outcomes belong to")
        raise typer.Exit(2)
    try:
        if config is not None:
            from preroll.serve.config import load_config

            cfg = load_config(config, check_api_keys=False)
            if model not in cfg.backend_names:
                err.print(f"[red]error:[/red] unknown model {model!r}; {config} configures: "
                          f"{', '.join(cfg.backend_names)}", highlight=False, soft_wrap=True)
                raise typer.Exit(2)
            store = cfg.store
        records = load_records(file, reward_range=reward_range)
        _check_steps(records, file)
        with HistoryStore(store) as hs:  # StoreError (a RecordError): not an SQLite file
            added = hs.add(model, records)
            total = hs.count(model)
    except RecordError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    typer.echo(f"added {added} outcomes to {model!r} (history now {total}) in {store}")


def _check_steps(records, file: Path) -> None:
    """Refuse, naming the row, a ``step`` SQLite cannot store (its INTEGER is 64-bit)."""
    from preroll.data import RecordError
    from preroll.serve.store import INT64_MAX, INT64_MIN

    for i, r in enumerate(records):
        if r.step is not None and not INT64_MIN <= r.step <= INT64_MAX:
            raise RecordError(f"row {i + 1}: step {r.step} is outside the 64-bit integer range", path=file,
                              field="step")
