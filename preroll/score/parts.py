"""Score one chunk of rows and serialise it as one output part (Parquet or JSONL).

Shared by the local runner and the Ray Data workers, so both produce the same
columns: every input field, then ``p_success``, ``p_std``, ``alpha``, ``beta``.
"""

from __future__ import annotations

import io
import json

import numpy as np

from preroll.data.errors import RecordError
from preroll.validation import check_query_prompt
from preroll.score.keep import PREDICTION_COLUMNS, KeepFilter
from preroll.score.sources import Chunk

#: Columns naming where a prompt came from, counted per value in the report (first one present wins).
SOURCE_COLUMNS = ("source", "dataset")


def chunk_prompts(chunk: Chunk) -> list[str]:
    """The chunk's prompts, each checked to be non-empty text (else a one-line error naming file and line)."""
    path = chunk.source.path
    if chunk.rows is not None:
        prompts = []
        for i, row in enumerate(chunk.rows):
            prompt = check_query_prompt(row.get("prompt"), path=path, line=chunk.line_of(i), error_cls=RecordError)
            taken = [c for c in PREDICTION_COLUMNS if c in row]
            if taken:
                raise RecordError(f"the input already has a {taken[0]!r} column, which scoring writes; rename it",
                                  path=path, line=chunk.line_of(i), field=taken[0])
            prompts.append(prompt)
        return prompts
    table = chunk.table
    if "prompt" not in table.column_names:
        raise RecordError("required column is missing", path=path, field="prompt")
    taken = [c for c in PREDICTION_COLUMNS if c in table.column_names]
    if taken:
        raise RecordError(f"the input already has a {taken[0]!r} column, which scoring writes; rename it",
                          path=path, field=taken[0])
    return [check_query_prompt(prompt, path=path, line=chunk.line_of(i))
            for i, prompt in enumerate(table.column("prompt").to_pylist())]


def predict_columns(model, prompts: list[str], *, policy=None, step=None, batch_rows: int = 8192,
                    on_batch=None) -> dict[str, np.ndarray]:
    """``p_success``, ``p_std``, ``alpha``, ``beta`` for ``prompts``, predicted ``batch_rows`` at a time."""
    out = {name: np.empty(len(prompts)) for name in PREDICTION_COLUMNS}
    for start in range(0, len(prompts), batch_rows):
        batch = prompts[start:start + batch_rows]
        pred = model.predict(batch, policy=policy, step=step)
        end = start + len(batch)
        out["p_success"][start:end] = pred.p_success
        out["p_std"][start:end] = pred.std
        out["alpha"][start:end] = pred.alpha
        out["beta"][start:end] = pred.beta
        if on_batch is not None:
            on_batch(len(batch))
    return out


def chunk_sources(chunk: Chunk) -> list | None:
    """Values of the first source column present (``source``, then ``dataset``), or None."""
    if chunk.rows is not None:
        for name in SOURCE_COLUMNS:
            if any(name in row for row in chunk.rows):
                return [row.get(name) for row in chunk.rows]
        return None
    for name in SOURCE_COLUMNS:
        if name in chunk.table.column_names:
            return chunk.table.column(name).to_pylist()
    return None


def _json_default(value):
    """JSON for Parquet values json cannot write (timestamps, decimals, bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _finite_or_null(value):
    """``value`` with every NaN or infinite float replaced by None (JSON null), at any depth."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


def _jsonl_bytes(rows: list[dict], columns: dict[str, np.ndarray], keep: np.ndarray) -> bytes:
    buf = io.StringIO()
    for i in np.flatnonzero(keep):
        row = dict(rows[i])
        for name in PREDICTION_COLUMNS:
            row[name] = float(columns[name][i])
        try:
            line = json.dumps(row, ensure_ascii=False, default=_json_default, allow_nan=False)
        except ValueError:  # NaN or infinity in an input field: JSON has no such number, null is written
            line = json.dumps(_finite_or_null(row), ensure_ascii=False, default=_json_default, allow_nan=False)
        # U+2028/2029 are valid raw inside JSON strings, but str.splitlines() readers split on them.
        buf.write(line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n")
    return buf.getvalue().encode("utf-8")


def with_prediction_columns(table, columns: dict[str, np.ndarray]):
    """``table`` with the four prediction columns appended (float64)."""
    import pyarrow as pa

    for name in PREDICTION_COLUMNS:
        table = table.append_column(name, pa.array(columns[name], type=pa.float64()))
    return table


def part_bytes(chunk: Chunk, columns: dict[str, np.ndarray], keep: np.ndarray, out_format: str) -> bytes:
    """The serialised output part: the kept rows with all their fields plus the prediction columns."""
    if out_format == "jsonl":
        rows = chunk.rows if chunk.rows is not None else chunk.table.to_pylist()
        return _jsonl_bytes(rows, columns, keep)
    from preroll._optional import require

    pa = require("pyarrow", extra="parquet", what="writing Parquet (--format jsonl needs nothing)")
    import pyarrow.parquet as pq
    if chunk.rows is not None:
        try:
            table = pa.Table.from_pylist(chunk.rows) if chunk.rows else pa.table({"prompt": pa.array([], pa.string())})
        except (pa.ArrowException, TypeError, OverflowError) as exc:
            raise RecordError(f"rows of this chunk do not fit one Parquet schema ({exc}); "
                              "write JSONL instead with --format jsonl", path=chunk.source.path,
                              line=chunk.first_line) from None
    else:
        table = chunk.table
    table = with_prediction_columns(table, columns).filter(pa.array(keep, type=pa.bool_()))
    sink = io.BytesIO()
    try:
        pq.write_table(table, sink, compression="zstd")
    except pa.ArrowException as exc:  # e.g. a field holding {} everywhere: a struct without children
        raise RecordError(f"rows of this chunk cannot be written as Parquet ({exc}); write JSONL instead "
                          "with --format jsonl", path=chunk.source.path, line=chunk.first_line) from None
    return sink.getvalue()


def keep_mask(keep: KeepFilter | None, columns: dict[str, np.ndarray]) -> np.ndarray:
    n = len(columns["p_success"])
    return np.ones(n, dtype=bool) if keep is None else keep.mask(columns)
