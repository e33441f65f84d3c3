"""Save a fitted :class:`ValueModel` to a directory and load it back.

Why: fitting reads and encodes the whole history (minutes for 100k rows),
while scoring a large prompt pool wants the same fitted model in many
processes, machines and reruns. A model directory holds

- ``manifest.json``: format version, preroll version, the encoder spec and
  fingerprint, the head, the (policy, step) snapshots, and a ``model_id``
  (sha256 of the saved state) that scoring runs use to recognise their model;
- ``state.pkl``: the fitted head, the history table (direct evidence needs it)
  and the other fitted attributes of the model;
- ``encoder.pkl``: the encoder tree with the fitted views (lexical TF-IDF + SVD,
  surface statistics) and *no* neural weights: a neural part keeps only its
  settings, and its weights are found again at load time and checked against
  the fingerprint (the bundled MiniLM's name carries its weights' sha256).

Loading refuses, with one line, a directory of another format version or one
whose encoder this installation does not reproduce (different weights,
settings or code). The pickles are trusted like any scikit-learn pickle: load
only model directories you made.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from preroll.errors import InputError, NotFittedError, OutputError
from preroll.outputs import current_umask
from preroll.validation import from_pydantic
from preroll.encoders.base import Encoder
from preroll.encoders.cache import CachedEncoder
from preroll.encoders.concat import ConcatEncoder
from preroll.encoders.lexical import LexicalEncoder
from preroll.encoders.memo import MemoEncoder

#: Bump when the layout or the meaning of a saved field changes; older directories are then refused.
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STATE = "state.pkl"
ENCODER_STATE = "encoder.pkl"
KIND = "preroll.value-model"

#: Attributes of a neural encoder that hold loaded weights or memoised identities, never saved.
_RUNTIME_ATTRS = ("_st_model", "_name", "_conn", "_lock", "_memory", "_memo")


class ModelFormatError(InputError):
    """A model directory that cannot be loaded (missing, damaged, other format, other encoder)."""


class _EncoderEntry(BaseModel):
    spec: str
    name: str
    fingerprint: str


class _ManifestShape(BaseModel):
    """The fields of ``manifest.json`` that loading and scoring read: checked before anything trusts them."""

    model_config = ConfigDict(extra="allow")

    model_id: str
    encoder: _EncoderEntry
    files: dict[Literal["state.pkl", "encoder.pkl"], str]
    snapshots: list[tuple[str | None, int | None]]


def preroll_version() -> str:
    try:
        return metadata.version("preroll")
    except metadata.PackageNotFoundError:  # running from a checkout that is not installed
        return "unknown"


def encoder_fingerprint(encoder: Encoder) -> str:
    """sha256 of the fitted encoder's name: the name pins weights, settings and each view's fit."""
    return hashlib.sha256(encoder.name.encode("utf-8")).hexdigest()


def _strip_runtime(encoder: Encoder) -> Encoder:
    """A copy of the encoder tree without loaded weights, connections or memos (what gets pickled)."""
    if isinstance(encoder, ConcatEncoder):
        return ConcatEncoder([_strip_runtime(e) for e in encoder.encoders])
    if isinstance(encoder, MemoEncoder):
        return MemoEncoder(_strip_runtime(encoder.inner), max_items=encoder.max_items)
    if isinstance(encoder, CachedEncoder):
        # The cache directory is the loading machine's business (``$PREROLL_CACHE``), not the model's.
        return CachedEncoder(_strip_runtime(encoder.encoder), None, memory_items=encoder.memory_items)
    if isinstance(encoder, LexicalEncoder) and hasattr(encoder, "tfidf_"):
        clone = copy.copy(encoder)
        clone.tfidf_ = copy.deepcopy(encoder.tfidf_)
        for _, vectorizer in clone.tfidf_.transformer_list:
            # The n-grams cut by max_features, kept by scikit-learn for introspection only (its docs
            # say so): most of a pickle's size, none of its predictions.
            if hasattr(vectorizer, "stop_words_"):
                vectorizer.stop_words_ = None
        return clone
    clone = copy.copy(encoder)
    for attr in _RUNTIME_ATTRS:
        clone.__dict__.pop(attr, None)
    return clone


def _tune_memory(encoder: Encoder, *, cache_dir, memory_items: int | None) -> None:
    """Point caches at ``cache_dir`` and cap the in-memory layers (a scorer sees each prompt once)."""
    if isinstance(encoder, ConcatEncoder):
        for e in encoder.encoders:
            _tune_memory(e, cache_dir=cache_dir, memory_items=memory_items)
    elif isinstance(encoder, MemoEncoder):
        if memory_items is not None:
            encoder.max_items = memory_items
        _tune_memory(encoder.inner, cache_dir=cache_dir, memory_items=memory_items)
    elif isinstance(encoder, CachedEncoder):
        encoder.cache_dir = cache_dir
        if memory_items is not None:
            encoder.memory_items = memory_items
        _tune_memory(encoder.encoder, cache_dir=cache_dir, memory_items=memory_items)


def _describe(obj: Any) -> str:
    return obj if isinstance(obj, str) else repr(obj)


def _snapshot_json(snapshots) -> list[list]:
    return [[s.policy, s.step] for s in snapshots]  # a Snapshot says "not given" with None: JSON null


#: The files a model folder holds that preroll wrote: the only ones ``--force`` replaces.
OWN_FILES = (STATE, ENCODER_STATE, MANIFEST)


def check_model_target(directory: str | Path, *, overwrite: bool = False, option: str = "--save") -> Path:
    """Refuse, before any work, a target a model may not be written to; return it.

    Why: ``--force`` means "replace the model I saved here before", never "empty this folder".
    A missing or empty folder is fine; an existing model folder only with ``overwrite``, and then
    only its own files are replaced (anything else in it is left alone); a file, or a folder
    holding anything but a preroll model, is refused even with ``overwrite``.
    """
    directory = Path(directory)
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise OutputError(f"{option} {directory} is not a folder; a model is a folder (nothing is replaced)")
    if not directory.exists():
        return directory
    try:
        entries = list(directory.iterdir())
    except OSError as exc:
        raise OutputError(f"{option} {directory}: cannot read the folder: {exc.strerror or exc}") from None
    if not entries:
        return directory
    if not _is_model_folder(directory):
        raise OutputError(f"{option} {directory} exists and is not a preroll model folder; choose another path "
                          "(a folder preroll did not write is never emptied, even with --force)")
    if not overwrite:
        raise ModelFormatError(f"{directory} already exists; pass overwrite=True (--force) to replace it")
    return directory


def _is_model_folder(directory: Path) -> bool:
    """Whether ``directory`` holds a manifest of kind ``preroll.value-model`` (any format version)."""
    path = directory / MANIFEST
    if path.is_symlink() or not path.is_file():
        return False
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("kind") == KIND


def save_model(model, directory: str | Path, *, overwrite: bool = False) -> Path:
    """Write fitted ``model`` to ``directory`` (created; an existing model folder only with ``overwrite``).

    A new directory is assembled beside the target and renamed into place, so a
    crash never leaves a half-written model where a scorer could pick it up. An
    existing model folder (``overwrite``) gets its own three files replaced one by
    one, the manifest last: every other file in it is the user's and stays; a crash
    in between leaves a manifest whose checksums refuse the mixed state.
    """
    if not hasattr(model, "head_"):
        raise NotFittedError("cannot save an unfitted ValueModel: call fit(records) first")
    directory = check_model_target(directory, overwrite=overwrite)
    state = {k: v for k, v in model.__dict__.items() if k not in ("encoder_", "_text_index")}
    if not isinstance(state.get("encoder"), str):
        state["encoder"] = _strip_runtime(state["encoder"])
    state_bytes = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    encoder_bytes = pickle.dumps(_strip_runtime(model.encoder_), protocol=pickle.HIGHEST_PROTOCOL)
    model_id = hashlib.sha256(hashlib.sha256(state_bytes).digest() + hashlib.sha256(encoder_bytes).digest()).hexdigest()
    manifest = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "preroll_version": preroll_version(),
        "model_id": model_id,
        "encoder": {"spec": _describe(model.encoder), "name": model.encoder_.name,
                    "fingerprint": encoder_fingerprint(model.encoder_)},
        "head": _describe(model.head),
        "evidence_decay": model.evidence_decay,
        "history_rows": len(model.table_),
        "snapshots": _snapshot_json(model.snapshots_),
        "files": {STATE: hashlib.sha256(state_bytes).hexdigest(),
                  ENCODER_STATE: hashlib.sha256(encoder_bytes).hexdigest()},
    }
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private; a model directory is shared like any file
    try:
        (staging / STATE).write_bytes(state_bytes)
        (staging / ENCODER_STATE).write_bytes(encoder_bytes)
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if directory.exists():
            for name in OWN_FILES:  # the manifest last
                os.replace(staging / name, directory / name)
            staging.rmdir()
        else:
            os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_manifest(directory: str | Path) -> dict:
    """The manifest of a model directory, checked for kind and format version."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelFormatError(f"{directory} is not a preroll model directory (no {MANIFEST}); "
                               "make one with `preroll fit --save`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: damaged manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ModelFormatError(f"{path}: not a preroll value-model manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"{directory}: model format version {version!r}, this preroll ({preroll_version()}) reads version "
            f"{FORMAT_VERSION}; refit it with `preroll fit --save`")
    try:
        _ManifestShape.model_validate(manifest)
    except ValidationError as exc:
        raise from_pydantic(exc, ModelFormatError, path=path) from None
    return manifest


