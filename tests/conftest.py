"""Test fixtures: a fit-free hashing encoder and the data sets bundled in the package (never skipped)."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from preroll.data.paths import dapo_dir, llmrouter_dir, mmlu_dir
from preroll.encoders.base import Encoder

_WORD = re.compile(r"\w\w+")


class HashingEncoder(Encoder):
    """Bag of hashed words (crc32, so stable across processes): instant and fit-free, for tests of
    everything but the encoder. ``dim`` sets the width."""

    def __init__(self, dim: int = 128):
        self.dim = dim
        self.name = f"test-hashing-{dim}"

    def fit(self, texts):
        return self

    def encode(self, texts, *, show_progress=False):
        X = np.zeros((len(texts), self.dim), np.float32)
        for i, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                X[i, zlib.crc32(word.encode()) % self.dim] += 1.0
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)


def _bundled(path):
    """A bundled data set's folder: it ships inside the package, so a missing one is a broken checkout
    or install (an error, not a skip)."""
    if not path.is_dir():
        raise FileNotFoundError(f"bundled data set missing: {path} (a broken checkout or install; "
                                "PREROLL_DATA, when set, must hold dapo-math-v0, routellm-mmlu and llmrouter-9)")
    return path


@pytest.fixture(scope="session")
def dapo():
    return _bundled(dapo_dir())


@pytest.fixture(scope="session")
def mmlu():
    return _bundled(mmlu_dir())


@pytest.fixture(scope="session")
def llmrouter():
    return _bundled(llmrouter_dir())
