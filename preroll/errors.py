"""One family of errors for everything a user can get wrong.

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


class MissingExtraError(PrerollError, ImportError):
    """An optional extra (trl, verl, ray, tabpfn) is needed and not installed: the message names the pip command.

    Also an ``ImportError``, so code that probes for the extra with ``except ImportError`` keeps working.
    """
