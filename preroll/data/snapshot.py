"""A snapshot: one policy at one training step, the unit a history is grouped by.

Why a value type and not a ``(policy, step)`` tuple: a history may name no
policy or no step at all (the minimal schema is ``prompt`` + outcome). A tuple
stand-in such as ``("<none>", nan)`` breaks as a dict key because NaN never
equals itself. Here "not given" is ``None``, which compares, hashes and sorts
(before every given value).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """``policy`` and ``step`` of a group of outcomes; ``None`` where the history does not say."""

    policy: str | None = None
    step: int | None = None

    @property
    def sort_key(self) -> tuple:
        """Policy, then step; an unnamed policy or step sorts first."""
        return (self.policy is not None, self.policy or "", self.step is not None, self.step or 0)

    @property
    def name(self) -> str:
        policy = self.policy if self.policy is not None else "(any policy)"
        return policy if self.step is None else f"{policy}@{self.step}"

    @classmethod
    def of(cls, outcome) -> "Snapshot":
        """The snapshot an :class:`~preroll.data.records.Outcome` belongs to."""
        return cls(outcome.policy, outcome.step)

    def __str__(self) -> str:
        return self.name
