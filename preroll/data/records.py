"""The outcome record: one prompt, how often a policy succeeded on it.

Users log outcomes in three shapes (counts, a rate, or a mean reward on some
scale). All of them are normalised here to ``successes`` out of ``attempts``
so the heads can learn from graded outcomes: 7/10 carries more information
than a binarised "success", and 10 rollouts carry more than 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from preroll.data.errors import RecordError
from preroll.data.snapshot import Snapshot
from preroll.errors import ConfigError
from preroll.validation import from_pydantic

#: Fields a history row may carry. Anything else is refused (a typo such as
#: ``sucesses`` must not silently turn a row into a rate-less one).
RECORD_FIELDS = frozenset({
    "prompt", "policy", "step", "successes", "attempts", "success_rate", "reward",
    "id", "weight",
})


#: Largest training step accepted: steps are stored as 64-bit integers (SQLite), and no run gets near it.
MAX_STEP = 2**63 - 1


class Outcome(BaseModel):
    """A validated, normalised outcome.

    ``successes`` may be fractional when only a rate was logged (then
    ``attempts`` is 1: the row counts as one Bernoulli observation's worth).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    successes: float
    attempts: float
    policy: str | None = None
    step: int | None = None
    id: str | None = None

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts


class _RawRow(BaseModel):
    """The row as written by a user, before normalisation."""

    model_config = ConfigDict(extra="forbid", strict=False)

    prompt: str
    policy: str | None = None
    step: int | None = Field(default=None, ge=0, le=MAX_STEP)
    successes: float | None = None
    attempts: float | None = None
    success_rate: float | None = None
    reward: float | None = None
    id: str | int | None = None
    weight: float | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt is empty")
        return v

    @field_validator("successes", "attempts", "success_rate", "reward", "weight")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number (got NaN or infinity)")
        return v

    @model_validator(mode="after")
    def _one_outcome(self) -> "_RawRow":
        given = [n for n in ("successes", "success_rate", "reward") if getattr(self, n) is not None]
        if not given:
            raise ValueError("needs one of 'successes'+'attempts', 'success_rate' or 'reward'")
        if len(given) > 1:
            raise ValueError(f"gives both {given[0]!r} and {given[1]!r}; give exactly one outcome")
        return self


def _fail(exc: ValidationError, path, line) -> RecordError:
    return from_pydantic(exc, RecordError, path=path, line=line, allowed=RECORD_FIELDS)


def check_reward_range(reward_range) -> tuple[float, float]:
    """``(low, high)`` with finite ``low < high``; a ``ConfigError`` naming ``--reward-range`` otherwise."""
    try:
        lo, hi = (float(x) for x in reward_range)
    except (TypeError, ValueError):
        raise ConfigError(f"expected two numbers, got {reward_range!r}", field="--reward-range") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ConfigError(f"needs finite low < high, got {lo:g} {hi:g}", field="--reward-range")
    return lo, hi


def make_outcome(row: dict[str, Any], *, reward_range: tuple[float, float] | None = None,
                 path=None, line: int | None = None) -> Outcome:
    """Validate one raw row and normalise it to successes/attempts.

    ``reward_range`` declares the scale of a ``reward`` column (e.g. ``(-1, 1)``
    for GRPO's ±1 rewards averaged over a group); without it a reward row is
    refused, because guessing the scale silently shifts every prediction.
    """
    if not isinstance(row, dict):
        raise RecordError(f"expected an object, got {type(row).__name__}", path=path, line=line)
    try:
        raw = _RawRow.model_validate(row)
    except ValidationError as exc:
        raise _fail(exc, path, line) from None

    def bad(field: str, msg: str) -> RecordError:
        return RecordError(msg, path=path, line=line, field=field)

    if raw.successes is not None:
        if raw.attempts is None:
            raise bad("attempts", "'successes' needs 'attempts'")
        if raw.attempts <= 0:
            raise bad("attempts", f"must be > 0 (got {raw.attempts:g})")
        if raw.successes < 0:
            raise bad("successes", f"must be >= 0 (got {raw.successes:g})")
        if raw.successes > raw.attempts:
            raise bad("successes", f"{raw.successes:g} successes > {raw.attempts:g} attempts")
        succ, att = raw.successes, raw.attempts
    else:
        if raw.success_rate is not None:
            rate, field = raw.success_rate, "success_rate"
        else:
            if reward_range is None:
                raise bad("reward", "a 'reward' row needs a declared reward range "
                                    "(e.g. --reward-range -1 1)")
            lo, hi = check_reward_range(reward_range)
            reward = raw.reward
            assert reward is not None   # _RawRow._one_outcome: no successes and no success_rate, so a reward
            if reward < lo - 1e-9 or reward > hi + 1e-9:
                raise bad("reward", f"{reward:g} is outside the declared range [{lo:g}, {hi:g}]")
            rate, field = (reward - lo) / (hi - lo), "reward"
        if not 0.0 <= rate <= 1.0:
            raise bad(field, f"success rate must lie in [0, 1] (got {rate:g})")
        att = raw.attempts if raw.attempts is not None else 1.0
        if att <= 0:
            raise bad("attempts", f"must be > 0 (got {att:g})")
        succ = rate * att
        if raw.attempts is not None and abs(succ - round(succ)) < 1e-6:
            succ = float(round(succ))
    if raw.weight is not None:
        # A weight scales how much evidence the row carries: weight 2 counts like the row logged twice.
        if raw.weight <= 0:
            raise bad("weight", f"must be > 0 (got {raw.weight:g})")
        succ, att = succ * raw.weight, att * raw.weight
    return Outcome(prompt=raw.prompt, successes=float(succ), attempts=float(att),
                   policy=raw.policy, step=raw.step,
                   id=None if raw.id is None else str(raw.id))


@dataclass(frozen=True)
class OutcomeTable:
    """Column view of many outcomes, the form the model code works on."""

    prompts: list[str]
    successes: np.ndarray
    attempts: np.ndarray
    policies: list[str | None]
    steps: list[int | None]  # None where the history names no step

    @classmethod
    def from_records(cls, records: Iterable[Outcome]) -> "OutcomeTable":
        recs: Sequence[Outcome] = list(records)
        return cls(
            prompts=[r.prompt for r in recs],
            successes=np.array([r.successes for r in recs], dtype=float),
            attempts=np.array([r.attempts for r in recs], dtype=float),
            policies=[r.policy for r in recs],
            steps=[r.step for r in recs],
        )

    @property
    def snapshots(self) -> list[Snapshot]:
        """Each row's (policy, step) snapshot."""
        return [Snapshot(p, s) for p, s in zip(self.policies, self.steps, strict=True)]

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def rates(self) -> np.ndarray:
        return self.successes / self.attempts

    def subset(self, idx) -> "OutcomeTable":
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return OutcomeTable(
            prompts=[self.prompts[i] for i in idx],
            successes=self.successes[idx], attempts=self.attempts[idx],
            policies=[self.policies[i] for i in idx], steps=[self.steps[i] for i in idx],
        )
