"""The value model's defaults, in a module with no imports so the CLI can show them cheaply.

On DAPO-Math cold prompts the logistic head alone ranks as well as or better
than its ensemble with the kNN head, which wins on MMLU routing (the router's
``"auto"``); see README "Measured" and docs/encoders.md.
"""

DEFAULT_ENCODER = "minilm+lexical+stats"
DEFAULT_HEAD = "logistic"
