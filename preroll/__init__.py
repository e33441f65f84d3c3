"""preroll: predict how an LLM policy will do on a prompt before rolling it out.

Names are imported on first use (PEP 562), so ``import preroll`` and
``preroll --help`` do not pay for pydantic, numpy, scikit-learn or torch.
"""

from __future__ import annotations

import importlib

__all__ = ["Outcome", "RecordError", "PrerollError", "Snapshot", "load_records", "load_queries", "load_v0",
           "BetaPrediction", "ValueModel"]
__version__ = "0.1.0"

_LAZY = {
    "Outcome": "preroll.data", "RecordError": "preroll.data", "Snapshot": "preroll.data",
    "load_records": "preroll.data", "load_queries": "preroll.data", "load_v0": "preroll.data",
    "BetaPrediction": "preroll.beliefs", "ValueModel": "preroll.model.value_model",
    "PrerollError": "preroll.errors",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'preroll' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
