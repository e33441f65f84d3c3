"""Candidate pools for fixed-n selection: consecutive windows of seeded per-pass permutations.

Why a permutation stream rather than independent draws: every prompt becomes a
candidate once per pass over the dataset (as in TRL's own shuffled sampler), so
the book sees all of the dataset at the same rate uniform training would, and
only the choice *within* a pool is the book's. The stream is a pure function
of (seed, position): its whole state is one integer, saved with the checkpoint.
"""

from __future__ import annotations

import numpy as np


class PoolStream:
    """Yields pools of ``size`` distinct dataset indices out of ``n`` (size is clipped to n)."""

    def __init__(self, n: int, size: int, seed: int) -> None:
        if n < 1:
            raise ValueError("the dataset is empty")
        self.n = int(n)
        self.size = int(min(max(size, 1), n))
        self.seed = int(seed)
        self.position = 0
        self._cache: tuple[int, np.ndarray] | None = None

    def _permutation(self, p: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != p:
            self._cache = (p, np.random.default_rng([self.seed, p]).permutation(self.n))
        return self._cache[1]

    def next(self) -> np.ndarray:
        """The next pool; a window that wraps into the next pass skips indices it already holds."""
        out: list[int] = []
        seen: set[int] = set()
        while len(out) < self.size:
            p, off = divmod(self.position, self.n)
            i = int(self._permutation(p)[off])
            self.position += 1
            if i not in seen:
                seen.add(i)
                out.append(i)
        return np.asarray(out, dtype=np.int64)

    def state_dict(self) -> dict:
        return {"n": self.n, "size": self.size, "seed": self.seed, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        if (int(state["n"]), int(state["size"]), int(state["seed"])) != (self.n, self.size, self.seed):
            raise ValueError(f"pool state was saved for n={state['n']}, size={state['size']}, seed={state['seed']}; "
                             f"this run has n={self.n}, size={self.size}, seed={self.seed}")
        self.position = int(state["position"])
