"""Any sentence-transformers / Hugging Face model as a preroll encoder.

A user names a model (``"Qwen/Qwen3-Embedding-0.6B"``) or a local directory.
Loading is deferred to the first ``encode`` (no work in ``__init__``), and the
encoder's ``name`` pins the exact weights (content hash of a local directory,
commit of a hub snapshot) plus every setting that changes the vectors, so the
embedding cache can never hand back vectors of another model or setting.

A plain transformers checkpoint without sentence-transformers config is
accepted: sentence-transformers then adds mean pooling itself.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from preroll.encoders.base import Encoder
from preroll.encoders.errors import EncoderLoadError
from preroll.encoders.fingerprint import directory_fingerprint

#: How a missing ``neural`` extra is named in its one-line error.
NEURAL_WHAT = "a neural encoder (torch, sentence-transformers)"


#: Seconds to wait for the hub when checking a model name that is not on disk.
HUB_CHECK_TIMEOUT = 5.0


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - installed with sentence-transformers
        return False
    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # a name the hub would refuse (e.g. bad characters): let the check below say so
        return False


def _check_hub_name(name: str) -> None:
    """Fail in seconds when ``name`` is neither a local folder nor reachable on the hub."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    where = "HF_HUB_OFFLINE is set" if offline else None
    if not offline:
        try:
            from huggingface_hub import model_info

            model_info(name, timeout=HUB_CHECK_TIMEOUT)
            return
        except ImportError:  # pragma: no cover
            return
        except Exception as exc:
            where = f"the hub did not confirm it within {HUB_CHECK_TIMEOUT:g} s ({type(exc).__name__})"
    raise EncoderLoadError(
        f"encoder {name!r} is not a local folder, not a built-in encoder (minilm, lexical, stats) and not "
        f"in the local Hugging Face cache, and {where}. Check the name, download it where the hub is "
        f"reachable (`huggingface-cli download {name}`), or pass the path of a local model directory")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the libraries' own progress bars and load reports (``Loading weights``, ``Batches:``).

    preroll shows one progress bar of its own; library bars print thousands of characters
    per line into logs.
    """
    restore: list[Callable[[], None]] = []
    try:
        from transformers.utils import logging as tf_logging

        old = tf_logging.get_verbosity()
        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
        def undo_transformers() -> None:
            tf_logging.set_verbosity(old)
            tf_logging.enable_progress_bar()

        restore.append(undo_transformers)
    except Exception:  # pragma: no cover - optional
        pass
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        if not are_progress_bars_disabled():
            disable_progress_bars()
            restore.append(enable_progress_bars)
    except Exception:  # pragma: no cover - optional
        pass
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


@contextlib.contextmanager
def offline_hub() -> Iterator[None]:
    """Forbid Hugging Face hub traffic while loading a model that must already be on disk.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, so both the
    variable and the imported constant are set, and restored afterwards so a
    later load of a hub model by name behaves as the user configured.
    """
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub_constants: Any   # the module (its constants are set and restored below), or None without it
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:  # pragma: no cover - installed with sentence-transformers
        hub_constants = None
    old_const = getattr(hub_constants, "HF_HUB_OFFLINE", None)
    if hub_constants is not None:
        hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if hub_constants is not None:
            hub_constants.HF_HUB_OFFLINE = old_const


def _looks_like_path(spec: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else is meant as a directory."""
    return spec.startswith((".", "/", "~")) or "\\" in spec or spec.count("/") > 1


