"""Shared test fixtures: a fit-free hashing encoder and the shared data, skipped when absent."""

from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

from preroll.data.paths import shared_data_dir
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


@pytest.fixture(scope="session")
def shared_data():
    """The shared data folder; tests that need it skip (not error) on a checkout without it."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root} (set PREROLL_DATA)")
    return root


def _data_subdir(root, name: str, what: str):
    path = root / name
    if not path.is_dir():
        pytest.skip(f"{what} data not found at {path}")
    return path


@pytest.fixture(scope="session")
def dapo(shared_data):
    return _data_subdir(shared_data, "dapo-math-v0", "DAPO-Math")


@pytest.fixture(scope="session")
def mmlu(shared_data):
    return _data_subdir(shared_data, "routellm-mmlu", "MMLU routing")


def pytest_configure(config):
    config.addinivalue_line("markers", "shared_data: needs ../shared/data (skipped when it is absent)")


@pytest.fixture(autouse=True)
def _skip_without_shared_data(request):
    if request.node.get_closest_marker("shared_data") is not None:
        request.getfixturevalue("shared_data")
