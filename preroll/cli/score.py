"""``preroll score``: stream a prompt pool through a saved model; filter it; report on it.

Local by default (one process, bounded memory, resumable per chunk); ``--ray``
or ``--ray-address`` runs the same scoring on Ray Data. See docs/score.md.
"""

from __future__ import annotations

from pathlib import Path

import typer

from preroll.defaults import DEFAULT_BATCH_ROWS, DEFAULT_CHUNK_ROWS


def score(
    model: Path = typer.Option(..., "--model", help="Model directory written by `preroll fit --save`."),
    input_path: Path = typer.Option(..., "--input", help="JSONL/Parquet file, or a directory of them (shards)."),
    out: Path = typer.Option(..., "--out", help="Output directory: one part per input chunk, a manifest, a report."),
    out_format: str = typer.Option("parquet", "--format", help="parquet or jsonl."),
    keep: str = typer.Option(None, "--keep", help="Filter on output columns, e.g. '0.1 <= p_success <= 0.9'."),
    policy: str = typer.Option(None, help="Policy to score for (when the history holds several)."),
    step: int = typer.Option(None, help="Training step to score for (default: latest in the history)."),
    resume: bool = typer.Option(False, "--resume",
                                help="Continue an interrupted run in --out (same model, input, options)."),
    force: bool = typer.Option(False, "--force", help="Discard an earlier run in --out and start over."),
    chunk_rows: int = typer.Option(DEFAULT_CHUNK_ROWS, "--chunk-rows", help="Rows per output part (unit of resume)."),
    batch_rows: int = typer.Option(DEFAULT_BATCH_ROWS, "--batch-rows", help="Rows per model call."),
    ray: bool = typer.Option(False, "--ray", help="Run on a local Ray (needs: pip install 'preroll[ray]')."),
    ray_address: str = typer.Option(None, "--ray-address", help="Run on the Ray cluster at this address."),
    workers: int = typer.Option(None, "--workers", min=1,
                                help="Scoring processes (local) or Ray actors, one CPU each (default: this "
                                     "machine's CPUs; on a Ray cluster, its CPUs minus one)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar with an ETA on stderr."),
) -> None:
    """Score every prompt of a dataset; keep the rows passing --keep; write parts and a report."""
    from rich.console import Console

    from preroll.score import ScoreOptions, score_dataset

    console = Console(stderr=True)
    options = ScoreOptions(out_format=out_format, keep=keep, policy=policy, step=step, chunk_rows=chunk_rows,
                           batch_rows=batch_rows)
    summary = score_dataset(model, input_path, out, options, resume=resume, force=force,
                            show_progress=progress, ray=ray, ray_address=ray_address, ray_concurrency=workers,
                            workers=workers)
    report = summary.report
    rate = summary.rows / summary.seconds if summary.seconds > 0 else float("nan")
    console.print(f"scored {summary.rows:,} rows in {summary.seconds:.1f} s ({rate:,.0f} rows/s); "
                  f"{summary.parts_skipped} parts already done; kept {report['kept']:,} of {report['rows']:,}; "
                  f"output {summary.out}, report {summary.out / '_report' / 'report.json'}", soft_wrap=True)
