"""Where the bundled data sets live: inside the installed package, so a bare clone or a
``pip install preroll`` runs ``preroll eval``, the tests and the benchmarks with nothing beside it.

The sets are copied byte for byte from their public releases, each with its LICENSE
(see NOTICE at the repository root):

- ``dapo-math-v0``: per-prompt GRPO outcomes of two policies on DAPO-Math (V_0 release, Apache-2.0);
- ``routellm-mmlu``: per-prompt correctness of two LLMs on MMLU (RouteLLM, Apache-2.0);
- ``llmrouter-9``: per-prompt scores of nine priced open LLMs (LLMRouter, MIT).

``$PREROLL_DATA`` overrides the root (a folder holding the same set names), e.g. to try
another copy; without it nothing outside the package is consulted.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The package folder holding the bundled sets (package data, installed with preroll).
BUNDLED_DATA = Path(__file__).resolve().parents[1] / "datasets"


def data_root() -> Path:
    """``$PREROLL_DATA`` if set, else the data sets bundled inside the package."""
    env = os.environ.get("PREROLL_DATA")
    if env:
        return Path(env)
    return BUNDLED_DATA


def dapo_dir() -> Path:
    """DAPO-Math V_0 histories: ``context.jsonl``, ``queries.jsonl``, ``prompts.json``."""
    return data_root() / "dapo-math-v0"


def mmlu_dir() -> Path:
    """RouteLLM's MMLU pair: ``responses/mmlu_<subject>.csv``, ``contaminated_prompts.jsonl``."""
    return data_root() / "routellm-mmlu"


def llmrouter_dir() -> Path:
    """LLMRouter's nine models: ``train.jsonl``, ``models.json``."""
    return data_root() / "llmrouter-9"


#: The name before the data moved into the package (it lived in a ``shared/`` folder beside the
#: checkout); kept so callers written against it keep working.
shared_data_dir = data_root
