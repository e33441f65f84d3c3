"""Several encoders side by side, behind one embedding matrix (``"minilm+lexical+stats"``).

Different views carry partly different signal: word and character n-grams
find the exact topic and handle Chinese, the sentence embedding finds
paraphrases, surface statistics see length and notation. Measured: on MMLU
routing minilm+lexical beats either alone (docs/route.md), on DAPO-Math
minilm+lexical+stats lifts the value model's cold-prompt AUC (README).

Each unit-norm block is re-normalised per row and every block is scaled by
``1/sqrt(n_blocks)``, so rows keep (about) unit norm and no view outweighs
the others by its dimension. Blocks that are not unit-norm by design
(``Encoder.unit_rows = False``) are kept as they are, only scaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from preroll.encoders.base import Encoder


class ConcatEncoder(Encoder):
    """Side-by-side features of several encoders."""

    def __init__(self, encoders: Sequence[Encoder]) -> None:
        self.encoders = list(encoders)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "+".join(e.name for e in self.encoders)

    def fit(self, texts):
        for e in self.encoders:
            e.fit(texts)
        return self

    def encode(self, texts, *, show_progress: bool = False) -> np.ndarray:
        scale = 1.0 / np.sqrt(len(self.encoders))
        blocks = []
        for e in self.encoders:
            X: np.ndarray = np.asarray(e.encode(texts, show_progress=show_progress), dtype=np.float32)
            if getattr(e, "unit_rows", True):
                norm = np.linalg.norm(X, axis=1, keepdims=True)
                X = X / np.where(norm > 0, norm, 1.0)
            blocks.append(X * scale)
        return np.hstack(blocks).astype(np.float32)

    def __repr__(self) -> str:
        return f"ConcatEncoder({self.encoders!r})"
