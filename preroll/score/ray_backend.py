"""Scoring on Ray Data, for pools one machine scores too slowly (``preroll score --ray``).

The pipeline is ``read_parquet/read_json -> map_batches(ScoreBatch, concurrency=N) -> write_parquet``:
each actor loads the fitted model once (its bytes travel through Ray's object
store, so workers need no shared copy of the model directory) and scores
Arrow batches with the same code as the local runner. Rows are written to a
staging directory with a keep flag; the driver then streams the staged files
once to apply the filter, write the final parts and count the report.

Resume granularity is the whole Ray job: a finished run is skipped, an
interrupted one is run again from its staging directory's scratch (the local
runner resumes per chunk). Inputs and output must be paths every worker can
reach (a shared filesystem, or the same local disk on one machine).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from preroll.outputs import atomic_write_bytes
from preroll.data.errors import RecordError
from preroll.errors import MissingExtraError
from preroll.model.persist import ENCODER_STATE, MANIFEST, STATE, load_model
from preroll.score.keep import PREDICTION_COLUMNS, KeepFilter, parse_keep
from preroll.score.parts import SOURCE_COLUMNS, predict_columns, with_prediction_columns
from preroll.score.state import PartStats, RunState

KEEP_FLAG = "_preroll_keep"
STAGING = "_staging"


class ScoreBatch:
    """A Ray Data callable class: holds one loaded model per actor and scores Arrow batches."""

    def __init__(self, model_files: dict, keep: str | None, policy, step, batch_rows: int, cache_dir=None) -> None:
        import ray

        files = {name: ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref for name, ref in model_files.items()}
        self._dir = tempfile.mkdtemp(prefix="preroll-model-")
        for name, data in files.items():
            Path(self._dir, name).write_bytes(data)
        self.model = load_model(self._dir, cache_dir=cache_dir, memory_items=0)
        self.keep = parse_keep(keep) if keep is not None else None
        self.policy, self.step, self.batch_rows = policy, step, batch_rows

    def __call__(self, batch):
        import pyarrow as pa

        if "prompt" not in batch.column_names:
            raise RecordError("required column is missing", field="prompt")
        taken = [c for c in PREDICTION_COLUMNS if c in batch.column_names]
        if taken:
            raise RecordError(f"the input already has a {taken[0]!r} column, which scoring writes; rename it",
                              field=taken[0])
        prompts = batch.column("prompt").to_pylist()
        for prompt in prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise RecordError(f"a row has no usable prompt ({prompt!r})", field="prompt")
        columns = predict_columns(self.model, prompts, policy=self.policy, step=self.step,
                                  batch_rows=self.batch_rows)
        mask = np.ones(len(prompts), dtype=bool) if self.keep is None else self.keep.mask(columns)
        return with_prediction_columns(batch, columns).append_column(KEEP_FLAG, pa.array(mask, type=pa.bool_()))

    def __del__(self):  # pragma: no cover - actor teardown
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)


def _root_cause(exc: BaseException) -> BaseException:
    """The user-facing error inside Ray's wrappers (RayTaskError keeps the original as ``cause``)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (RecordError, ValueError)) and not type(exc).__module__.startswith("ray"):
            return exc
        nxt = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


def score_with_ray(model_dir: Path, files, state: RunState, keep: KeepFilter | None, options, *,
                   address: str | None, concurrency: int | None, cache_dir,
                   show_progress: bool) -> tuple[int, int, int]:
    try:
        import aiohttp  # noqa: F401  (Ray Data lists a directory of shards through fsspec's http module)
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"--ray needs Ray Data and aiohttp ({exc.name} is missing): "
                                "pip install 'preroll[ray]'") from None
    if state.complete:
        return 0, 0, len(state.parts)
    staging = state.out / STAGING
    state.will_write(STAGING)
    shutil.rmtree(staging, ignore_errors=True)
    for stale in list(state.parts):  # a half-finished Ray job is redone whole
        (state.out / state.parts.pop(stale).file).unlink(missing_ok=True)
    state.save()

    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = dict(address=address, log_to_driver=False, include_dashboard=False)
        if address is None:
            # One logical CPU beyond the scoring actors for Ray Data's read and write tasks: with
            # every CPU held by an actor, the reads never get scheduled and the job waits forever.
            init["num_cpus"] = (concurrency or os.cpu_count() or 1) + 1
        ray.init(**init)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = show_progress
        model_files = {name: ray.put((model_dir / name).read_bytes()) for name in (MANIFEST, STATE, ENCODER_STATE)}
        workers = concurrency or max(1, int(ray.cluster_resources().get("CPU", 2)) - 1)
        paths = [str(f.path.resolve()) for f in files]
        formats = {f.format for f in files}
        if formats == {"parquet"}:
            ds = ray.data.read_parquet(paths)
        elif formats == {"jsonl"}:
            ds = ray.data.read_json(paths, lines=True)
        else:
            raise RecordError("a Ray run reads one format: the input mixes JSONL and Parquet files")
        ds = ds.map_batches(ScoreBatch, batch_format="pyarrow", batch_size=options.batch_rows,
                            concurrency=workers, num_cpus=1,
                            fn_constructor_kwargs=dict(model_files=model_files, keep=options.keep,
                                                       policy=options.policy, step=options.step,
                                                       batch_rows=options.batch_rows, cache_dir=cache_dir))
        try:
            ds.write_parquet(str(staging.resolve()))
        except Exception as exc:
            cause = _root_cause(exc)
            if isinstance(cause, (RecordError, ValueError)):
                raise cause from None
            raise
    finally:
        if started_here:
            ray.shutdown()
    return _finalize(staging, state, options)


def _finalize(staging: Path, state: RunState, options) -> tuple[int, int, int]:
    """Stream the staged files once: filter, write the final parts, record their statistics."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from preroll.score.parts import _jsonl_bytes

    rows = parts = 0
    for index, path in enumerate(sorted(staging.rglob("*.parquet"))):
        table = pq.read_table(path)
        mask = table.column(KEEP_FLAG).to_numpy(zero_copy_only=False).astype(bool)
        table = table.drop_columns([KEEP_FLAG])
        p_success = table.column("p_success").to_numpy()
        source_col = next((c for c in SOURCE_COLUMNS if c in table.column_names), None)
        sources = table.column(source_col).to_pylist() if source_col else None
        part_id = f"ray-{index:05d}"
        if options.out_format == "jsonl":
            name = f"part-{part_id}.jsonl"
            records = table.drop_columns(list(PREDICTION_COLUMNS)).to_pylist()
            columns = {c: table.column(c).to_numpy() for c in PREDICTION_COLUMNS}
            data = _jsonl_bytes(records, columns, mask)
        else:
            name = f"part-{part_id}.parquet"
            sink = io.BytesIO()
            pq.write_table(table.filter(pa.array(mask)), sink, compression="zstd")
            data = sink.getvalue()
        state.will_write(name)
        atomic_write_bytes(state.out / name, data)
        state.finish_part(part_id, PartStats.measure(name, "*", p_success, mask, sources))
        rows += table.num_rows
        parts += 1
    shutil.rmtree(staging, ignore_errors=True)
    return rows, parts, 0
