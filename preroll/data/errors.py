"""The error for a bad history or query row (see :mod:`preroll.errors` for the family)."""

from __future__ import annotations

from preroll.errors import InputError


class RecordError(InputError):
    """Raised for an input row that cannot be used; carries path, line and field (:class:`InputError`)."""
