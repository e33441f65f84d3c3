"""``preroll eval``: score the value model on the bundled DAPO-Math data.

The default is the quick look a new user runs first: 4 folds, each policy's
latest step scored with the earlier steps as context, the label-free text views
fitted once, no held-out queries (about a minute of one CPU core on a fresh
embedding cache). ``--full`` is the README's full evaluation: 8 folds, every
step, views refitted per fold, and the 32-query held-out sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD


def evaluate(
    data: Path = typer.Option(None, help="V_0-layout data folder (default: the bundled DAPO-Math histories)."),
    encoder: str = typer.Option(DEFAULT_ENCODER, help="minilm, lexical, stats, a sentence-transformers name/path, or several joined by +."),
    head: str = typer.Option(DEFAULT_HEAD, help="logistic, ensemble (logistic+knn), knn, gp, tabpfn; auto: the recommended head (now logistic)."),
    full: bool = typer.Option(False, "--full", help="The full evaluation: 8 folds, every (policy, step) scored, "
                                                     "text views refitted per fold, held-out queries."),
    folds: Optional[int] = typer.Option(None, min=2, help="Prompt-disjoint CV folds (default 4, or 8 with --full)."),
    seed: int = typer.Option(0, help="Seed of the fold split (same seed, same folds)."),
    pool_policies: bool = typer.Option(True, help="Add other policies' histories to each fold's context."),
    limit: int = typer.Option(None, min=1, help="Use only the first N rows of each (policy, step) (quick look)."),
    out: Path = typer.Option(Path("runs/eval"), help="Where report.json and reliability.png go."),
    threads: int = typer.Option(1, min=1, help="CPU threads for embedding and fitting. 1 is fastest on a busy "
                                               "machine; more helps only on an idle multi-core one."),
) -> None:
    """Cross-validate the value model per (policy, step) and print AUC, Brier, MAE, ECE."""
    from rich.console import Console
    from rich.table import Table

    from preroll.bench.value import run_eval, write_report
    from preroll.cli.progress import WorkProgress
    from preroll.data.paths import dapo_dir
    from preroll.outputs import check_output

    from preroll.cli.options import check_model_options

    check_model_options(encoder, head)
    data = data or dapo_dir()
    n_splits = folds or (8 if full else 4)
    check_output(out, inputs=(data,), folder=True)
    console = Console()
    # The prior total (units ~ quiet core-seconds) until run_eval plans the real one from the data.
    with WorkProgress("preroll eval", 60.0 if not full else 400.0, stage="loading the data") as progress:
        report = run_eval(data, encoder=encoder, head=head, n_splits=n_splits, seed=seed,
                          pool_policies=pool_policies, limit=limit, latest_only=not full, heldout=full,
                          log=progress.log, progress=progress, threads=threads)
    scope = "every step" if full else "latest step per policy"
    table = Table(title=f"preroll eval: {encoder} / {head}, {n_splits}-fold cold-prompt CV, {scope}")
    columns = ["policy", "step", "n", "CV AUC", "Brier", "MAE", "ECE"] + (["held-out AUC (n)"] if full else [])
    for col in columns:
        table.add_column(col)
    for r in report["rows"]:
        cv, h = r["cv"], r["heldout"]
        cells = [r["policy"], str(r["step"]), str(cv["n"]), f"{cv['auc']:.3f}", f"{cv['brier']:.3f}",
                 f"{cv['mae']:.3f}", f"{cv['ece']:.3f}"]
        table.add_row(*cells, *([f"{h['auc']:.3f} ({h['n']})" if h else "-"] if full else []))
    m = report["mean_cv"]
    held = report["mean_heldout_auc"]
    table.add_row("mean", "", "", f"{m['auc']:.3f}", f"{m['brier']:.3f}", f"{m['mae']:.3f}", f"{m['ece']:.3f}",
                  *([f"{held:.3f}" if held is not None else "-"] if full else []), style="bold")
    console.print(table)
    for line in _notes(full):
        console.print(line, markup=False, highlight=False)
    js, png = write_report(report, out)
    console.print(f"report: {js}\nreliability diagram: {png}", markup=False, highlight=False)
    if not full:
        console.print("quick look; the full evaluation (every step, text views refitted per fold, the held-out "
                      "queries): preroll eval --full", markup=False)


def _notes(full: bool) -> list[str]:
    """What a newcomer needs to read the table (printed under it)."""
    notes = [
        "CV AUC: how well the predicted success ranks prompts the model never saw (solved by at least half the "
        "rollouts or not); 0.5 is chance, 1.0 perfect.",
        "Brier / MAE: squared / absolute error of the predicted success rate; ECE: calibration error (0 = the "
        "predicted rates match the observed ones).",
    ]
    if full:
        notes.append("held-out AUC: only 32 queries per row, whose success rates are skewed against the "
                     "history's (preroll/datasets/README.md): noisy (about +-0.1) and can fall below 0.5; read "
                     "the CV AUC.")
    return notes
