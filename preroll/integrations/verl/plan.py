"""Choosing what verl rolls out next (numpy only, no verl import).

A step draws a candidate *pool* of dataset positions (``PoolWalker``: the
integrations' shared pool stream, a fresh shuffle each pass over the data, so
every prompt is a candidate once per pass),
and the prompt book turns it into a :class:`RolloutPlan`: which prompts go into
the batch and, for per-prompt n, how many rollouts each gets (verl's
``__rollout_n__``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from preroll.integrations.core import PoolStream, prompt_text
from preroll.online.errors import OnlineInputError

MODES = ("select", "allocate")


@dataclass(frozen=True)
class RolloutPlan:
    """Prompts of one batch: dataset positions, rollouts per prompt (None: verl's rollout.n), reasons."""

    indices: np.ndarray               # int64 dataset positions, distinct
    rollout_n: np.ndarray | None      # int64 per prompt, or None for the trainer's fixed n
    reason: np.ndarray                # "exploit" | "explore" | "revisit" | "fallback" per prompt ("" when unknown)
    pool_size: int

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def rollouts(self) -> int | None:
        return None if self.rollout_n is None else int(self.rollout_n.sum())


class PoolWalker(PoolStream):
    """verl's candidate pools: :class:`preroll.integrations.core.PoolStream` over ``size`` dataset positions.

    Why not the trainer's dataloader: a pool must be known as dataset
    positions (the book's addresses), and the dataloader only yields collated
    rows. A pool never holds a position twice, even across the end of a pass.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__(size, None, seed)


def plan_select(book, pool: Sequence[int], n_prompts: int) -> RolloutPlan:
    """Fixed n per prompt: the book chooses ``n_prompts`` of the pool (:meth:`PromptBook.select`)."""
    pool = np.asarray(pool, dtype=np.int64)
    sel = book.select(pool, min(int(n_prompts), len(pool)))
    return RolloutPlan(indices=np.asarray(sel.indices, np.int64), rollout_n=None,
                       reason=np.asarray(sel.reason).astype(str), pool_size=len(pool))


def plan_allocate(book, pool: Sequence[int], budget: int, *, min_rollouts: int = 2, max_rollouts: int = 64,
                  rule: str = "greedy") -> RolloutPlan:
    """Per-prompt n: the book spreads ``budget`` rollouts over the pool (:meth:`PromptBook.allocate`).

    Prompts given 0 rollouts are left out; the rest keep their pool order.
    """
    pool = np.asarray(pool, dtype=np.int64)
    n = np.asarray(book.allocate(pool, int(budget), min_rollouts=min_rollouts, max_rollouts=max_rollouts,
                                 rule=rule), dtype=np.int64)
    used = n > 0
    return RolloutPlan(indices=pool[used], rollout_n=n[used], reason=np.full(int(used.sum()), "", dtype=object)
                       .astype(str), pool_size=len(pool))


def message_text(prompt) -> str:
    """The text of a verl prompt cell: the integrations' one rule (:func:`preroll.integrations.core.prompt_text`)."""
    return prompt_text(prompt)


def index_positions(extra_infos: Sequence) -> dict:
    """``extra_info.index`` -> dataset position, refusing missing or repeated values.

    Why: verl's DataProto carries the dataset's ``extra_info.index``, not the
    row position; a mapping that silently collapsed duplicates would credit one
    prompt's rewards to another.
    """
    out: dict = {}
    for pos, info in enumerate(extra_infos):
        value = info.get("index") if isinstance(info, Mapping) else None
        if value is None:
            raise OnlineInputError("has no 'index' (set extra_info.index to a unique id per row, as verl's "
                                   "data preprocessing scripts do)", field="extra_info", index=pos)
        value = value.item() if hasattr(value, "item") else value
        if value in out:
            raise OnlineInputError(f"index {value!r} repeats row {out[value]} (extra_info.index must be unique)",
                                   field="extra_info", index=pos)
        out[value] = pos
    return out
