"""Checks shared by every layer: pydantic errors to located preroll errors, text, fitted state.

Why one module: the same pydantic failure used to be translated four ways, so
the same typo read differently in a history file, a router config and a serve
config. Here it is translated once, for any :class:`~preroll.errors.InputError`
subclass.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterable, TypeVar, overload

from preroll.errors import InputError, NotFittedError

E = TypeVar("E", bound=InputError)

#: Line and paragraph separators that ``str.splitlines`` treats as line ends (JSONL readers
#: split on ``\n`` only, but a text that holds them is fragile in every line-oriented tool).
LINE_BREAKS = ("\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e")


@overload
def from_pydantic(exc, *, path=None, line: int | None = None, prefix: str = "",
                  allowed: Iterable[str] | None = None, format_loc=None) -> InputError: ...
@overload
def from_pydantic(exc, error_cls: type[E], *, path=None, line: int | None = None, prefix: str = "",
                  allowed: Iterable[str] | None = None, format_loc=None) -> E: ...
def from_pydantic(exc, error_cls: type[InputError] = InputError, *, path=None, line: int | None = None,
                  prefix: str = "", allowed: Iterable[str] | None = None, format_loc=None) -> InputError:
    """The first error of a pydantic ``ValidationError`` as ``error_cls`` naming path, line and field.

    ``prefix`` is prepended to the field (e.g. ``"models.2"``); ``allowed`` lists the known
    fields, named in the message when an unknown one is refused; ``format_loc`` spells a
    location tuple (default: dotted, ``models.0.name``).
    """
    err = exc.errors()[0]
    loc_t = tuple(err.get("loc", ()))
    loc = format_loc(loc_t) if format_loc else ".".join(str(p) for p in loc_t)
    field = ".".join(p for p in (prefix, loc) if p) or None
    msg = str(err.get("msg", exc)).removeprefix("Value error, ")
    kind = err.get("type")
    if kind == "extra_forbidden":
        msg = "unknown field" + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else "")
    elif kind == "missing":
        msg = "required field is missing"
    kw = {"path": path, "field": field}
    if line is not None:
        kw["line"] = line
    return error_cls(msg, **kw)


def check_text(value, *, what: str = "text") -> str:
    """A non-empty string; raises ``ValueError`` (pydantic turns it into a located error)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"{what} is empty")
    return value


def check_query_prompt(prompt, *, path=None, line: int | None = None,
                       error_cls: type[InputError] = InputError) -> str:
    """A query row's ``prompt``: present, text, not blank, encodable as UTF-8; else a located ``error_cls``."""
    def bad(msg: str) -> InputError:
        return error_cls(msg, path=path, line=line, field="prompt")

    if prompt is None:
        raise bad("required field is missing")
    if not isinstance(prompt, str):
        raise bad(f"must be text, got {type(prompt).__name__}")
    if not prompt.strip():
        raise bad("prompt is empty")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise bad("holds an unpaired surrogate escape (not encodable as UTF-8)") from None
    return prompt


def check_fitted(obj, *attrs: str) -> None:
    """Raise :class:`NotFittedError` unless ``obj`` has every fitted attribute in ``attrs``."""
    missing = [a for a in attrs if not hasattr(obj, a)]
    if missing:
        raise NotFittedError(f"this {type(obj).__name__} is not fitted yet: call fit(...) first")


def switch_or_settings(value: Any, cls: type, *, field: str, error_cls: type[InputError] = InputError) -> Any:
    """An option that is off (``None``/``False``), on with defaults (``True``), a ``cls`` or a mapping of its fields.

    One reading for every such switch (the router's ``guard=`` and ``explore=``), so each accepts the
    same forms and refuses the rest with the same located message. ``cls`` is a pydantic model or a
    dataclass; a mapping is validated by it.
    """
    if value is None or value is False:
        return None
    if value is True:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, Mapping):
        from pydantic import ValidationError

        try:
            return cls.model_validate(dict(value)) if hasattr(cls, "model_validate") else cls(**dict(value))
        except ValidationError as exc:
            raise from_pydantic(exc, error_cls, prefix=field) from None
        except (TypeError, ValueError) as exc:
            raise error_cls(str(exc), field=field) from None
    raise error_cls(f"expected true, false, {cls.__name__} or a mapping of its fields, got {type(value).__name__}",
                    field=field)
