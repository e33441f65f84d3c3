"""Text encoders: prompts in, L2-normalised float32 vectors out, cached on disk.

``get_encoder`` turns a short spec into a ready encoder:

- ``"minilm"`` (default): bundled all-MiniLM-L6-v2, checksum-verified, offline;
- ``"lexical"``: TF-IDF + SVD, no model at all (must be ``fit`` first);
- anything else: a sentence-transformers / Hugging Face model id or local directory
  (e.g. ``"Qwen/Qwen3-Embedding-0.6B"``).

Torch and sentence-transformers are imported only when a neural encoder first
encodes, so importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from preroll.encoders.base import Encoder
from preroll.encoders.cache import CachedEncoder, default_cache_dir
from preroll.encoders.errors import EmbeddingCacheError, EncoderLoadError, WeightsIntegrityError
from preroll.encoders.lexical import LexicalEncoder
from preroll.encoders.minilm import DEFAULT_MAX_LENGTH, DEFAULT_QUANTIZE, MiniLMEncoder
from preroll.encoders.sentence import SentenceEncoder

__all__ = [
    "Encoder", "get_encoder", "CachedEncoder", "default_cache_dir", "MiniLMEncoder", "SentenceEncoder",
    "LexicalEncoder", "EncoderLoadError", "WeightsIntegrityError", "EmbeddingCacheError",
]


def get_encoder(spec: str | Path | Encoder = "minilm", *, cache_dir: str | Path | None | Literal[False] = None,
                max_length: int | None = None, quantize: bool | None = None, batch_size: int = 32,
                num_threads: int | None = None, prompt_name: str | None = None,
                revision: str | None = None) -> Encoder:
    """Build the encoder named by ``spec``, behind the on-disk embedding cache.

    Parameters
    ----------
    spec:
        ``"minilm"``, ``"lexical"``, a sentence-transformers / Hugging Face model
        id, a local model directory, or an ``Encoder`` instance (returned as is).
    cache_dir:
        Where vectors are cached: ``None`` uses ``$PREROLL_CACHE`` or
        ``~/.cache/preroll``; ``False`` disables caching. Lexical vectors are
        never cached (computing them is cheaper than looking them up).
    max_length:
        Tokens kept per prompt. ``None``: MiniLM's tuned default
        (``DEFAULT_MAX_LENGTH``), or another model's own limit.
    quantize:
        Dynamic int8 linear layers. ``None``: on for MiniLM (``DEFAULT_QUANTIZE``), off for other models.
    batch_size, num_threads:
        Passed to the neural encoder (see ``SentenceEncoder``).
    prompt_name:
        A named instruction prompt of another model (e.g. ``"query"``).
    revision:
        Hub revision of another model.
    """
    if isinstance(spec, Encoder):
        return spec
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise ValueError(f"encoder spec must be 'minilm', 'lexical', a model name or a path (got {spec!r})")
    key = str(spec).strip()
    if key.lower() in {"lexical", "minilm"}:
        ignored = {"prompt_name": prompt_name, "revision": revision}
        if key.lower() == "lexical":
            ignored.update(max_length=max_length, quantize=quantize)
        given = [k for k, v in ignored.items() if v is not None]
        if given:
            raise ValueError(f"encoder {key!r} has no option {', '.join(given)} (it applies to other models)")
    if key.lower() == "lexical":
        return LexicalEncoder()
    if key.lower() == "minilm":
        encoder: Encoder = MiniLMEncoder(
            max_length=DEFAULT_MAX_LENGTH if max_length is None else max_length,
            quantize=DEFAULT_QUANTIZE if quantize is None else quantize,
            batch_size=batch_size, num_threads=num_threads)
    else:
        encoder = SentenceEncoder(spec, max_length=max_length, quantize=bool(quantize), batch_size=batch_size,
                                  num_threads=num_threads, prompt_name=prompt_name, revision=revision)
    if cache_dir is False:
        return encoder
    return CachedEncoder(encoder, None if cache_dir is True else cache_dir)
