"""Save a fitted :class:`ValueModel` to a directory and load it back.

Why: fitting reads and encodes the whole history (minutes for 100k rows),
while scoring a large prompt pool wants the same fitted model in many
processes, machines and reruns. A model directory holds

- ``manifest.json``: format version, preroll version, the encoder spec and
  fingerprint, the head, the (policy, step) snapshots, and a ``model_id``
  (sha256 of the saved state) that scoring runs use to recognise their model;
- ``state.pkl``: the fitted head, the history table (direct evidence needs it)
  and the other fitted attributes of the model;
- ``encoder.pkl``: the encoder tree with the fitted views and *no* weights or
  projections a machine can rebuild: a neural part keeps only its settings, and
  its weights are found again at load time and checked against the fingerprint
  (the bundled MiniLM's name carries its weights' sha256); the lexical view
  keeps its TF-IDF vocabulary (a few MB) and refers to its SVD projection by
  sha256 (see below).

Why the projection is saved by reference: it is vocabulary x 256 float32,
about 96 MB on a 3k-prompt history (the bulk of a 100 MB model folder), and it
is a deterministic function of the history's prompts, which ``state.pkl``
keeps anyway. Saving puts it in the machine's cache (``$PREROLL_CACHE/lexical``,
beside the embedding cache); loading takes it from there, or refits the lexical
view on the history's prompts (once per machine, as long as ``fit`` took for
that view) and checks the result against the saved sha256. A refit that
differs in the last bits (another BLAS) is accepted only within a tolerance on
per-column checksums, with a warning; anything else is refused.

Likewise the value model's ``reference_`` (the encoded history rows its
beliefs measure distances to: up to 4,096 x dim float32, 8 MB on a 3k-prompt
history) is saved as the row numbers of the history it encodes when encoding
those rows again reproduces it bit for bit at save time, and encoded again at
load (from the embedding cache on the machine that fitted; a new machine
encodes them once). A new machine's vectors may differ from the cached ones by
float rounding (~1e-6); up to 1e-4 is accepted, since the reference only sets
how far a query lies from the history.

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
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
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


def _strip_runtime(encoder: Encoder, *, fit_texts: list[str] | None = None) -> Encoder:
    """A copy of the encoder tree without loaded weights, connections or memos (what gets pickled).

    A lexical view fitted on ``fit_texts`` (the history's prompts, which the model keeps) loses its
    projection, replaced by :func:`_projection_ref`; one fitted on other texts keeps it.
    """
    if isinstance(encoder, ConcatEncoder):
        return ConcatEncoder([_strip_runtime(e, fit_texts=fit_texts) for e in encoder.encoders])
    if isinstance(encoder, MemoEncoder):
        return MemoEncoder(_strip_runtime(encoder.inner, fit_texts=fit_texts), max_items=encoder.max_items)
    if isinstance(encoder, CachedEncoder):
        # The cache directory is the loading machine's business (``$PREROLL_CACHE``), not the model's.
        return CachedEncoder(_strip_runtime(encoder.encoder, fit_texts=fit_texts), None,
                             memory_items=encoder.memory_items)
    if isinstance(encoder, LexicalEncoder) and hasattr(encoder, "tfidf_"):
        clone = copy.copy(encoder)
        clone.tfidf_ = copy.deepcopy(encoder.tfidf_)
        for _, vectorizer in clone.tfidf_.transformer_list:
            # The n-grams cut by max_features, kept by scikit-learn for introspection only (its docs
            # say so): most of a pickle's size, none of its predictions.
            if hasattr(vectorizer, "stop_words_"):
                vectorizer.stop_words_ = None
        if fit_texts is not None and encoder._fit_key(fit_texts) == encoder.fit_hash_:
            clone.__dict__["projection_ref_"] = _projection_ref(encoder.projection_)
            del clone.projection_
        return clone
    other = copy.copy(encoder)
    for attr in _RUNTIME_ATTRS:
        other.__dict__.pop(attr, None)
    return other


def _projection_ref(projection: np.ndarray) -> dict:
    """What identifies a lexical projection: exact sha256, shape, and per-column sums and norms (float64)."""
    data = np.ascontiguousarray(projection, dtype=np.float32)
    return {"sha256": hashlib.sha256(data.tobytes()).hexdigest(), "shape": list(data.shape),
            "column_sums": data.sum(axis=0, dtype=np.float64), "column_norms": np.linalg.norm(data, axis=0)}


def _reference_rows(model) -> np.ndarray | None:
    """Row numbers of the history whose encodings are ``model.reference_``, if encoding them again gives it exactly.

    The rows are the ones the value model samples (all rows, or a seeded sample); anything
    else (another sampling, a user's encoder that is not deterministic) keeps the array.
    """
    from preroll.model.value_model import _REACH_SAMPLE

    reference = getattr(model, "reference_", None)
    n = len(model.table_)
    if reference is None or len(reference) == 0:
        return None
    rows = (np.arange(n) if n <= _REACH_SAMPLE
            else np.random.default_rng(0).choice(n, _REACH_SAMPLE, replace=False))
    if len(rows) != len(reference):
        return None
    prompts = model.table_.prompts
    try:
        again = np.asarray(model.encoder_.encode([prompts[i] for i in rows]))
    except Exception:
        return None
    if again.dtype != reference.dtype or again.shape != reference.shape or not np.array_equal(again, reference):
        return None
    return rows.astype(np.int64)


def _restore_reference(model, ref: dict, directory: Path) -> None:
    prompts = model.table_.prompts
    reference = np.ascontiguousarray(model.encoder_.encode([prompts[i] for i in ref["rows"]]), dtype=ref["dtype"])
    if list(reference.shape) != ref["shape"]:
        raise ModelFormatError(f"{directory}: the encoder gives vectors of shape {list(reference.shape)} for the "
                               f"history, the saved model {ref['shape']}; refit the model with `preroll fit --save`")
    if hashlib.sha256(reference.tobytes()).hexdigest() != ref["sha256"]:
        # Not bit for bit (vectors computed afresh instead of read from the fitting machine's cache):
        # the saved first rows bound the difference.
        probe = ref["probe"]
        if not np.allclose(reference[:len(probe)], probe, rtol=0, atol=1e-4):
            raise ModelFormatError(f"{directory}: the encoder gives other vectors for the history on this machine "
                                   "than when the model was fitted; refit the model here with `preroll fit --save`")
    model.reference_ = reference


def _lexical_parts(encoder: Encoder) -> list[LexicalEncoder]:
    if isinstance(encoder, ConcatEncoder):
        return [p for e in encoder.encoders for p in _lexical_parts(e)]
    if isinstance(encoder, MemoEncoder):
        return _lexical_parts(encoder.inner)
    if isinstance(encoder, CachedEncoder):
        return _lexical_parts(encoder.encoder)
    return [encoder] if isinstance(encoder, LexicalEncoder) else []


def _projection_cache(cache_dir) -> Path | None:
    if cache_dir is False:
        return None
    from preroll.encoders.cache import default_cache_dir

    return Path(cache_dir if cache_dir not in (None, True) else default_cache_dir()) / "lexical"


def _cache_projection(cache: Path | None, sha256: str, projection: np.ndarray) -> None:
    """Keep a projection in the machine's cache; a cache that cannot be written only costs a refit later."""
    if cache is None:
        return
    import io

    from preroll.outputs import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(projection, dtype=np.float32), allow_pickle=False)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache / f"{sha256}.npy", buf.getvalue())
    except OSError:
        pass


