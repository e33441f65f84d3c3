"""Score a dataset with a saved model: local (one process, bounded memory) or on Ray Data.

The run is identified by its *run key* (model id, input fingerprint, filter,
output format, chunking, snapshot asked for): ``resume`` continues only a run
with the same key, so a resumed output is always what one uninterrupted run
would have written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from preroll.errors import InputError
from preroll.defaults import DEFAULT_BATCH_ROWS, DEFAULT_CHUNK_ROWS
from preroll.model.persist import load_model, read_manifest
from preroll.score.keep import KeepFilter, parse_keep
from preroll.score.parts import (chunk_prompts, chunk_sources, keep_mask, part_bytes, predict_columns)
from preroll.score.report import write_report
from preroll.score.sources import InputFile, count_rows, discover_inputs, input_fingerprint, iter_chunks
from preroll.score.state import OutputDirError, PartStats, RunState, atomic_write_bytes

FORMATS = ("parquet", "jsonl")


@dataclass(frozen=True)
class ScoreOptions:
    """What to score for and how to write it."""

    out_format: str = "parquet"
    keep: str | None = None
    policy: str | None = None
    step: int | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    batch_rows: int = DEFAULT_BATCH_ROWS

    def __post_init__(self) -> None:
        if self.out_format not in FORMATS:
            raise InputError(f"--format must be one of {', '.join(FORMATS)} (got {self.out_format!r})")
        if self.chunk_rows < 1 or self.batch_rows < 1:
            raise InputError("chunk and batch sizes must be positive")


@dataclass
class ScoreSummary:
    """What a run did: rows scored now, rows skipped as already done, where the output and report are."""

    out: Path
    rows: int
    kept: int
    parts: int
    parts_skipped: int
    seconds: float
    report: dict = field(default_factory=dict)


def check_not_overlapping(input_root: Path, out: Path) -> None:
    """An output never overwrites an input: refuse an --out that is, holds or lies inside the input."""
    src, dst = input_root.resolve(), out.resolve()
    if src == dst or src in dst.parents or dst in src.parents:
        raise OutputDirError(f"--out {out} overlaps the input {input_root}; an output is never written over or "
                             "inside an input (nor around it)")


def run_key(model_dir: Path, files: list[InputFile], options: ScoreOptions, backend: str) -> dict:
    return {"model_id": read_manifest(model_dir)["model_id"], "input": input_fingerprint(files),
            "keep": options.keep, "format": options.out_format, "policy": options.policy, "step": options.step,
            "chunk_rows": options.chunk_rows if backend == "local" else None, "backend": backend}


def _progress(show: bool, total: int):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    columns = [TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} rows/s"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn()]
    from rich.console import Console

    return Progress(*columns, console=Console(stderr=True), disable=not show, refresh_per_second=4)


def score_dataset(model_dir: str | Path, input_path: str | Path, out: str | Path,
                  options: ScoreOptions = ScoreOptions(),
                  *, resume: bool = False, force: bool = False, show_progress: bool = False,
                  cache_dir=None, ray: bool = False, ray_address: str | None = None,
                  ray_concurrency: int | None = None) -> ScoreSummary:
    """Score every row of ``input_path`` (file or directory) into the directory ``out``.

    Local: chunks of ``options.chunk_rows`` rows are scored ``batch_rows`` at a
    time and written as one part each; memory stays bounded by a chunk. With
    ``ray``/``ray_address``: the unfinished input files go through one Ray Data
    pipeline (see :mod:`preroll.score.ray_backend`).
    """
    model_dir, input_path, out = Path(model_dir), Path(input_path), Path(out)
    keep = parse_keep(options.keep) if options.keep is not None else None
    read_manifest(model_dir)  # a wrong model directory fails before anything is written
    files = discover_inputs(input_path)
    check_not_overlapping(input_path, out)
    backend = "ray" if (ray or ray_address) else "local"
    state = RunState.open(out, run_key(model_dir, files, options, backend), [f.relpath for f in files],
                          resume=resume, force=force)
    started = time.perf_counter()
    if backend == "ray":
        from preroll.score.ray_backend import score_with_ray

        rows, parts, skipped = score_with_ray(model_dir, files, state, keep, options, address=ray_address,
                                              concurrency=ray_concurrency, cache_dir=cache_dir,
                                              show_progress=show_progress)
    else:
        rows, parts, skipped = _score_local(model_dir, files, state, keep, options, cache_dir, show_progress)
    state.complete = True
    state.save()
    report = write_report(state, keep, model_dir=model_dir)
    return ScoreSummary(out, rows, report["kept"], parts, skipped, time.perf_counter() - started, report)


def _score_local(model_dir: Path, files: list[InputFile], state: RunState, keep: KeepFilter | None,
                 options: ScoreOptions, cache_dir, show_progress: bool) -> tuple[int, int, int]:
    model = load_model(model_dir, cache_dir=cache_dir, memory_items=0)
    total = sum(count_rows(f) for f in files)
    rows_done = parts_done = skipped = 0
    with _progress(show_progress, total) as progress:
        task = progress.add_task("score", total=total, rate="-")
        started = time.perf_counter()
        scored = 0

        def advance(n: int) -> None:
            nonlocal scored
            scored += n
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=n, rate=f"{scored / elapsed:,.0f}")

        for file_index, f in enumerate(files):
            for chunk in iter_chunks(file_index, f, options.chunk_rows):
                if state.is_done(chunk.part_id):
                    progress.update(task, advance=len(chunk))
                    skipped += 1
                    continue
                prompts = chunk_prompts(chunk)
                columns = predict_columns(model, prompts, policy=options.policy, step=options.step,
                                          batch_rows=options.batch_rows, on_batch=advance)
                mask = keep_mask(keep, columns)
                name = f"part-{chunk.part_id}.{'jsonl' if options.out_format == 'jsonl' else 'parquet'}"
                atomic_write_bytes(state.out / name, part_bytes(chunk, columns, mask, options.out_format))
                state.finish_part(chunk.part_id, PartStats.measure(name, f.relpath, columns["p_success"], mask,
                                                                   chunk_sources(chunk)))
                rows_done += len(chunk)
                parts_done += 1
    return rows_done, parts_done, skipped
