"""The value model's defaults (kept in :mod:`preroll.defaults`, which imports nothing)."""

from preroll.defaults import DEFAULT_ENCODER, DEFAULT_HEAD

__all__ = ["DEFAULT_ENCODER", "DEFAULT_HEAD"]
