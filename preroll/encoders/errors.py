"""Errors raised while finding, verifying or loading an encoder.

They are separate classes so callers (the CLI, the service) can tell a user
*what to do*: install a package, download a model, or reinstall tampered
weights, instead of showing a library traceback.
"""

from __future__ import annotations

from preroll.errors import PrerollError


class EncoderLoadError(PrerollError, RuntimeError):
    """The model named by a spec could not be found or loaded."""


class WeightsIntegrityError(EncoderLoadError):
    """Model weights on disk do not match the checksum they were shipped with."""


class EmbeddingCacheError(PrerollError, RuntimeError):
    """The on-disk embedding cache is unreadable; it is left untouched for the user to inspect."""
