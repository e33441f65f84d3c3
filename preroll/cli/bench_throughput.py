"""``preroll bench throughput``: how many prompts per second preroll scores.

Two questions, two modes:

- default: encode+predict throughput for cold prompts (empty cache) and cached
  prompts (memory layer, and a fresh process-like reopen of the disk cache),
  with peak memory;
- ``--sweep``: the encoder speed/accuracy trade-off across token lengths and
  int8 quantisation, scored by cold-prompt ROC-AUC of a fixed logistic head
  inside each (policy, step) group of the DAPO-Math context.

Heavy imports live inside the command body so ``preroll --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from preroll.defaults import DEFAULT_BATCH_SIZE
from preroll.model.defaults import DEFAULT_ENCODER


def _parse_ints(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"expected positive integers, got {text!r}", param_hint=option)
    return values


def bench_throughput(
    encoder: str = typer.Option(DEFAULT_ENCODER, help="Encoder spec (default: the value model's): minilm, lexical, stats, a model name or a local path, or several joined by +."),
    n_prompts: int = typer.Option(512, "--n-prompts", min=1, help="Cold prompts to score (not in the fit history); with --sweep, prompts per timing round."),
    max_length: Optional[int] = typer.Option(None, min=1, help="Token limit (default: the encoder's default)."),
    quantize: Optional[bool] = typer.Option(None, "--quantize/--no-quantize", help="int8 linear layers (default: the encoder's default)."),
    threads: Optional[int] = typer.Option(None, min=1, help="torch.set_num_threads for encoding."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, min=1, help="Prompts per forward pass."),
    sweep: bool = typer.Option(False, "--sweep", help="Compare token lengths x int8 by speed and cold-prompt AUC instead."),
    lengths: str = typer.Option("256,128,64", help="--sweep: token lengths to compare."),
    lexical_baseline: bool = typer.Option(True, "--lexical/--no-lexical", help="--sweep: add the lexical encoder as a reference row."),
    rounds: int = typer.Option(3, min=1, help="--sweep: interleaved timing rounds (the median is reported)."),
    data_dir: Optional[Path] = typer.Option(None, help="DAPO-Math v0 directory (default: the bundled data)."),
    seed: int = typer.Option(0, help="Seed for prompt sampling and CV folds."),
) -> None:
    """Prompts per second for cold and cached prompts, and peak memory; or, with --sweep, speed vs accuracy."""
    from preroll.bench.throughput import run_sweep, run_throughput
    from preroll.data.paths import dapo_dir

    directory = data_dir or dapo_dir()
    if sweep:
        run_sweep(directory, lengths=_parse_ints(lengths, "--lengths"), threads=threads, batch_size=batch_size,
                  lexical_baseline=lexical_baseline, seed=seed, timing_prompts=n_prompts, rounds=rounds)
    else:
        run_throughput(directory, spec=encoder, n_prompts=n_prompts, max_length=max_length, quantize=quantize,
                       threads=threads, batch_size=batch_size, seed=seed)
