"""``preroll fit``: fit the value model on a history once and save it for ``preroll score``.

Fitting reads and encodes the whole history; scoring a large pool, possibly
on many workers and over several runs, should not repeat that. The saved
directory is described in :mod:`preroll.model.persist`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from preroll.defaults import DEFAULT_ENCODER, DEFAULT_HEAD, DEFAULT_MAX_HISTORY_ROWS


def fit(
    context: Path = typer.Option(..., "--context", help="History file (JSONL/CSV/Parquet) in the record schema."),
    save: Path = typer.Option(..., "--save", help="Model directory to write."),
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder"),
    head: str = typer.Option(DEFAULT_HEAD, "--head", help="logistic, auto (logistic+knn), knn, gp, tabpfn."),
    reward_range: tuple[float, float] = typer.Option(None, "--reward-range",
                                                     help="Scale of a 'reward' column, e.g. -1 1."),
    max_history_rows: int = typer.Option(DEFAULT_MAX_HISTORY_ROWS, "--max-history-rows", min=0,
                                         help="Refuse a longer history before any work (0: no limit)."),
    force: bool = typer.Option(False, "--force", help="Replace the model saved earlier in --save (only its own "
                                                       "files; a folder preroll did not write is refused)."),
) -> None:
    """Fit the value model on a history and save it to a model directory."""
    from rich.console import Console

    from preroll.data import load_records
    from preroll.data.loaders import check_history_size
    from preroll.model.persist import check_model_target, save_model
    from preroll.errors import OutputError
    from preroll.outputs import check_output
    from preroll.model.value_model import ValueModel

    from preroll.cli.options import check_model_options

    console = Console(stderr=True)
    check_model_options(encoder, head)
    if save.exists() and not force:
        raise OutputError(f"--save {save} already exists; pass --force to replace it")
    check_model_target(save, overwrite=force)  # --force replaces a model, never a folder of the user's
    target, source = save.expanduser().resolve(), context.expanduser().resolve()
    if target == source or target in source.parents:
        raise OutputError(f"--save {save} would overwrite the input {context}; choose another path")
    check_output(save.parent, folder=True, option="--save")  # a bad location fails now, not after the fit
    check_history_size(context, max_history_rows)
    history = load_records(context, reward_range=reward_range)
    console.log(f"context: {len(history)} records")
    vm = ValueModel(encoder=encoder, head=head, show_progress=True).fit(history)
    save_model(vm, save, overwrite=force)
    console.log(f"saved the model ({len(vm.snapshots_)} snapshots, encoder {vm.encoder_.name}) to {save}")