def _hub_snapshot_dir(repo_id: str, revision: str | None) -> Path | None:
    """The local snapshot directory of a hub model if it is already cached, else None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in ("modules.json", "config.json"):
        hit = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def quantize_linear_int8(module: Any) -> Any:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised per batch).

    torch's eager ``quantize_dynamic`` is offline, needs no calibration data and
    roughly doubles CPU throughput of small BERT-style encoders; torch marks it
    as moving to torchao, so its deprecation warning is silenced here.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


#: Prompts per forward pass (why 16: see :mod:`preroll.defaults`).
from preroll.defaults import DEFAULT_BATCH_SIZE  # noqa: E402


class SentenceEncoder(Encoder):
    """A sentence-transformers model, by hub name or local path, run on CPU.

    Parameters
    ----------
    model:
        Hub model id (``"Qwen/Qwen3-Embedding-0.6B"``) or a local directory.
    max_length:
        Tokens kept per prompt; ``None`` keeps the model's own limit. Shorter
        is faster (attention and padding shrink) at some accuracy cost.
    quantize:
        Dynamic int8 quantisation of the linear layers (CPU speed-up).
    batch_size:
        Prompts per forward pass (``DEFAULT_BATCH_SIZE``).
    num_threads:
        ``torch.set_num_threads`` before encoding; ``None`` leaves torch's default.
    prompt_name:
        A named instruction prompt of the model (e.g. ``"query"`` for Qwen3-Embedding).
    revision:
        Hub revision (branch, tag or commit) for hub names.
    label:
        Short prefix for ``name``; defaults to the model's directory or repo name.
    """

    def __init__(self, model: str | Path, *, max_length: int | None = None, quantize: bool = False,
                 batch_size: int = DEFAULT_BATCH_SIZE, num_threads: int | None = None, prompt_name: str | None = None,
                 revision: str | None = None, label: str | None = None) -> None:
        self.model = model
        self.max_length = max_length
        self.quantize = quantize
        self.batch_size = batch_size
        self.num_threads = num_threads
        self.prompt_name = prompt_name
        self.revision = revision
        self.label = label

    # -- identity -----------------------------------------------------------------

    def _validate(self) -> None:
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ValueError(f"max_length must be a positive integer or None (got {self.max_length!r})")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (got {self.batch_size!r})")
        if self.num_threads is not None and (not isinstance(self.num_threads, int) or self.num_threads < 1):
            raise ValueError(f"num_threads must be a positive integer or None (got {self.num_threads!r})")

    def _local_dir(self) -> Path | None:
        """The model's directory if ``model`` names one on disk; refuses a path that does not exist."""
        spec = str(self.model)
        path = Path(spec).expanduser()
        if path.is_dir():
            return path.resolve()
        if path.exists():
            raise EncoderLoadError(f"encoder path {spec!r} is a file; give the model's directory")
        if isinstance(self.model, Path) or _looks_like_path(spec):
            raise EncoderLoadError(f"encoder path {spec!r} does not exist")
        return None

    def _weights_id(self) -> str:
        local = self._local_dir()
        if local is not None:
            return f"{self.label or local.name}@{directory_fingerprint(local)[:16]}"
        snapshot = _hub_snapshot_dir(str(self.model), self.revision)
        if snapshot is None:
            # Not cached yet: loading downloads it (or explains why it cannot).
            self._load()
            snapshot = _hub_snapshot_dir(str(self.model), self.revision)
        label = self.label or str(self.model).replace("/", "--")
        commit = snapshot.name if snapshot is not None else (self.revision or "unknown")
        return f"{label}@{commit[:16]}"

    def _settings_suffix(self) -> str:
        parts = [f"len{self.max_length if self.max_length is not None else 'default'}"]
        if self.quantize:
            parts.append("q8")
        if self.prompt_name:
            parts.append(f"prompt-{self.prompt_name}")
        return "-".join(parts)

    @property
    def name(self) -> str:  # type: ignore[override]
        """``st:<model>@<weights hash or commit>-len<max_length>[-q8][-prompt-<name>]``."""
        if getattr(self, "_name", None) is None:
            self._validate()
            self._name = f"st:{self._weights_id()}-{self._settings_suffix()}"
        return self._name

    # -- loading ------------------------------------------------------------------

    def _load_kwargs(self, local: Path | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"device": "cpu"}
        if local is not None:
            kwargs["local_files_only"] = True
        if self.revision is not None:
            kwargs["revision"] = self.revision
        return kwargs

    def _load(self) -> Any:
        loaded = getattr(self, "_st_model", None)
        if loaded is not None:
            return loaded
        self._validate()
        local = self._local_dir()
        spec = str(local) if local is not None else str(self.model)
        # Before importing torch: a mistyped name fails in seconds, not after a minute of imports and retries.
        context: contextlib.AbstractContextManager[None]
        if local is None and _hub_cached(spec):
            context = offline_hub()  # already downloaded: no hub round trips
        elif local is None:
            _check_hub_name(spec)  # one short request instead of a minute of retries for a typo
            context = contextlib.nullcontext()
        else:
            context = offline_hub()
        from preroll._optional import require

        SentenceTransformer = require("sentence_transformers", what=NEURAL_WHAT).SentenceTransformer
        try:
            with context, quiet_libraries(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                st_model = SentenceTransformer(spec, **self._load_kwargs(local))
        except EncoderLoadError:
            raise
        except OSError as exc:
            raise EncoderLoadError(self._load_failure_message(spec, local, exc)) from exc
        except Exception as exc:  # library errors differ across versions; keep the cause chained
            raise EncoderLoadError(f"could not load encoder model {spec!r}: {type(exc).__name__}: {exc}") from exc
        if self.max_length is not None:
            st_model.max_seq_length = self.max_length
        if self.quantize:
            quantize_linear_int8(st_model)
        st_model.eval()
        self._st_model = st_model
        return st_model

    @staticmethod
    def _load_failure_message(spec: str, local: Path | None, exc: Exception) -> str:
        if local is not None:
            return f"could not load the model in {spec!r}: {exc}"
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
        reason = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub is unreachable or has no such model"
        return (
            f"encoder model {spec!r} is not in the local Hugging Face cache and {reason}. "
            f"Download it where the hub is reachable (`huggingface-cli download {spec}`), "
            f"or pass the path of a local model directory. Cause: {str(exc).splitlines()[0]}"
        )

    # -- encoding -----------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector size (loads the model)."""
        st_model = self._load()
        getter = getattr(st_model, "get_embedding_dimension", None) or st_model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, texts: Sequence[str], *, show_progress: bool = False) -> np.ndarray:
        texts = check_texts(texts)
        st_model = self._load()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        if self.num_threads is not None:
            torch.set_num_threads(self.num_threads)
        kwargs: dict[str, Any] = {}
        if self.prompt_name:
            kwargs["prompt_name"] = self.prompt_name
        with torch.inference_mode():
            if len(texts) <= self.batch_size and not show_progress:
                vectors = self._encode_one_batch(st_model, texts)
            elif not show_progress:
                vectors = st_model.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False,
                                          convert_to_numpy=True, normalize_embeddings=True, **kwargs)
            else:
                vectors = self._encode_with_progress(st_model, list(texts), kwargs)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_with_progress(self, st_model: Any, texts: list[str], kwargs: dict) -> np.ndarray:
        """Encode in chunks under one rich progress bar with an ETA (on stderr), not the library's bar."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        chunk = self.batch_size * 8
        parts = []
        with Progress(TextColumn("embedding prompts"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("embed", total=len(texts))
            for start in range(0, len(texts), chunk):
                part = texts[start:start + chunk]
                parts.append(st_model.encode(part, batch_size=self.batch_size, show_progress_bar=False,
                                             convert_to_numpy=True, normalize_embeddings=True, **kwargs))
                bar.advance(task, len(part))
        return np.concatenate(parts)

    def _encode_one_batch(self, st_model: Any, texts: list[str]) -> np.ndarray:
        """One forward pass through the model's own modules, without ``SentenceTransformer.encode``'s bookkeeping.

        Why: on the routing path a request brings one prompt, and ``encode``
        spends about 5 ms per call outside the model (switching every module
        to eval mode, resolving the device, sorting by length) on top of a
        ~10 ms forward pass. The model is loaded on the CPU in eval mode
        once (``_load``), so a single batch needs none of that. Same modules,
        same prompt, same normalisation: the vectors match ``encode``'s (tested).
        """
        import torch

        prompt = st_model.prompts.get(self.prompt_name) if self.prompt_name else None
        if self.prompt_name and prompt is None:
            raise EncoderLoadError(f"model {self.model!r} has no prompt named {self.prompt_name!r}; "
                                   f"it has: {', '.join(sorted(st_model.prompts)) or 'none'}")
        preprocess = getattr(st_model, "preprocess", None)
        if preprocess is not None:
            features = preprocess(texts, prompt=prompt)
        else:  # sentence-transformers < 6 names it tokenize and has no prompt argument
            features = st_model.tokenize([prompt + t for t in texts] if prompt else texts)
        embeddings = st_model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(embeddings.float(), dim=1).numpy()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.model)!r}, max_length={self.max_length}, "
                f"quantize={self.quantize}, batch_size={self.batch_size})")


def check_texts(texts: Sequence[str]) -> list[str]:
    """Refuse anything but a sequence of strings, naming the first bad item."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a sequence of strings, not a single string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a str (got {type(text).__name__})")
    return out

