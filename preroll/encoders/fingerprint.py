"""Content hashes that pin an encoder's identity (and so its cache keys).

Hashing model weights reads every byte (about 0.2 s for MiniLM's 90 MB, a few
seconds for a 0.6B-parameter model), so results are memoised per process,
keyed by (path, size, mtime): a file rewritten in place gets hashed again.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

#: Files that do not change a model's vectors and so stay out of its fingerprint.
_IGNORED_NAMES = frozenset({"README.md", ".gitattributes", ".gitignore"})
_CHUNK = 1 << 20


@lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's content, computed once per process per (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    return _sha256_of(str(path), st.st_size, st.st_mtime_ns)


def directory_fingerprint(directory: str | Path) -> str:
    """sha256 over the relative names and contents of the files of a model directory.

    Weights *and* configs are covered: a changed pooling or tokenizer config
    changes the vectors as surely as changed weights do.
    """
    directory = Path(directory).resolve()
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name in _IGNORED_NAMES or name.startswith("."):
                continue
            path = Path(root) / name
            digest.update(str(path.relative_to(directory)).encode("utf-8") + b"\0")
            digest.update(file_sha256(path).encode("ascii"))
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    """The cache key of a prompt: sha256 of its UTF-8 bytes, exactly as given (no normalisation)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