def _read_checked(directory: Path, name: str, manifest: dict) -> bytes:
    path = directory / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelFormatError(f"{path} is missing; the model directory is incomplete") from None
    expected = manifest.get("files", {}).get(name)
    if hashlib.sha256(data).hexdigest() != expected:
        raise ModelFormatError(f"{path}: content does not match its manifest checksum; the model directory is damaged")
    return data


def verify_model_files(directory: str | Path) -> dict:
    """The manifest, after checking every saved file against its checksum (no unpickling).

    For a caller that loads the model elsewhere (scoring worker processes): a damaged folder
    is refused here, in one line, rather than as a worker that died while starting.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    for name in (STATE, ENCODER_STATE):
        _read_checked(directory, name, manifest)
    return manifest


def load_model(directory: str | Path, *, cache_dir=None, memory_items: int | None = None):
    """Load a model saved by :func:`save_model`, ready to ``predict``.

    Parameters
    ----------
    cache_dir:
        Embedding cache of the neural parts on this machine (``None``: ``$PREROLL_CACHE``).
    memory_items:
        Cap on the encoders' in-memory layers; a scorer that sees each prompt
        once passes 0 to keep its memory flat.
    """
    from preroll.model.value_model import ValueModel

    directory = Path(directory)
    manifest = read_manifest(directory)
    state = pickle.loads(_read_checked(directory, STATE, manifest))
    encoder = pickle.loads(_read_checked(directory, ENCODER_STATE, manifest))
    _tune_memory(encoder, cache_dir=cache_dir, memory_items=memory_items)
    expected = manifest["encoder"]["fingerprint"]
    try:
        actual = encoder_fingerprint(encoder)  # a neural part verifies its weights here
    except Exception as exc:
        raise ModelFormatError(f"{directory}: cannot rebuild encoder {manifest['encoder']['name']!r}: {exc}") from None
    if actual != expected:
        raise ModelFormatError(
            f"{directory}: encoder fingerprint mismatch: saved {manifest['encoder']['name']!r} "
            f"({expected[:12]}), this installation gives {encoder.name!r} ({actual[:12]}); "
            "refit the model here with `preroll fit --save`")
    model = ValueModel.__new__(ValueModel)
    model.__dict__.update(state)
    model.encoder_ = encoder
    model.show_progress = False
    model._text_index = {}
    for i, text in enumerate(model.table_.prompts):
        model._text_index.setdefault(text, []).append(i)
    model.model_id_ = manifest["model_id"]
    return model
