"""Value types the prompt book returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Why a prompt was chosen ("fallback": ``selection="coverage"`` found too few candidates above its bar and
#: filled the slot with the best one below it).
REASONS = ("exploit", "explore", "revisit", "fallback")


@dataclass(frozen=True)
class Selection:
    """Chosen dataset indices of one fixed-n selection, with the belief mean and the reason for each."""

    indices: np.ndarray    # int64, length n
    p_success: np.ndarray  # belief mean of each chosen prompt
    reason: np.ndarray     # "exploit" | "explore" | "revisit" | "fallback"

    def __len__(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class BookStats:
    """What the book has seen and what its exploration cost.

    ``revisits_informative`` / ``revisits_dead`` count revisited prompts (last
    groups dead) whose next recorded group came back informative / dead again:
    the dead ones are the price of exploration, in groups.
    """

    steps: int
    rows: int
    prompts: int
    prompts_seen: int
    last_step: int | None
    global_rate: float
    selections: dict[str, int]
    revisits_informative: int
    revisits_dead: int
    revisits_pending: int
    dead_prompts: int
    informative_groups: int
    dead_groups: int
    neighbour_refits: int
    prior_concentration: float
    neighbour_prior: float
    drift_decay: float
    #: (lo, hi) rewards are mapped from: the declared reward_range or the learnt min/max (None before any reward)
    reward_scale: tuple[float, float] | None = None

    @property
    def revisit_yield(self) -> float:
        """Share of resolved revisits that came back informative (nan before any)."""
        done = self.revisits_informative + self.revisits_dead
        return self.revisits_informative / done if done else float("nan")
