"""An in-memory memo in front of an encoder: repeated prompts are looked up, not recomputed.

Why not the on-disk cache: a fitted encoder's vectors (lexical, stats)
belong to one fit of one history, and every refit starts a new namespace, so
storing them on disk would fill it with vectors nobody reads again. Within a
fit, though, the same prompts come back (a scheduler re-scoring its pool, a
router seeing a hot prompt, a benchmark splitting its data), and a TF-IDF
transform of character n-grams (~2,000 prompts/s here) is far slower than a
dictionary look-up. Keys are ``(encoder name, text)``; the name changes with
each fit, so vectors of two fits never mix. The oldest entries go first past
``max_items``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np

from preroll.encoders.base import Encoder


class MemoEncoder(Encoder):
    """Remembers up to ``max_items`` vectors of ``inner`` by (name, text)."""

    def __init__(self, inner: Encoder, *, max_items: int = 50_000) -> None:
        self.inner = inner
        self.max_items = max_items

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def unit_rows(self) -> bool:  # type: ignore[override]
        return getattr(self.inner, "unit_rows", True)

    def fit(self, texts: Sequence[str]) -> "MemoEncoder":
        self.inner.fit(texts)
        return self

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return self.inner.encode(texts)
        memo = self.__dict__.setdefault("_memo", OrderedDict())
        name = self.inner.name
        todo = list(dict.fromkeys(t for t in texts if (name, t) not in memo))
        fresh = dict(zip(todo, np.asarray(self.inner.encode(todo, show_progress=show_progress), np.float32),
                         strict=True)) \
            if todo else {}
        out = np.stack([fresh[t] if t in fresh else memo[(name, t)] for t in texts])
        for t, v in fresh.items():
            memo[(name, t)] = v
        while len(memo) > self.max_items:
            memo.popitem(last=False)
        return out

    def __repr__(self) -> str:
        return f"MemoEncoder({self.inner!r})"
