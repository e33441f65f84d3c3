"""The error raised for unusable input to the online prompt book.

The book runs inside a training loop: an error that only says "invalid value"
costs a training step to debug. Every message names the argument (``field``)
and, for per-prompt input, the first offending position (``index``).
"""

from __future__ import annotations

from preroll.errors import PrerollError


class OnlineInputError(PrerollError, ValueError):
    """Bad input to :class:`preroll.online.PromptBook` or :class:`preroll.online.OnlineSettings`."""

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None) -> None:
        self.field = field
        self.index = index
        self.reason = message
        where = ""
        if field is not None:
            where = f"{field}[{index}]" if index is not None else field
        super().__init__(f"{where}: {message}" if where else message)
