"""In-context heads: ``fit(X, successes, attempts) -> predict(X) -> BetaPrediction``."""

from preroll.heads.base import BetaPrediction
from preroll.heads.gp import GPHead
from preroll.heads.knn import KNNBetaHead
from preroll.heads.logistic import LogisticHead
from preroll.heads.tabpfn import TabPFNHead, TabPFNUnavailable

HEADS = {"logistic": LogisticHead, "knn": KNNBetaHead, "gp": GPHead, "tabpfn": TabPFNHead}


def make_head(name: str):
    """Build a head by name (``"auto"`` is the logistic head: best on our CV)."""
    key = "logistic" if name == "auto" else name
    if key not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of: auto, {', '.join(HEADS)}")
    return HEADS[key]()


__all__ = ["BetaPrediction", "GPHead", "KNNBetaHead", "LogisticHead", "TabPFNHead", "TabPFNUnavailable",
           "HEADS", "make_head"]
