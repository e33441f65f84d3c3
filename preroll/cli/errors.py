"""One way every command reports a user error: one line on stderr, exit code 2, no traceback.

A traceback tells a user that preroll is broken when it is their file that is
wrong. Every :class:`~preroll.errors.PrerollError` (bad input, bad config, an
output that would overwrite an input, a missing optional package) and every
``OSError`` about a path is a user error. ``preroll --debug CMD`` (or
``PREROLL_DEBUG=1``) re-raises instead, for the rare case the traceback helps.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import sys

import typer

from preroll.errors import PrerollError

#: Exit status of a user error (click uses 2 for usage errors too).
USER_ERROR = 2

_debug = False


def set_debug(on: bool) -> None:
    global _debug
    _debug = bool(on)


def debugging() -> bool:
    return _debug or os.environ.get("PREROLL_DEBUG", "") not in ("", "0")


def report(exc: BaseException) -> None:
    """Print ``error: <message>`` as one line on stderr (no rich markup: paths may hold brackets)."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {msg}", file=sys.stderr, flush=True)


def user_errors(fn):
    """Wrap a command so user errors end it with one line and exit code 2."""
    if getattr(fn, "_preroll_wrapped", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (PrerollError, OSError, sqlite3.DatabaseError) as exc:
            if debugging():
                raise
            report(exc)
            raise typer.Exit(USER_ERROR) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    wrapper._preroll_wrapped = True
    return wrapper


def install(app: typer.Typer) -> None:
    """Wrap every command registered on ``app`` and its sub-apps (call after registering them)."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = user_errors(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            install(group.typer_instance)
