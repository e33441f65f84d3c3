"""Candidate pools: consecutive windows of seeded per-pass permutations of the dataset (one stream, both trainers).

Why a permutation stream rather than independent draws: every prompt becomes a
candidate once per pass over the dataset (as with a trainer's own shuffled
sampler), so the book sees all of the dataset at the rate uniform training
would, and only the choice *within* a pool is the book's. The stream is a pure
function of (seed, position): its whole state is one integer, saved with the
checkpoint.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from preroll.online.errors import OnlineInputError


class PoolStream:
    """Pools of distinct dataset positions out of ``n``: ``take(k)`` any size, ``next()`` the default ``size``.

    A window that wraps into the next pass skips positions it already holds (a
    pool never repeats a prompt); those positions are not candidates again in
    that pass.
    """

    def __init__(self, n: int, size: int | None = None, seed: int = 0) -> None:
        if n < 1:
            raise OnlineInputError(f"must be positive (got {n})", field="dataset size")
        self.n = int(n)
        self.size = int(min(max(size if size is not None else n, 1), n))
        self.seed = int(seed)
        self.position = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def _permutation(self, p: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != p:
            self._cache = (p, np.random.default_rng([self.seed, p]).permutation(self.n))
        return self._cache[1]

    def take(self, k: int) -> np.ndarray:
        """The next ``k`` distinct positions (``1 <= k <= n``)."""
        if not 0 < int(k) <= self.n:
            raise OnlineInputError(f"is {k}; a pool holds 1..{self.n} prompts (the dataset size)", field="pool size")
        out: list[int] = []
        seen: set[int] = set()
        while len(out) < k:
            p, off = divmod(self.position, self.n)
            i = int(self._permutation(p)[off])
            self.position += 1
            if i not in seen:
                seen.add(i)
                out.append(i)
        return np.asarray(out, dtype=np.int64)

    def next(self) -> np.ndarray:
        """The next pool of the default size."""
        return self.take(self.size)

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "size": self.size, "seed": self.seed, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Restore a saved position; the dataset size and seed must be the saved ones.

        Also reads the pool state verl checkpoints held before the streams were
        merged (``size, seed, epoch, cursor, order``): it resumes at the same
        pass and offset, in this stream's order for that pass.
        """
        n = int(state["n"] if "n" in state else state["size"])
        if (n, int(state["seed"])) != (self.n, self.seed):
            raise ValueError(f"pool state was saved for n={n}, seed={state['seed']}; this run has n={self.n}, "
                             f"seed={self.seed}")
        if "position" in state:
            self.position = int(state["position"])
        else:
            self.position = int(state["epoch"]) * self.n + int(state["cursor"])
