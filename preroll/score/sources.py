"""Input datasets for scoring: a JSONL/Parquet file or a directory of them, read in bounded chunks.

Why chunks: a million-prompt pool does not fit comfortably in one process's
memory next to a model, and an interrupted run should lose at most one chunk
of work. Each input file is cut into chunks of ``chunk_rows`` rows, in order;
a chunk is the unit of output (one part file) and of resumption.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from preroll.data.errors import RecordError
from preroll.data.loaders import iter_csv_rows, parse_json_line
from preroll.errors import InputError

INPUT_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


@dataclass(frozen=True)
class InputFile:
    """One input shard: its path, its name relative to the input root, and its format."""

    path: Path
    relpath: str
    format: str  # "jsonl" | "csv" | "parquet"


@dataclass
class Chunk:
    """Consecutive rows of one input file.

    ``rows`` holds parsed JSON objects for JSONL input (so every field is copied
    through exactly) and ``table`` a pyarrow Table for Parquet input;
    ``first_line`` is the file line (JSONL) or 1-based row (Parquet) of the first row.
    """

    file_index: int
    chunk_index: int
    source: InputFile
    first_line: int
    rows: list[dict[str, Any]] | None = None
    lines: list[int] | None = None
    table: Any = None
    part_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.part_id = f"{self.file_index:05d}-{self.chunk_index:05d}"

    def __len__(self) -> int:
        return len(self.rows) if self.rows is not None else self.table.num_rows

    def line_of(self, i: int) -> int:
        return self.lines[i] if self.lines is not None else self.first_line + i


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise RecordError(f"unsupported file type {suffix!r} (use .jsonl, .csv or .parquet, or a directory of them)",
                      path=path)


def discover_inputs(root: str | Path) -> list[InputFile]:
    """The input shards under ``root``: the file itself, or a directory's JSONL/Parquet files in name order.

    Files and directories whose names start with ``.`` or ``_`` (markers, manifests) are skipped,
    as Arrow and Spark dataset readers do.
    """
    root = Path(root)
    if not root.exists():
        raise RecordError("input not found", path=root)
    if root.is_file():
        return [InputFile(root, root.name, _format_of(root))]
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith((".", "_")) for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() in INPUT_SUFFIXES:
            files.append(InputFile(path, rel.as_posix(), _format_of(path)))
    if not files:
        raise RecordError(f"no {', '.join(INPUT_SUFFIXES)} files in the directory", path=root)
    return files


def input_fingerprint(files: list[InputFile]) -> str:
    """sha256 over each shard's relative name, size and modification time.

    Cheap on a million rows (no content read) and enough to tell a rerun on the
    same files from one on changed files; a copied dataset (new mtimes) counts as new.
    """
    digest = hashlib.sha256()
    for f in files:
        st = f.path.stat()
        digest.update(f"{f.relpath}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8"))
    return digest.hexdigest()


def count_rows(f: InputFile) -> int:
    """Rows of a shard, for the progress bar: Parquet metadata, or the non-blank lines of a JSONL file."""
    if f.format == "parquet":
        from preroll._optional import require

        pq = require("pyarrow.parquet", extra="parquet", what="reading Parquet")

        try:
            return pq.ParquetFile(f.path).metadata.num_rows
        except Exception as exc:
            raise RecordError(f"cannot read Parquet: {exc}", path=f.path) from None
    if f.format == "csv":
        return sum(1 for _ in iter_csv_rows(f.path))
    n = 0
    with f.path.open("rb") as fh:
        for line in fh:
            n += bool(line.strip())
    return n


def _jsonl_rows(f: InputFile) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a JSONL file, each line checked as the record loaders check it."""
    with f.path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecordError(f"not valid UTF-8 (byte {exc.start} of the line)", path=f.path, line=lineno) from None
            row = parse_json_line(text, path=f.path, line=lineno)
            if not isinstance(row, dict):
                raise RecordError(f"expected a JSON object, got {type(row).__name__}", path=f.path, line=lineno)
            yield lineno, row


def _jsonl_chunks(file_index: int, f: InputFile, chunk_rows: int) -> Iterator[Chunk]:
    return _numbered_chunks(file_index, f, _jsonl_rows(f), chunk_rows)


def _csv_chunks(file_index: int, f: InputFile, chunk_rows: int) -> Iterator[Chunk]:
    """CSV rows (cells as text, an empty cell "not given") in chunks, like JSONL rows."""
    return _numbered_chunks(file_index, f, iter_csv_rows(f.path), chunk_rows)


def _numbered_chunks(file_index: int, f: InputFile, numbered: Iterable[tuple[int, dict]],
                     chunk_rows: int) -> Iterator[Chunk]:
    """Rows with their line numbers, cut into chunks of ``chunk_rows`` (an empty file: one empty chunk)."""
    rows: list[dict] = []
    lines: list[int] = []
    chunk_index = 0
    for lineno, row in numbered:
        rows.append(row)
        lines.append(lineno)
        if len(rows) == chunk_rows:
            yield Chunk(file_index, chunk_index, f, lines[0], rows=rows, lines=lines)
            rows, lines, chunk_index = [], [], chunk_index + 1
    if rows or chunk_index == 0:
        yield Chunk(file_index, chunk_index, f, lines[0] if lines else 1, rows=rows, lines=lines)


def _parquet_chunks(file_index: int, f: InputFile, chunk_rows: int) -> Iterator[Chunk]:
    from preroll._optional import require

    pa = require("pyarrow", extra="parquet", what="reading Parquet")
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(f.path)
        batches = pf.iter_batches(batch_size=chunk_rows)
        start = 1
        pending: list = []
        pending_rows = 0
        chunk_index = 0
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            # iter_batches may return short batches at row-group edges: regroup to exactly chunk_rows.
            while pending_rows >= chunk_rows:
                table = pa.Table.from_batches(pending, schema=pf.schema_arrow)
                head, rest = table.slice(0, chunk_rows), table.slice(chunk_rows)
                yield Chunk(file_index, chunk_index, f, start, table=head.combine_chunks())
                start += chunk_rows
                chunk_index += 1
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows or chunk_index == 0:
            table = pa.Table.from_batches(pending, schema=pf.schema_arrow)
            yield Chunk(file_index, chunk_index, f, start, table=table.combine_chunks())
    except RecordError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise RecordError(f"cannot read Parquet: {exc}", path=f.path) from None


def iter_chunks(file_index: int, f: InputFile, chunk_rows: int) -> Iterator[Chunk]:
    """The chunks of one shard, in order (an empty shard gives one empty chunk, so it is marked done)."""
    if chunk_rows < 1:
        raise InputError("chunk_rows must be positive", field="chunk_rows")
    if f.format == "jsonl":
        return _jsonl_chunks(file_index, f, chunk_rows)
    if f.format == "csv":
        return _csv_chunks(file_index, f, chunk_rows)
    return _parquet_chunks(file_index, f, chunk_rows)
