"""In-context heads: ``fit(X, successes, attempts, groups=None) -> predict(X, groups=None) -> BetaPrediction``.

One set of heads serves the value model and the router: both read a history
of (embedding, graded outcome) rows and need a belief, not only a score.
"""

from __future__ import annotations

from sklearn.base import clone

from preroll.beliefs import BetaPrediction
from preroll.errors import ConfigError
from preroll.heads.ensemble import EnsembleHead
from preroll.heads.gp import GPHead
from preroll.heads.knn import KNNBetaHead
from preroll.heads.logistic import LogisticHead
from preroll.heads.tabpfn import TabPFNHead, TabPFNUnavailable

HEADS = {"ensemble": EnsembleHead, "logistic": LogisticHead, "knn": KNNBetaHead, "gp": GPHead, "tabpfn": TabPFNHead}


def make_head(head="auto"):
    """A fresh head from a name, or an unfitted copy of a head instance.

    ``"auto"`` is the value model's recommended head (``AUTO_HEAD["value_model"]`` in
    :mod:`preroll.defaults`, where every component's ``"auto"`` is defined); the
    logistic + kNN mixture is ``"ensemble"``.
    """
    if isinstance(head, str):
        from preroll.defaults import AUTO_HEAD

        key = AUTO_HEAD["value_model"] if head == "auto" else head
        if key not in HEADS:
            raise ConfigError(f"unknown head {head!r}; choose one of: auto, {', '.join(HEADS)}", field="head")
        return HEADS[key]()
    if hasattr(head, "fit") and hasattr(head, "predict"):
        return clone(head, safe=False)
    raise ConfigError(f"head must be a name or an object with fit(X, successes, attempts) and predict(X); "
                      f"got {head!r}", field="head")


__all__ = ["BetaPrediction", "EnsembleHead", "GPHead", "KNNBetaHead", "LogisticHead", "TabPFNHead",
           "TabPFNUnavailable", "HEADS", "make_head"]
