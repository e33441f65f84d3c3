"""Where the shared development data lives (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path:
    """``$PREROLL_DATA`` if set, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("PREROLL_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def dapo_dir() -> Path:
    return shared_data_dir() / "dapo-math-v0"


def mmlu_dir() -> Path:
    return shared_data_dir() / "routellm-mmlu"
