"""The error raised for unusable input to the online prompt book.

The book runs inside a training loop: an error that only says "invalid value"
costs a training step to debug. Every message names the argument (``field``)
and, for per-prompt input, the first offending position (``index``).
"""

from __future__ import annotations

from preroll.errors import ArgumentError


class OnlineInputError(ArgumentError):
    """Bad input to :class:`preroll.online.PromptBook` or :class:`preroll.online.OnlineSettings`."""
