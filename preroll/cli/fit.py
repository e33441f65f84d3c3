"""``preroll fit``: fit the value model on a history once and save it for ``preroll score``.

Fitting reads and encodes the whole history; scoring a large pool, possibly
on many workers and over several runs, should not repeat that. The saved
directory is described in :mod:`preroll.model.persist`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from preroll.model.value_model import DEFAULT_ENCODER, DEFAULT_HEAD


def fit(
    context: Path = typer.Option(..., "--context", help="History file (JSONL/CSV/Parquet) in the record schema."),
    save: Path = typer.Option(..., "--save", help="Model directory to write."),
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder"),
    head: str = typer.Option(DEFAULT_HEAD, "--head", help="logistic, auto (logistic+knn), knn, gp, tabpfn."),
    reward_range: tuple[float, float] = typer.Option(None, "--reward-range",
                                                     help="Scale of a 'reward' column, e.g. -1 1."),
    force: bool = typer.Option(False, "--force", help="Replace an existing model directory."),
) -> None:
    """Fit the value model on a history and save it to a model directory."""
    from rich.console import Console

    from preroll.data import RecordError, load_records
    from preroll.model.persist import ModelFormatError, save_model
    from preroll.model.value_model import ValueModel

    console = Console(stderr=True)
    if save.exists() and not force:
        console.print(f"[red]error:[/red] --save {save} already exists; pass --force to replace it", soft_wrap=True)
        raise typer.Exit(2)
    if save.resolve() == context.resolve():
        console.print(f"[red]error:[/red] --save {save} is the history file; an output never overwrites an input",
                      soft_wrap=True)
        raise typer.Exit(2)
    try:
        history = load_records(context, reward_range=reward_range)
        console.log(f"context: {len(history)} records")
        vm = ValueModel(encoder=encoder, head=head, show_progress=True).fit(history)
        save_model(vm, save, overwrite=force)
    except (RecordError, ModelFormatError, ValueError, RuntimeError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    console.log(f"saved the model ({len(vm.snapshots_)} snapshots, encoder {vm.encoder_.name}) to {save}")
