"""The encoder interface: text in, one float32 vector per text out.

Kept tiny on purpose so a user can plug in any embedding model. ``name`` must
identify the model *and* every setting that changes its vectors (weights hash,
max length, ...): the on-disk cache is keyed by it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np


class Encoder(ABC):
    """Maps prompts to fixed-size vectors."""

    #: Stable identifier of the model and its settings; the cache key prefix.
    name: str

    #: Whether ``encode`` returns L2-normalised rows (what cosine neighbours and
    #: :class:`~preroll.encoders.concat.ConcatEncoder` expect). Encoders of raw
    #: statistics set it False: normalising each row would erase their signal.
    unit_rows: bool = True

    def fit(self, texts: Sequence[str]) -> "Encoder":
        """Learn from the texts, for encoders that need it (lexical). Neural encoders do nothing."""
        return self

    @abstractmethod
    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        """Return a ``(len(texts), dim)`` float32 array."""
