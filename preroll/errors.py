"""One family of errors for everything a user can get wrong: every error class preroll defines derives from here.

The family (each name has one meaning):

- :class:`PrerollError`: the base; the CLI turns any of them into one line and exit code 2.
- :class:`InputError` (file, line, field): unusable user data; :class:`RecordError` for one bad row,
  :class:`ConfigError` for a malformed configuration.
- :class:`ArgumentError` (argument, index): a bad argument to an in-process API.
- :class:`OutputError`: an output that cannot be written safely.
- :class:`NotFittedError`: a model used before ``fit``.
- :class:`DependencyError`: a missing optional extra (``pip install 'preroll[...]'``).
- :class:`ServeError`: the service's own: :class:`ServeSetupError`, :class:`StoreError`, and the
  client's ``RequestError`` (in :mod:`preroll.serve.errors`, with its HTTP reply).

Modules may subclass these for a narrower meaning (``RouteConfigError``, ``ScheduleInputError``) and
their ``errors.py`` files re-export these names, never redefine them.

Every error preroll raises on purpose derives from :class:`PrerollError`, so a
caller (the CLI, the service, a training loop) can tell "the input is wrong,
say so in one line" from "preroll has a bug, show the traceback" with one
``except``. Each subclass also keeps the builtin base its callers caught
before (``ValueError`` or ``RuntimeError``), so existing ``except`` clauses
keep working.
"""

from __future__ import annotations

from pathlib import Path


class PrerollError(Exception):
    """Base class of every error that means "the input or the setup is wrong", never "preroll is broken"."""


class InputError(PrerollError, ValueError):
    """Unusable input, located as precisely as it can be: file, 1-based line (or row) and field.

    An error that says only "invalid value" sends the user hunting through a
    100k-line history file, so every part of the location that is known is
    named in the message.
    """

    def __init__(self, message: str, *, path: str | Path | None = None,
                 line: int | None = None, field: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = []
        if self.path is not None:
            where.append(self.path)
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field '{field}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class RecordError(InputError):
    """An input row (history, query, outcome) that cannot be used; carries path, line and field."""


class ArgumentError(PrerollError, ValueError):
    """Bad argument to an in-process API (allocation, the online book): names the argument and the position.

    These run inside a training loop, where an error that only says "invalid value" costs a step to debug:
    ``field`` is the argument, ``index`` the first offending position of an array argument (``None`` for scalars).
    """

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None) -> None:
        self.field = field
        self.index = index
        self.reason = message
        where = ""
        if field is not None:
            where = f"{field}[{index}]" if index is not None else field
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(InputError):
    """A malformed configuration (file, dict or option): a setup mistake, not a bad data row."""


class OutputError(PrerollError, ValueError):
    """An output path that cannot be written safely (it is an input, it exists, its folder is missing)."""


class NotFittedError(PrerollError, ValueError, AttributeError, RuntimeError):
    """A model used before ``fit``: the one signal for "not fitted" across value model, encoders, heads and router.

    It is also a ``ValueError``/``AttributeError`` (what scikit-learn's ``NotFittedError`` is) and a
    ``RuntimeError`` (what the value model raised before), so older ``except`` clauses still match.
    """


class DependencyError(PrerollError, ImportError):
    """An optional extra is needed and not installed; the one-line message names the pip command.

    Raised by :func:`preroll._optional.require` where the optional import happens. Also an
    ``ImportError``, so code that probes for an extra with ``except ImportError`` keeps working.
    """


#: The name this error had before; the same class.
MissingExtraError = DependencyError


class ServeError(PrerollError):
    """Base of the service's own errors: an unusable set-up, history store or client request."""


class ServeSetupError(ServeError, ConfigError):
    """A serve set-up that must not start (e.g. a public address without a token): an operator's mistake."""


class StoreError(ServeError, InputError):
    """A history store file that cannot be used (not SQLite, or a value SQLite cannot hold)."""
