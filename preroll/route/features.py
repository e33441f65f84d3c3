"""Routing features: one encoder, or several side by side, behind one embedding matrix.

On MMLU routing a lexical view (TF-IDF n-grams) and a semantic view (MiniLM)
carry partly different signal: word overlap finds the exact subject area,
the sentence embedding finds paraphrases. Concatenating them (each block
L2-normalised and scaled by ``1/sqrt(n_blocks)``, so the whole row keeps unit
norm and cosine neighbours weigh the views equally) keeps the router's
contract: each prompt is encoded once per view, and every model's head reads
the same matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
            X = np.asarray(e.encode(texts, show_progress=show_progress), dtype=np.float32)
            norm = np.linalg.norm(X, axis=1, keepdims=True)
            blocks.append(X / np.where(norm > 0, norm, 1.0) * scale)
        return np.hstack(blocks).astype(np.float32)


def resolve_encoder(spec: Any, cache_dir: str | Path | None = None) -> Encoder:
    """An encoder from a name, a ``"+"``-joined list of names (e.g. ``"minilm+lexical"``), a list, or an instance."""
    if isinstance(spec, Encoder):
        return spec
    if isinstance(spec, str) and "+" in spec:
        spec = [s.strip() for s in spec.split("+")]
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError("an empty list of encoders")
        parts = [resolve_encoder(s, cache_dir) for s in spec]
        return parts[0] if len(parts) == 1 else ConcatEncoder(parts)
    if isinstance(spec, (str, Path)):
        from preroll.encoders import get_encoder

        return get_encoder(spec, cache_dir=cache_dir)
    if hasattr(spec, "encode") and hasattr(spec, "fit"):
        return spec
    raise ValueError(f"encoder must be a name, a '+'-joined list of names, a list, or an Encoder (got {spec!r})")
