"""preroll: predict how an LLM policy will do on a prompt before rolling it out."""

from preroll.data import Outcome, RecordError, load_queries, load_records, load_v0
from preroll.beliefs import BetaPrediction

__all__ = ["Outcome", "RecordError", "load_records", "load_queries", "load_v0", "BetaPrediction", "ValueModel"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported lazily: the value model pulls in torch-backed encoders.
    if name == "ValueModel":
        from preroll.model.value_model import ValueModel

        return ValueModel
    raise AttributeError(name)
