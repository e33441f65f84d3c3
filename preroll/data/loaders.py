"""Read histories and query sets from JSONL, CSV and Parquet.

Every row is validated; the first bad one stops the load with a
:class:`RecordError` naming file, line and field. Nothing is dropped silently:
a history with a hole in it would bias every prediction made from it.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Iterator

from preroll.data.errors import RecordError
from preroll.data.records import Outcome, check_reward_range, make_outcome
from preroll.validation import check_query_prompt

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")

_CSV_NUMERIC = {"step": int, "successes": float, "attempts": float,
                "success_rate": float, "reward": float, "weight": float}


def _csv_number(value: str, conv):
    """A CSV cell as a number. Whole numbers only for ``int`` fields: ``16.7`` is refused, not truncated."""
    x = float(value)
    if conv is int:
        if not math.isfinite(x) or x != int(x):
            raise ValueError
        return int(x)
    return x


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordError("file not found", path=path) from None
    try:
        # "utf-8-sig": a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecordError(f"not valid UTF-8 (byte {exc.start} of the file)", path=path, line=line) from None


def parse_json_line(text: str, *, path, line: int, **kw):
    """One JSON value, or a :class:`RecordError` naming the line: malformed, an integer beyond Python's
    4,300-digit limit, or nesting deeper than the parser's recursion allows."""
    try:
        return json.loads(text, **kw)
    except json.JSONDecodeError as exc:
        raise RecordError(f"malformed JSON: {exc.msg} (column {exc.colno})", path=path, line=line) from None
    except RecursionError:
        raise RecordError("JSON nested too deeply", path=path, line=line) from None
    except ValueError as exc:  # int("9" * 5000): Python refuses integers beyond 4,300 digits
        reason = "a number with more than 4,300 digits" if "digits" in str(exc) else str(exc)
        raise RecordError(f"unreadable JSON value: {reason}", path=path, line=line) from None


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # Split on "\n" only: str.splitlines also breaks at U+2028 and friends, which JSON strings may hold raw.
    for lineno, text in enumerate(_read_text(path).split("\n"), start=1):
        text = text.removesuffix("\r")
        if not text.strip():
            continue
        row = parse_json_line(text, path=path, line=lineno, parse_constant=lambda c: float("nan"))
        if not isinstance(row, dict):
            raise RecordError(f"expected a JSON object, got {type(row).__name__}", path=path, line=lineno)
        yield lineno, row


#: Longest CSV cell read (the csv module's default, 128 KiB, refuses a long prompt with a traceback).
CSV_FIELD_LIMIT = 1 << 30


def _csv_dialect(first_line: str) -> str:
    """The delimiter of a CSV file from its header: ``,``, or ``;`` / tab when the header holds no comma
    (Excel writes ``;`` where ``,`` is the decimal mark)."""
    if "," in first_line:
        return ","
    for delimiter in (";", "\t"):
        if delimiter in first_line:
            return delimiter
    return ","


def iter_csv_rows(path: str | Path) -> Iterator[tuple[int, dict[str, str]]]:
    """``(line, row)`` per CSV record, streamed: cells as text, an empty cell left out ("not given").

    A byte-order mark (Excel's "CSV UTF-8") and CRLF line ends are accepted; bad UTF-8, a
    broken quote or a row longer than the header is a :class:`RecordError` naming the line.
    """
    path = Path(path)
    csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
    try:
        fh = path.open("r", encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise RecordError("file not found", path=path) from None
    with fh:
        line = 1
        try:
            first = fh.readline()
            fh.seek(0)
            reader = csv.DictReader(fh, delimiter=_csv_dialect(first))
            for row in reader:
                line = reader.line_num
                if None in row:
                    raise RecordError("more values than header columns", path=path, line=line)
                yield line, {k: v for k, v in row.items() if v is not None and v != ""}
                line += 1
        except UnicodeDecodeError as exc:
            raise RecordError(f"not valid UTF-8 ({exc.reason})", path=path, line=line) from None
        except csv.Error as exc:
            raise RecordError(f"malformed CSV: {exc}", path=path, line=line) from None


def _iter_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, row in iter_csv_rows(path):
        out: dict[str, Any] = {}
        for key, value in row.items():
            conv = _CSV_NUMERIC.get(key)
            if conv is not None:
                try:
                    value = _csv_number(value, conv)
                except (ValueError, OverflowError):
                    kind = "a whole number" if conv is int else "a number"
                    raise RecordError(f"not {kind}: {value[:40]!r}", path=path, line=lineno, field=key) from None
            out[key] = value
        yield lineno, out


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from preroll._optional import require

    pq = require("pyarrow.parquet", extra="parquet", what="reading Parquet")
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise RecordError("file not found", path=path) from None
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise RecordError(f"cannot read Parquet: {exc}", path=path) from None
    for i, row in enumerate(table.to_pylist(), start=1):
        row = {k: v for k, v in row.items() if v is not None
               and not (isinstance(v, float) and math.isnan(v) and k in ("policy", "id"))}
        yield i, row


def iter_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, raw_row)`` for a JSONL, CSV or Parquet file.

    For Parquet the "line" is the 1-based row number.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        return _iter_jsonl(path)
    if suffix == ".csv":
        return _iter_csv(path)
    if suffix == ".parquet":
        return _iter_parquet(path)
    raise RecordError(f"unsupported file type {suffix!r} (use one of {', '.join(SUPPORTED_SUFFIXES)})", path=path)


