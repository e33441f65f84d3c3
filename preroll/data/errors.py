"""One error type for every bad input, so callers can report *where* the data is wrong."""

from __future__ import annotations

from pathlib import Path


class RecordError(ValueError):
    """Raised for an input row that cannot be used.

    Carries the file, the 1-based line (or row) number and the field, because an
    error that says only "invalid value" sends the user hunting through a
    100k-line history file.
    """

    def __init__(self, message: str, *, path: str | Path | None = None,
                 line: int | None = None, field: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
