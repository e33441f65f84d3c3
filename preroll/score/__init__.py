"""Score a large prompt pool with a saved value model, filter it, report on it (``preroll score``).

Library layer under the CLI: :func:`score_dataset` streams a JSONL/Parquet
file or a directory of them through a model saved by
:func:`preroll.model.persist.save_model`, writing one part per input chunk and
a manifest that makes the run resumable; :func:`parse_keep` is the safe
``--keep`` filter language. Ray Data is imported only for ``ray=True``.
"""

from preroll.score.keep import PREDICTION_COLUMNS, KeepExpressionError, KeepFilter, parse_keep
from preroll.score.runner import ScoreOptions, ScoreSummary, score_dataset
from preroll.score.state import OutputDirError

__all__ = ["score_dataset", "ScoreOptions", "ScoreSummary", "parse_keep", "KeepFilter", "KeepExpressionError",
           "OutputDirError", "PREDICTION_COLUMNS"]
