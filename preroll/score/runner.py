"""Score a dataset with a saved model: local (one process, bounded memory) or on Ray Data.

The run is identified by its *run key* (model id, input fingerprint, filter,
output format, chunking, snapshot asked for): ``resume`` continues only a run
with the same key, so a resumed output is always what one uninterrupted run
would have written.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from preroll.outputs import atomic_write_bytes
from preroll.errors import InputError
from preroll.defaults import DEFAULT_BATCH_ROWS, DEFAULT_CHUNK_ROWS
from preroll.model.persist import ModelFormatError, load_model, read_manifest, verify_model_files, warm_cache
from preroll.score.keep import KeepFilter, parse_keep
from preroll.score.parts import (chunk_prompts, chunk_sources, keep_mask, part_bytes, predict_columns)
from preroll.score.report import write_report
from preroll.score.sources import InputFile, count_rows, discover_inputs, input_fingerprint, iter_chunks
from preroll.score.state import OutputDirError, PartStats, RunState

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
        if self.out_format == "parquet":  # before any scoring, not at the first part
            from preroll._optional import check

            check("pyarrow", extra="parquet", what="--format parquet (the default; --format jsonl needs nothing)")
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


def check_policy(manifest: dict, policy: str | None) -> None:
    """Refuse a ``--policy`` the saved model cannot score for, before the output directory is touched.

    The same rule as :meth:`ValueModel.resolve_snapshot`, read from the model's manifest, so a
    mistake costs one line instead of a started run in ``--out``.
    """
    snapshots = manifest.get("snapshots")
    if not isinstance(snapshots, list):
        return
    policies = sorted({s[0] for s in snapshots if isinstance(s, list) and s},
                      key=lambda p: (p is not None, str(p or "")))
    if policy is None and len(policies) > 1:
        named = ", ".join("(unnamed)" if p is None else str(p) for p in policies)
        raise InputError(f"the model's history holds several policies ({named}); pass --policy", field="--policy")
    if policy is not None and policies and policy not in policies:
        known = ", ".join(str(p) for p in policies if p is not None) or "none named"
        raise InputError(f"no history for policy {policy!r} in the model; known: {known}", field="--policy")


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
                  ray_concurrency: int | None = None, workers: int | None = 1) -> ScoreSummary:
    """Score every row of ``input_path`` (file or directory) into the directory ``out``.

    Local: chunks of ``options.chunk_rows`` rows are scored ``batch_rows`` at a
    time and written as one part each; memory stays bounded by a few chunks.
    ``workers`` processes predict in parallel (``None``: this machine's CPUs);
    the output is the same for any number of workers. With
    ``ray``/``ray_address``: the unfinished input files go through one Ray Data
    pipeline (see :mod:`preroll.score.ray_backend`).
    """
    model_dir, input_path, out = Path(model_dir), Path(input_path), Path(out)
    keep = parse_keep(options.keep) if options.keep is not None else None
    # A wrong or damaged model, or a --policy it cannot score for, fails before any write.
    check_policy(verify_model_files(model_dir), options.policy)
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
        if (default_workers() if workers is None else workers) > 1:
            warm_cache(model_dir, cache_dir=cache_dir)  # one lexical refit here, not one per worker
        rows, parts, skipped = _score_local(model_dir, files, state, keep, options, cache_dir, show_progress,
                                            workers=default_workers() if workers is None else workers)
    state.complete = True
    state.save()
    report = write_report(state, keep, model_dir=model_dir)
    return ScoreSummary(out, rows, report["kept"], parts, skipped, time.perf_counter() - started, report)


def default_workers() -> int:
    """The CPUs this process may run on (``sched_getaffinity`` where it exists, else ``os.cpu_count``)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _score_local(model_dir: Path, files: list[InputFile], state: RunState, keep: KeepFilter | None,
                 options: ScoreOptions, cache_dir, show_progress: bool, workers: int = 1) -> tuple[int, int, int]:
    """Score the unfinished chunks; ``workers`` > 1 predicts in that many processes, one CPU each.

    The main process reads chunks, writes parts and records them, in input
    order, so the output does not depend on ``workers``; at most ``workers + 1``
    chunks are in flight, so memory stays bounded by chunks, not by the dataset.
    """
    total = sum(count_rows(f) for f in files)
    rows_done = parts_done = skipped = 0
    with _progress(show_progress, total) as progress, _predictor(model_dir, cache_dir, options, workers) as submit:
        task = progress.add_task("score", total=total, rate="-")
        started = time.perf_counter()
        scored = 0

        def advance(n: int) -> None:
            nonlocal scored
            scored += n
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=n, rate=f"{scored / elapsed:,.0f}")

        def finish(chunk, columns) -> None:
            nonlocal rows_done, parts_done
            mask = keep_mask(keep, columns)
            name = f"part-{chunk.part_id}.{'jsonl' if options.out_format == 'jsonl' else 'parquet'}"
            state.will_write(name)
            atomic_write_bytes(state.out / name, part_bytes(chunk, columns, mask, options.out_format))
            state.finish_part(chunk.part_id, PartStats.measure(name, chunk.source.relpath, columns["p_success"],
                                                               mask, chunk_sources(chunk)))
            rows_done += len(chunk)
            parts_done += 1
            advance(len(chunk))

        in_flight: deque = deque()
        for file_index, f in enumerate(files):
            for chunk in iter_chunks(file_index, f, options.chunk_rows):
                if state.is_done(chunk.part_id):
                    progress.update(task, advance=len(chunk))
                    skipped += 1
                    continue
                in_flight.append((chunk, submit(chunk_prompts(chunk))))
                while len(in_flight) > (workers if workers > 1 else 0):
                    done, future = in_flight.popleft()
                    finish(done, future.result())
        while in_flight:
            done, future = in_flight.popleft()
            finish(done, future.result())
    return rows_done, parts_done, skipped


