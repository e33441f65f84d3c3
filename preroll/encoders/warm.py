"""Embed what the on-disk cache lacks, in chunks, before a long job: so the job can say how much
encoding is ahead of it and show it moving (a fresh cache means minutes of MiniLM on a busy CPU).

Only the parts of an encoder behind the cache (the neural views) are warmed; fitted views
(lexical, stats) depend on the fit and are computed by the job itself.
"""

from __future__ import annotations

from typing import Callable, Sequence

from preroll.encoders.base import Encoder
from preroll.encoders.cache import CachedEncoder
from preroll.encoders.concat import ConcatEncoder

#: Prompts per encode call while warming: one progress step.
WARM_CHUNK = 128


def cached_parts(encoder: Encoder) -> list[CachedEncoder]:
    """The parts of ``encoder`` behind the on-disk embedding cache."""
    if isinstance(encoder, CachedEncoder):
        return [encoder]
    if isinstance(encoder, ConcatEncoder):
        return [p for part in encoder.encoders for p in cached_parts(part)]
    return []


def missing_texts(encoder: Encoder, texts: Sequence[str]) -> list[tuple[CachedEncoder, list[str]]]:
    """Per cached part, the distinct ``texts`` it has not stored yet."""
    return [(part, part.missing(texts)) for part in cached_parts(encoder)]


def embed_missing(todo: list[tuple[CachedEncoder, list[str]]],
                  on_chunk: Callable[[int, int, int], None] | None = None) -> None:
    """Encode (and so store) every missing text; ``on_chunk(done_now, done, total)`` after each chunk
    (``done_now`` is the chunk's size; the first chunk of a part also loads its model)."""
    for part, texts in todo:
        for start in range(0, len(texts), WARM_CHUNK):
            chunk = texts[start:start + WARM_CHUNK]
            part.encode(chunk)
            if on_chunk is not None:
                on_chunk(len(chunk), start + len(chunk), len(texts))
