"""Defaults the command line shows in ``--help``, in a module with no imports.

Why here: a CLI module that imported the value model (or the encoders
package) for two constants loaded scikit-learn and SciPy before printing its
help. The owning modules re-export these names.

- ``DEFAULT_ENCODER`` / ``DEFAULT_HEAD``: on DAPO-Math cold prompts the logistic head alone ranks
  as well as or better than its ensemble with the kNN head, which wins on MMLU routing (the
  router's ``"auto"``); see README "Measured" and docs/encoders.md.
- ``DEFAULT_BATCH_SIZE``: prompts per forward pass. A batch is padded to its longest prompt, so
  smaller batches waste less compute on padding; 16 was the fastest of 8/16/32 for MiniLM on
  2 CPU cores (docs/encoders.md), and small enough for larger models.
"""

DEFAULT_ENCODER = "minilm+lexical+stats"
DEFAULT_HEAD = "logistic"
DEFAULT_BATCH_SIZE = 16

#: ``preroll score``: rows per output part (the unit of resume) and per model call.
DEFAULT_CHUNK_ROWS = 8_192
DEFAULT_BATCH_ROWS = 8_192
