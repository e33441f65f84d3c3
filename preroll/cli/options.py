"""Checks of model options shared by ``predict`` and ``fit``, run before any file is read.

Why here: ``--head bogus`` or ``--encoder ""`` used to surface as a traceback after the
history was loaded (and, for some, after the fit); an option is checked in a millisecond,
and its error names the flag the user typed.
"""

from __future__ import annotations

from preroll.errors import ConfigError, InputError

#: Heads of ``predict --by-policy`` (the router's): its joint model, or independent heads.
BY_POLICY_HEADS = ("auto", "joint", "ensemble", "logistic", "knn", "gp")


def check_model_options(encoder: str, head: str, *, by_policy: bool = False) -> None:
    """Raise a :class:`ConfigError` naming ``--encoder`` or ``--head`` for a value that cannot work."""
    from preroll.encoders import get_encoder
    from preroll.heads import make_head

    try:
        get_encoder(encoder, cache_dir=False)  # builds the spec only: weights load on first use
    except (InputError, ValueError) as exc:
        raise ConfigError(getattr(exc, "reason", str(exc)), field="--encoder") from None
    if by_policy:
        if head not in BY_POLICY_HEADS:
            raise ConfigError(f"unknown head {head!r} with --by-policy; choose one of: {', '.join(BY_POLICY_HEADS)}",
                              field="--head")
        return
    try:
        make_head(head)
    except (InputError, ValueError) as exc:
        raise ConfigError(getattr(exc, "reason", str(exc)), field="--head") from None