def count_rows(path: str | Path) -> int:
    """Rows of a history or query file, counted without parsing them (JSONL: non-blank lines; Parquet:
    its metadata; CSV: its records), so a size limit is checked in seconds, before any work."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except FileNotFoundError:
            raise RecordError("file not found", path=path) from None
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for corrupt files
            raise RecordError(f"cannot read Parquet: {exc}", path=path) from None
    if suffix == ".csv":
        return sum(1 for _ in iter_csv_rows(path))
    if suffix not in (".jsonl", ".json"):
        raise RecordError(f"unsupported file type {suffix!r} (use one of {', '.join(SUPPORTED_SUFFIXES)})",
                          path=path)
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        raise RecordError("file not found", path=path) from None
    with fh:
        return sum(1 for line in fh if line.strip())


def check_history_size(path: str | Path, limit: int | None, *, option: str = "--max-history-rows") -> int:
    """The history's row count, or a one-line :class:`RecordError` when it exceeds ``limit`` (0/None: no limit)."""
    n = count_rows(path)
    if limit and n > limit:
        raise RecordError(f"the history has {n:,} rows, more than the {limit:,} preroll fits on by default "
                          f"(memory and time grow with it); fit on a sample (e.g. the latest steps) or raise "
                          f"{option}", path=path)
    return n


def load_records(path: str | Path, *, reward_range: tuple[float, float] | None = None) -> list[Outcome]:
    """Load and validate a history file into :class:`Outcome` records."""
    if reward_range is not None:
        check_reward_range(reward_range)  # before reading: a bad range is a setup error, not row 1's
    records = [make_outcome(row, reward_range=reward_range, path=path, line=line)
               for line, row in iter_rows(path)]
    if not records:
        raise RecordError("no records in file", path=path)
    return records


#: Deepest nesting of lists and objects a passed-through query field may have.
MAX_FIELD_DEPTH = 64


def json_unwritable(value, depth: int = 0) -> str | None:
    """Why ``value`` cannot be written to a JSON output as it is, or None.

    NaN and infinity do not exist in JSON; a Parquet timestamp, decimal or binary value has no
    JSON form a reader would read back as the same value; object keys must be text.
    """
    if depth > MAX_FIELD_DEPTH:
        return f"nested more than {MAX_FIELD_DEPTH} deep"
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else "must be a finite number (got NaN or infinity)"
    if isinstance(value, (list, tuple)):
        return next((p for p in (json_unwritable(v, depth + 1) for v in value) if p), None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "an object with non-text keys cannot be written to JSON"
        return next((p for p in (json_unwritable(v, depth + 1) for v in value.values()) if p), None)
    return (f"a {type(value).__name__} value cannot be written to the JSON output; "
            "cast the column to text or a number")


def load_queries(path: str | Path) -> list[dict[str, Any]]:
    """Load query rows: each needs a non-empty text ``prompt``; other fields pass through untouched."""
    rows = []
    for line, row in iter_rows(path):
        check_query_prompt(row.get("prompt"), path=path, line=line, error_cls=RecordError)
        for key, value in row.items():  # passed through to a JSON output: checked now, not after the fit
            problem = json_unwritable(value)
            if problem:
                raise RecordError(problem, path=path, line=line, field=key)
        rows.append(row)
    if not rows:
        raise RecordError("no query rows in file", path=path)
    return rows