@contextmanager
def _predictor(model_dir: Path, cache_dir, options: ScoreOptions, workers: int):
    """Yields ``submit(prompts) -> future of the prediction columns``: in process, or on a process pool."""
    if workers <= 1:
        model = load_model(model_dir, cache_dir=cache_dir, memory_items=0)

        def submit(prompts: list[str]) -> Future:
            future: Future = Future()
            future.set_result(predict_columns(model, prompts, policy=options.policy, step=options.step,
                                              batch_rows=options.batch_rows))
            return future

        yield submit
        return
    import multiprocessing
    from concurrent.futures.process import BrokenProcessPool

    # spawn, not fork: a forked copy of a process that has started torch's thread pools can hang.
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_worker_start, initargs=(str(model_dir), cache_dir, os.getpid())) as pool:
            yield lambda prompts: pool.submit(_worker_predict, prompts, options.policy, options.step,
                                              options.batch_rows)
    except BrokenProcessPool:
        raise ModelFormatError(f"{model_dir}: the scoring worker processes could not load the model or died "
                               "(out of memory?); run with --workers 1 to see the cause") from None


_WORKER_MODEL = None


def _worker_start(model_dir: str, cache_dir, parent: int) -> None:
    """Load the model once per worker process, limited to one CPU thread (the pool is the parallelism)."""

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = "1"
    _exit_with_parent(parent)
    global _WORKER_MODEL
    _WORKER_MODEL = load_model(model_dir, cache_dir=cache_dir, memory_items=0)
    if "torch" in __import__("sys").modules:
        import torch

        torch.set_num_threads(1)


def _exit_with_parent(parent: int) -> None:
    """A killed scorer must not leave its workers behind: each one exits once its parent is gone.

    (A pool worker otherwise waits for work forever on its queue; SIGKILL gives
    the parent no chance to shut the pool down.) ``parent`` is the pid the
    parent passed in, not ``os.getppid()`` read here: a worker still starting
    up when the parent is killed would read the reaper's pid and wait forever.
    """
    import threading

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="preroll-parent-watch", daemon=True).start()


def _worker_predict(prompts: list[str], policy, step, batch_rows: int) -> dict:
    return predict_columns(_WORKER_MODEL, prompts, policy=policy, step=step, batch_rows=batch_rows)
