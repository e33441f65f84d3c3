"""One place that imports verl, so a missing install gives one clear message."""

from __future__ import annotations

INSTALL_HINT = "pip install 'preroll[verl]'"


def require_verl():
    """Import and return verl, or raise :class:`~preroll.errors.MissingExtraError` (an ImportError) naming the install."""
    from preroll.errors import MissingExtraError

    try:
        import verl
    except ImportError as exc:
        raise MissingExtraError(f"preroll's verl integration needs verl (>= 0.9 for the trainer): {INSTALL_HINT} "
                          f"({exc})") from exc
    return verl
