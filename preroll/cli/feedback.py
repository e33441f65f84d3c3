"""``preroll feedback``: add a file of graded outcomes to a model's stored history."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer


def _key(o) -> tuple:
    return (o.prompt, o.successes, o.attempts, o.policy, o.step, o.id)


def feedback(
    file: Path = typer.Argument(..., metavar="FILE", help="Record file (JSONL, CSV or Parquet) of outcomes for MODEL."),
    model: str = typer.Option(..., "--model", "-m", help="Model (backend name) the outcomes belong to."),
    store: Optional[Path] = typer.Option(None, "--store", help="History store (SQLite file)."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="A serve config: its store is used and MODEL must be one of its backends."),
    reward_range: Optional[tuple[float, float]] = typer.Option(
        None, "--reward-range", help="Scale of a 'reward' column, e.g. --reward-range -1 1."),
    again: bool = typer.Option(False, "--again", help="Add the file even if its outcomes are already in the history."),
) -> None:
    """Validate FILE and append it to MODEL's history in one transaction (all rows or none).

    A file whose every outcome is already in MODEL's history (the same file sent twice) is
    refused unless --again: doubling a history silently doubles its confidence.
    A running server picks the new outcomes up at its next refit (POST /v1/refit forces one).
    """
    import sqlite3

    from preroll.data import load_records
    from preroll.errors import ConfigError, InputError
    from preroll.outputs import check_output
    from preroll.serve.store import HistoryStore

    if (store is None) == (config is None):
        raise ConfigError("give exactly one of --store or --config")
    if not model.strip():
        raise ConfigError("--model is empty; give the backend name the outcomes belong to")
    if config is not None:
        from preroll.serve.config import load_config

        cfg = load_config(config, check_api_keys=False)
        if model not in cfg.backend_names:
            raise ConfigError(f"unknown model {model!r}; {config} configures: {', '.join(cfg.backend_names)}")
        store = cfg.store
    check_output(store, inputs=(file,), force=True, option="--store")
    records = load_records(file, reward_range=reward_range)
    try:
        with HistoryStore(store) as hs:
            if not again:
                have = Counter(_key(o) for o in hs.records(model))
                new = Counter(_key(o) for o in records)
                if all(have[k] >= n for k, n in new.items()):
                    raise InputError(f"all {len(records)} outcomes are already in {model!r}'s history "
                                     f"(the same file twice?); pass --again to add them again", path=file)
            added = hs.add(model, records)
            total = hs.count(model)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"not a usable SQLite history store ({exc})", path=store) from None
    typer.echo(f"added {added} outcomes to {model!r} (history now {total}) in {store}")
