"""``preroll eval``: score the value model on the shared DAPO-Math data.

The default is the quick look a new user runs first (4 folds, each policy's
latest step scored, earlier steps as context: a few minutes on 2 cores);
``--full`` is the README's full evaluation (8 folds, every step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD


def evaluate(
    data: Path = typer.Option(None, help="V_0-layout data folder (default: ../shared/data/dapo-math-v0)."),
    encoder: str = typer.Option(DEFAULT_ENCODER, help="minilm, lexical, stats, a sentence-transformers name/path, or several joined by +."),
    head: str = typer.Option(DEFAULT_HEAD, help="logistic, auto (logistic+knn), knn, gp, tabpfn."),
    full: bool = typer.Option(False, "--full", help="The full evaluation: 8 folds, every (policy, step) scored."),
    folds: Optional[int] = typer.Option(None, min=2, help="Prompt-disjoint CV folds (default 4, or 8 with --full)."),
    seed: int = typer.Option(0),
    pool_policies: bool = typer.Option(True, help="Add other policies' histories to each fold's context."),
    limit: int = typer.Option(None, min=1, help="Use only the first N rows of each (policy, step) (quick look)."),
    out: Path = typer.Option(Path("runs/eval"), help="Where report.json and reliability.png go."),
) -> None:
    """Cross-validate the value model per (policy, step) and print AUC, Brier, MAE, ECE."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from rich.table import Table

    from preroll.bench.value import run_eval, write_report
    from preroll.data.paths import dapo_dir
    from preroll.outputs import check_output

    from preroll.cli.options import check_model_options

    check_model_options(encoder, head)
    data = data or dapo_dir()
    n_splits = folds or (8 if full else 4)
    check_output(out, inputs=(data,), folder=True)
    console = Console()
    with Progress(TextColumn("cross-validating"), BarColumn(), MofNCompleteColumn(), TextColumn("folds"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task("cv", total=None)
        report = run_eval(data, encoder=encoder, head=head, n_splits=n_splits, seed=seed,
                          pool_policies=pool_policies, limit=limit, latest_only=not full,
                          log=lambda m: bar.console.print(m, markup=False, highlight=False),
                          progress=lambda done, total: bar.update(task, completed=done, total=total))
    scope = "every step" if full else "latest step per policy"
    table = Table(title=f"preroll eval: {encoder} / {head}, {n_splits}-fold cold-prompt CV, {scope}")
    for col in ("policy", "step", "n", "CV AUC", "Brier", "MAE", "ECE", "held-out AUC (n)"):
        table.add_column(col)
    for r in report["rows"]:
        cv, h = r["cv"], r["heldout"]
        table.add_row(r["policy"], str(r["step"]), str(cv["n"]), f"{cv['auc']:.3f}", f"{cv['brier']:.3f}",
                      f"{cv['mae']:.3f}", f"{cv['ece']:.3f}", f"{h['auc']:.3f} ({h['n']})" if h else "-")
    m = report["mean_cv"]
    table.add_row("mean", "", "", f"{m['auc']:.3f}", f"{m['brier']:.3f}", f"{m['mae']:.3f}", f"{m['ece']:.3f}",
                  f"{report['mean_heldout_auc']:.3f}", style="bold")
    console.print(table)
    js, png = write_report(report, out)
    console.print(f"report: {js}\nreliability diagram: {png}", markup=False, highlight=False)
    if not full:
        console.print("quick look; the full evaluation (README table): preroll eval --full", markup=False)