def _cached_projection(cache: Path | None, ref: dict) -> np.ndarray | None:
    if cache is None:
        return None
    try:
        projection = np.load(cache / f"{ref['sha256']}.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    ok = projection.dtype == np.float32 and list(projection.shape) == ref["shape"]
    return projection if ok and hashlib.sha256(projection.tobytes()).hexdigest() == ref["sha256"] else None


def _restore_projections(encoder: Encoder, prompts: list[str], cache: Path | None, directory: Path) -> None:
    """Give every lexical view saved by reference its projection: from the cache, else by a checked refit."""
    for part in _lexical_parts(encoder):
        ref = getattr(part, "projection_ref_", None)
        if ref is None or hasattr(part, "projection_"):
            continue
        projection = _cached_projection(cache, ref)
        if projection is None:
            refit = LexicalEncoder(part.n_components, max_features=part.max_features,
                                   random_state=part.random_state).fit(prompts)
            if refit.fit_hash_ != part.fit_hash_:
                raise ModelFormatError(f"{directory}: the lexical view was fitted on other prompts than the "
                                       "saved history; the model directory is damaged")
            projection = refit.projection_
            got = _projection_ref(projection)
            if got["sha256"] != ref["sha256"]:
                if got["shape"] != ref["shape"] or not (
                        np.allclose(got["column_sums"], ref["column_sums"], rtol=1e-4, atol=1e-5)
                        and np.allclose(got["column_norms"], ref["column_norms"], rtol=1e-4, atol=1e-5)):
                    raise ModelFormatError(
                        f"{directory}: the lexical view refitted on this machine differs from the saved one "
                        "(other numpy/scipy/BLAS?); refit the model here with `preroll fit --save`")
                warnings.warn(f"{directory}: the lexical view refitted on this machine matches the saved one "
                              "to 1e-4, not bit for bit (another BLAS); predictions may differ in the last digits",
                              stacklevel=3)
            _cache_projection(cache, ref["sha256"], projection)
        part.projection_ = projection


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
    rows = _reference_rows(model)
    if rows is not None:
        reference = np.ascontiguousarray(state.pop("reference_"))
        state["reference_ref_"] = {"rows": rows, "sha256": hashlib.sha256(reference.tobytes()).hexdigest(),
                                   "dtype": str(reference.dtype), "shape": list(reference.shape),
                                   "probe": reference[:16].copy()}
    state_bytes = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    prompts = list(model.table_.prompts)
    stripped = _strip_runtime(model.encoder_, fit_texts=prompts)
    encoder_bytes = pickle.dumps(stripped, protocol=pickle.HIGHEST_PROTOCOL)
    cache = _projection_cache(getattr(model, "cache_dir", None))
    for part, saved in zip(_lexical_parts(model.encoder_), _lexical_parts(stripped), strict=True):
        if hasattr(saved, "projection_ref_"):  # loading on this machine then needs no refit
            _cache_projection(cache, saved.projection_ref_["sha256"], part.projection_)
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


def warm_cache(directory: str | Path, *, cache_dir=None) -> None:
    """Put the model's lexical projections in this machine's cache (refitting once if they are not there).

    Why: ``preroll score`` loads the model in every worker process; on a machine
    that has not seen the model, each would refit the lexical view at the same
    time. Called once before the workers start, it makes their loads cache hits.
    """
    directory = Path(directory)
    cache = _projection_cache(cache_dir)
    if cache is None:
        return
    manifest = read_manifest(directory)
    encoder = pickle.loads(_read_checked(directory, ENCODER_STATE, manifest))
    refs = [p.__dict__["projection_ref_"] for p in _lexical_parts(encoder) if "projection_ref_" in p.__dict__]
    if all(_cached_projection(cache, ref) is not None for ref in refs):
        return
    state = pickle.loads(_read_checked(directory, STATE, manifest))
    _restore_projections(encoder, list(state["table_"].prompts), cache, directory)


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
    _restore_projections(encoder, list(state["table_"].prompts), _projection_cache(cache_dir), directory)
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
    ref = model.__dict__.pop("reference_ref_", None)
    if ref is not None:
        _restore_reference(model, ref, directory)
    model.__dict__["model_id_"] = manifest["model_id"]
    return model
