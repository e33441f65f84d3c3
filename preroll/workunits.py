"""Work units for progress bars: roughly one second of one quiet CPU core each (one thread).

Why: a long command (``preroll eval``, ``fit``, ``bench schedule``) runs unlike stages one after
another: importing torch and loading MiniLM, embedding the prompts the cache lacks, fitting the
lexical and stats views, fitting the value model fold after fold. Counting each stage in these
units lets one bar move evenly through all of them and give an ETA from the first second (the
prior pace: one second per unit), which then follows the observed pace (``preroll.cli.progress``).
Measured as CPU time per stage on the 2-core development machine; only the prior depends on them.
This module imports nothing, so any layer may use it.
"""

UNITS_LOAD_MODEL = 8.0            # importing torch and sentence-transformers, loading MiniLM
UNITS_PER_EMBEDDED_PROMPT = 0.006  # MiniLM (96 tokens, int8), per prompt not yet in the cache
UNITS_PER_VIEW_TEXT = 0.0035      # fitting the lexical and stats views, per distinct prompt
UNITS_PER_FIT_ROW = 0.0009        # one value-model fit (logistic head with its inner CV), per history row
