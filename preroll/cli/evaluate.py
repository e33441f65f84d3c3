"""``preroll eval``: score the value model on the shared DAPO-Math data."""

from __future__ import annotations

from pathlib import Path

import typer

from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD


def evaluate(
    data: Path = typer.Option(None, help="V_0-layout data folder (default: ../shared/data/dapo-math-v0)."),
    encoder: str = typer.Option(DEFAULT_ENCODER, help="minilm, lexical, stats, a sentence-transformers name/path, or several joined by +."),
    head: str = typer.Option(DEFAULT_HEAD, help="logistic, auto (logistic+knn), knn, gp, tabpfn."),
    folds: int = typer.Option(8, help="Prompt-disjoint CV folds inside each context."),
    seed: int = typer.Option(0),
    pool_policies: bool = typer.Option(True, help="Add other policies' histories to each fold's context."),
    limit: int = typer.Option(None, help="Use only the first N rows of each (policy, step) (quick look)."),
    out: Path = typer.Option(Path("runs/eval"), help="Where report.json and reliability.png go."),
) -> None:
    """Cross-validate the value model per (policy, step) and print AUC, Brier, MAE, ECE."""
    from rich.console import Console
    from rich.table import Table

    from preroll.bench.value import run_eval, write_report
    from preroll.data.paths import dapo_dir

    console = Console()
    report = run_eval(data or dapo_dir(), encoder=encoder, head=head, n_splits=folds, seed=seed,
                      pool_policies=pool_policies, limit=limit, log=lambda m: console.log(m))
    table = Table(title=f"preroll eval — {report['encoder']} / {head}, {folds}-fold cold-prompt CV")
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
    console.print(f"report: {js}\nreliability diagram: {png}")
