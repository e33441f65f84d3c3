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
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder", help="Prompt encoder: minilm, lexical, stats, a sentence-transformers name or path, or several joined by +; lexical+stats needs no torch."),
    head: str = typer.Option(DEFAULT_HEAD, "--head", help="logistic, ensemble (logistic+knn), knn, gp, tabpfn; auto: the recommended head (now logistic)."),
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
    from preroll.cli.progress import WorkProgress

    from preroll.cli.options import check_model_options

    console = Console(stderr=True, log_path=False)  # no "fit.py:49" source locations in log lines
    check_model_options(encoder, head)
    if save.exists() and not force:
        raise OutputError(f"--save {save} already exists; pass --force to replace it")
    check_model_target(save, overwrite=force)  # --force replaces a model, never a folder of the user's
    target, source = save.expanduser().resolve(), context.expanduser().resolve()
    if target == source or target in source.parents:
        raise OutputError(f"--save {save} would overwrite the input {context}; choose another path")
    check_output(save.parent, folder=True, option="--save")  # a bad location fails now, not after the fit
    check_history_size(context, max_history_rows)
    with WorkProgress("preroll fit", 30.0, stage="loading the history") as progress:
        history = load_records(context, reward_range=reward_range)
        progress.log(f"context: {len(history)} records")
        vm = _fit_with_progress(history, encoder, head, progress)
        progress.stage("saving the model")
        save_model(vm, save, overwrite=force)
    console.log(f"saved the model ({len(vm.snapshots_)} snapshots, encoder {vm.encoder_.name}) to {save}")


def _fit_with_progress(history, encoder: str, head: str, progress):
    """Fit under the progress bar: the prompts missing from the embedding cache are embedded first, in
    chunks (with a fresh cache that is most of a fit), then the text views and the head are fitted."""
    from preroll.workunits import UNITS_LOAD_MODEL, UNITS_PER_EMBEDDED_PROMPT, UNITS_PER_FIT_ROW, UNITS_PER_VIEW_TEXT
    from preroll.encoders import get_encoder
    from preroll.encoders.warm import embed_missing, missing_texts
    from preroll.model.value_model import ValueModel

    enc = get_encoder(encoder)
    texts = list(dict.fromkeys(r.prompt for r in history))
    todo = missing_texts(enc, texts)
    n_embed = sum(len(t) for _, t in todo)
    fit_units = UNITS_PER_VIEW_TEXT * len(texts) + UNITS_PER_FIT_ROW * len(history)
    progress.plan((UNITS_LOAD_MODEL if n_embed else 0) + UNITS_PER_EMBEDDED_PROMPT * n_embed + fit_units + 2.0)
    if n_embed:
        progress.stage("loading the encoder model")
        loading = [UNITS_LOAD_MODEL]
        embed_missing(todo, lambda now, done, total: progress.advance(
            UNITS_PER_EMBEDDED_PROMPT * now + (loading.pop() if loading else 0.0), f"embedding prompts {done}/{total}"))
    progress.stage("fitting the text views and the head")
    vm = ValueModel(encoder=encoder, head=head).fit(history)  # the spec: the saved model names it; vectors now cached
    progress.advance(fit_units)
    return vm
