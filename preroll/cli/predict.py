"""``preroll predict``: score query prompts from a policy's history.

Contract: query rows need ``prompt``; every other field is copied through;
each output row adds ``p_success``, ``p_std`` and the Beta ``alpha``/``beta``.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD


def predict(
    context: Path = typer.Option(..., "--context", help="History file (JSONL/CSV/Parquet) in the record schema."),
    prompts: Path = typer.Option(..., "--prompts", help="Query file: rows with 'prompt' (other fields pass through)."),
    out: Path = typer.Option(..., "--out", help="Output JSONL."),
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder"),
    head: str = typer.Option(DEFAULT_HEAD, "--head", help="logistic, auto (logistic+knn), knn, gp, tabpfn."),
    reward_range: tuple[float, float] = typer.Option(None, "--reward-range",
                                                     help="Scale of a 'reward' column, e.g. -1 1."),
    policy: str = typer.Option(None, help="Policy to score for (when the history holds several)."),
    step: int = typer.Option(None, help="Training step to score for (default: latest in the history)."),
) -> None:
    """Predict each query prompt's success probability and its uncertainty."""
    from rich.console import Console

    from preroll.data import RecordError, load_queries, load_records
    from preroll.model.value_model import ValueModel

    console = Console(stderr=True)
    try:
        history = load_records(context, reward_range=reward_range)
        rows = load_queries(prompts)
    except RecordError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.log(f"context: {len(history)} records; queries: {len(rows)}")
    vm = ValueModel(encoder=encoder, head=head, show_progress=True)
    try:
        vm.fit(history)
        pred = vm.predict([r["prompt"] for r in rows], policy=policy, step=step)
    except (ValueError, RuntimeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row, p, sd, a, b in zip(rows, pred.p_success, pred.std, pred.alpha, pred.beta):
            fh.write(json.dumps({**row, "p_success": float(p), "p_std": float(sd),
                                 "alpha": float(a), "beta": float(b)}, ensure_ascii=False) + "\n")
    tmp.replace(out)  # never leave a half-written output behind
    console.log(f"wrote {len(rows)} predictions to {out}")
