"""Choosing what verl rolls out next (numpy only, no verl import).

A step draws a candidate *pool* of dataset positions (``PoolWalker``: a fresh
shuffle each pass over the data, so every prompt is a candidate once per pass),
and the prompt book turns it into a :class:`RolloutPlan`: which prompts go into
the batch and, for per-prompt n, how many rollouts each gets (verl's
``__rollout_n__``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

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


class PoolWalker:
    """Candidate pools from repeated shuffles of ``range(size)``; resumable through ``state_dict``.

    Why not the trainer's dataloader: a pool must be known as dataset
    positions (the book's addresses), and the dataloader only yields collated
    rows. A pool never holds a position twice, even across the end of a pass.
    """

    def __init__(self, size: int, seed: int = 0) -> None:
        if size <= 0:
            raise OnlineInputError(f"must be positive (got {size})", field="dataset size")
        self.size = int(size)
        self.seed = int(seed)
        self.epoch_ = 0
        self.cursor_ = 0
        self._order = self._shuffle(0)

    def _shuffle(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def take(self, k: int) -> np.ndarray:
        """The next ``k`` distinct positions (``k <= size``)."""
        if not 0 < k <= self.size:
            raise OnlineInputError(f"is {k}; a pool holds 1..{self.size} prompts (the dataset size)", field="pool size")
        out = list(self._order[self.cursor_:self.cursor_ + k])
        self.cursor_ += len(out)
        while len(out) < k:                       # the pass ended: continue in the next shuffle
            self.epoch_ += 1
            self._order = self._shuffle(self.epoch_)
            taken = set(out)
            rest = [int(i) for i in self._order if int(i) not in taken]
            need = k - len(out)
            # Positions already in this pool move behind the ones taken now, so the new pass still covers all.
            self._order = np.array(rest[:need] + [int(i) for i in self._order if int(i) in taken] + rest[need:])
            out.extend(self._order[:need])
            self.cursor_ = need
        return np.asarray(out, dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "seed": self.seed, "epoch": self.epoch_, "cursor": self.cursor_,
                "order": self._order.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["size"]) != self.size:
            raise OnlineInputError(f"was saved for {state['size']} prompts, the dataset has {self.size}",
                                   field="pool state")
        self.seed, self.epoch_, self.cursor_ = int(state["seed"]), int(state["epoch"]), int(state["cursor"])
        self._order = np.asarray(state["order"], dtype=np.int64)


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
    """The text of a verl prompt cell: a string, or chat messages ``[{"role", "content"}, ...]``.

    User turns are joined (system turns left out: they are shared by every
    prompt and would only blur the neighbour search).
    """
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, np.ndarray):
        prompt = prompt.tolist()
    if isinstance(prompt, Mapping):
        prompt = [prompt]
    parts, fallback = [], []
    for msg in prompt or []:
        content = msg.get("content", "") if isinstance(msg, Mapping) else str(msg)
        if isinstance(content, list):                   # multi-modal content: keep the text pieces
            content = " ".join(str(c.get("text", "")) for c in content if isinstance(c, Mapping))
        fallback.append(str(content))
        if not isinstance(msg, Mapping) or msg.get("role", "user") == "user":
            parts.append(str(content))
    return "\n".join(parts or fallback)


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
