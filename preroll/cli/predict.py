"""``preroll predict``: score query prompts from a policy's history.

Contract: query rows need ``prompt``; every other field is copied through;
each output row adds ``p_success``, ``p_std`` and the Beta ``alpha``/``beta``.
The output is checked before the fit (never an input, never an existing file
without ``--force``) and written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD


def predict(
    context: Path = typer.Option(..., "--context", help="History file (JSONL/CSV/Parquet) in the record schema."),
    prompts: Path = typer.Option(..., "--prompts", help="Query file: rows with 'prompt' (other fields pass through)."),
    out: Path = typer.Option(..., "--out", help="Output JSONL (refused if it is an input or exists, unless --force)."),
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder"),
    head: str = typer.Option(DEFAULT_HEAD, "--head", help="logistic, auto (logistic+knn), knn, gp, tabpfn."),
    reward_range: tuple[float, float] = typer.Option(None, "--reward-range",
                                                     help="Scale of a 'reward' column, e.g. -1 1."),
    policy: str = typer.Option(None, help="Policy to score for (when the history holds several)."),
    step: int = typer.Option(None, help="Training step to score for (default: latest in the history)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
) -> None:
    """Predict each query prompt's success probability and its uncertainty."""
    import warnings

    from rich.console import Console

    from preroll.data import load_queries, load_records
    from preroll.outputs import atomic_open, check_output

    console = Console(stderr=True)
    check_output(out, inputs=(context, prompts), force=force)
    history = load_records(context, reward_range=reward_range)
    rows = load_queries(prompts)
    console.log(f"context: {len(history)} records; queries: {len(rows)}")
    from preroll.model.value_model import ValueModel

    vm = ValueModel(encoder=encoder, head=head, show_progress=True)
    vm.fit(history)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snap = vm.resolve_snapshot(policy, step)
        pred = vm.predict([r["prompt"] for r in rows], policy=policy, step=step)
    for msg in dict.fromkeys(str(w.message) for w in caught):
        console.print(f"warning: {msg}", markup=False, highlight=False)
    console.log(f"scored for {snap.name}", markup=False)
    with atomic_open(out) as fh:
        for row, p, sd, a, b in zip(rows, pred.p_success, pred.std, pred.alpha, pred.beta):
            fh.write(json.dumps({**row, "p_success": float(p), "p_std": float(sd),
                                 "alpha": float(a), "beta": float(b)}, ensure_ascii=False,
                                allow_nan=False) + "\n")
    console.log(f"wrote {len(rows)} predictions to {out}", markup=False)
