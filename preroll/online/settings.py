"""Settings of the online prompt book (a frozen pydantic model, validated on construction)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from preroll.online.errors import OnlineInputError


class OnlineSettings(BaseModel):
    """Knobs of :class:`preroll.online.PromptBook`.

    Defaults are the values the grounded long-training benchmark
    (``python -m experiments.online`` in the repository, docs/online.md) was run with.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Rewards are mapped linearly from this range to a success in [0, 1] (graded = fractional success), and a
    #: reward outside it is an error. None (the default): the book learns the scale from the rewards it sees
    #: (their running minimum and maximum), so any reward works without a declaration: negative, unbounded,
    #: weighted sums of several terms. Whether a group carries signal never depends on the scale (a group is
    #: informative iff its rewards are not all equal).
    reward_range: tuple[float, float] | None = None
    #: Fixed-n trainers draw a pool of ``pool_factor * B`` candidates and keep B.
    pool_factor: int = 4
    #: Rollouts per chosen prompt in a fixed-n trainer: sets the informativeness objective 1 - p^n - (1-p)^n.
    group_size: int = 8
    #: Weight of an outcome per step of age: the policy drifts, so old outcomes count less.
    drift_decay: float = 0.97
    #: Refit the drift discount on revisited prompts (beta-binomial likelihood over a grid); ``drift_decay`` starts it.
    fit_drift: bool = True
    #: Steps between refits of the neighbour part (neighbour rates and the prior's concentration); 0 = never.
    refit_every: int = 1
    #: Neighbour encoder spec for :func:`preroll.encoders.get_encoder`; ``"none"`` disables the neighbour part.
    #: ``"auto"``: ``"lexical"`` (TF-IDF + SVD fitted on all prompts) up to 50,000 prompts, above that
    #: ``"hashing"`` (hashed word n-grams, IDF from a sample, random projection; ~2 min per million prompts on
    #: one core, where the lexical fit does not scale and MiniLM takes hours on CPU).
    encoder: str = "auto"
    #: Nearest dataset neighbours kept per prompt (the graph is computed once from the cached embeddings).
    neighbours: int = 32
    #: Neighbour weight = max(cosine, 0) ** this: near-duplicates count far more than loose relatives.
    neighbour_power: float = 4.0
    #: Pseudo-attempts of the global rate that shrink a neighbour average (few or far neighbours say little);
    #: the starting value: the book refits it with the prior's concentration.
    neighbour_prior: float = 2.0
    #: Share of the n slots filled by Thompson draws from the belief instead of the expected objective.
    explore: float = 0.1
    #: Chance that a prompt whose last group was dead (all rewards equal) is revisited when it is in the pool ...
    revisit: float = 0.2
    #: ... multiplied by this for every further consecutive dead group (it may become learnable, less likely so).
    revisit_decay: float = 0.5
    #: At most this share of the n slots goes to revisits.
    max_revisit_share: float = 0.1
    #: How :meth:`PromptBook.select` fills its exploitation slots (``allocate`` is not affected).
    #: ``"value"``: the highest expected informativeness E[1 - p^g - (1-p)^g] in the pool. ``"coverage"``:
    #: every candidate whose expected informativeness is at least ``coverage_bar`` is equally eligible, and the
    #: slots go to the eligible ones recorded least recently (never-seen first, ties at random); only when too
    #: few clear the bar are the remaining slots filled by the highest value below it (reason ``"fallback"``).
    #: Why: on a small train set revisited for many epochs, "value" trains on the same few mid-difficulty
    #: prompts over and over; "coverage" still skips the prompts predicted dead but rotates through every
    #: learnable one. On a large dataset it prefers never-seen prompts and loses most of the book's gain
    #: (docs/online.md), hence not the default. Measured in RESULTS.md (TRL closed loop).
    selection: Literal["value", "coverage"] = "value"
    #: ``selection="coverage"``: the expected informativeness a candidate needs to be eligible.
    coverage_bar: float = 0.5
    #: Outcomes from before this run carried into the prior (``PromptBook.warm_start``): a previous run's saved
    #: book (``.npz``, same dataset), an outcome history (``.jsonl``/``.csv``/``.parquet`` as ``preroll fit``
    #: reads: other policies' outcomes, a dataset's pass rates, a probe of the base policy) or a value model
    #: folder (``preroll fit --save``). Read once when the book is built; a resumed book keeps what it read.
    warm_start: str | None = None
    #: Gain of the global-level tracker: share of this step's batch-level residual (logit) taken on.
    level_gain: float = 0.5
    seed: int = 0

    @field_validator("reward_range")
    @classmethod
    def _range(cls, v):
        if v is None:
            return None
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
            raise ValueError(f"must be two finite numbers lo < hi (got {v})")
        return (float(lo), float(hi))

    @field_validator("pool_factor", "group_size", "neighbours")
    @classmethod
    def _at_least_one(cls, v):
        if v < 1:
            raise ValueError(f"must be >= 1 (got {v})")
        return v

    @field_validator("refit_every")
    @classmethod
    def _refit(cls, v):
        if v < 0:
            raise ValueError(f"must be >= 0 (got {v})")
        return v

    @field_validator("drift_decay")
    @classmethod
    def _decay(cls, v):
        if not (0.0 < v <= 1.0):
            raise ValueError(f"must be in (0, 1] (got {v})")
        return v

    @field_validator("explore", "revisit", "max_revisit_share", "level_gain", "coverage_bar")
    @classmethod
    def _share(cls, v):
        if not (0.0 <= v <= 1.0):
            raise ValueError(f"must be in [0, 1] (got {v})")
        return v

    @field_validator("revisit_decay")
    @classmethod
    def _revisit_decay(cls, v):
        if not (0.0 < v <= 1.0):
            raise ValueError(f"must be in (0, 1] (got {v})")
        return v

    @field_validator("neighbour_power", "neighbour_prior")
    @classmethod
    def _positive(cls, v):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"must be a finite number > 0 (got {v})")
        return v

    @model_validator(mode="after")
    def _encoder(self):
        if not str(self.encoder).strip():
            raise ValueError("encoder must be an encoder spec or 'none'")
        if self.warm_start is not None and not str(self.warm_start).strip():
            raise ValueError("warm_start must be a path or None")
        return self


def make_settings(settings: OnlineSettings | dict | None) -> OnlineSettings:
    """Settings from a model, a dict or None; a bad field is an :class:`OnlineInputError` naming it."""
    if settings is None:
        return OnlineSettings()
    if isinstance(settings, OnlineSettings):
        return settings
    if not isinstance(settings, dict):
        raise OnlineInputError(f"must be OnlineSettings, a dict or None (got {type(settings).__name__})",
                               field="settings")
    return build_settings(**settings)


def build_settings(**fields) -> OnlineSettings:
    try:
        return OnlineSettings(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        raise OnlineInputError(err["msg"].removeprefix("Value error, "), field=f"settings.{name}") from None
