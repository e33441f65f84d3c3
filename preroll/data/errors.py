"""The error for a bad history or query row: :class:`preroll.errors.RecordError`, re-exported here."""

from __future__ import annotations

from preroll.errors import RecordError

__all__ = ["RecordError"]
