"""One place that imports verl, so a missing install gives one clear message."""

from __future__ import annotations

INSTALL_HINT = "pip install 'preroll[verl]'"


def require_verl():
    """Import and return verl, or raise ImportError telling how to install it."""
    try:
        import verl
    except ImportError as exc:
        raise ImportError(f"preroll's verl integration needs verl (>= 0.9 for the trainer): {INSTALL_HINT} "
                          f"({exc})") from exc
    return verl
