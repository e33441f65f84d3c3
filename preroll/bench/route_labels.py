"""A labelled table split into a router's fit history and the live traffic that follows it.

A deployment rarely starts from an empty history: it starts from labels (every
model's score on some prompts, like LLMRouter's train split), and the traffic
that follows is unlike them. :func:`labelled_split` builds that setting from one
table: with ``source="topics"`` the labels come from three of five lexical
k-means topics, and the traffic is the other two topics (together 25-55% of the
rows, drawn at random) plus the rest of the three; with ``source="random"`` the
labels are a random draw and the traffic has the same mix. A share of the
traffic is held out for a frozen evaluation. Used by ``preroll bench route
--stream --labels N`` and by ``experiments/route_warm_shift.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL_SOURCES = ("topics", "random")


@dataclass(frozen=True)
class LabelledSplit:
    """Row indices of the labelled history, the traffic's stream (in arrival order) and its held-out rows."""

    history: np.ndarray
    stream: np.ndarray
    held: np.ndarray
    new_topics: tuple[int, ...]   # topics absent from the history (none for ``source="random"``)
    new_share: float              # of the traffic's rows, the share from those topics


def labelled_split(prompts: list[str], seed: int, *, history: int = 2500, source: str = "topics", topics: int = 5,
                   holdout: float = 0.2, cache_dir: str | None = None) -> LabelledSplit:
    """Split a table's rows into at most ``history`` labelled rows (and at most three quarters of the rows
    the history may come from), the stream, and ``holdout`` of the traffic held out.

    The split is of prompt texts: rows with the same text share a side, so no held-out or streamed prompt's
    text is among the labels.
    """
    if source not in LABEL_SOURCES:
        raise ValueError(f"unknown label source {source!r}; one of {', '.join(LABEL_SOURCES)}")
    rng = np.random.default_rng(1000 + seed)
    uniq = list(dict.fromkeys(prompts))
    at = {t: i for i, t in enumerate(uniq)}
    group = np.array([at[p] for p in prompts], dtype=int)       # each row's prompt text, numbered
    new: tuple[int, ...] = ()
    is_new = np.zeros(len(uniq), dtype=bool)
    if source == "topics":
        from preroll.bench.route_shift import text_clusters, text_embeddings

        topic = np.asarray(text_clusters(text_embeddings(prompts, "lexical", cache_dir), topics, seed))
        sizes = np.bincount(topic[group], minlength=topics) / len(prompts)
        pairs = [(a, b) for a in range(topics) for b in range(a + 1, topics)]
        fits = [p for p in pairs if 0.25 <= sizes[p[0]] + sizes[p[1]] <= 0.55]
        # A small table may have no such pair: then the pair nearest 40% of the rows.
        pair = fits[rng.integers(len(fits))] if fits else min(pairs, key=lambda p: abs(sizes[p[0]] + sizes[p[1]] - 0.4))
        new, is_new = (int(pair[0]), int(pair[1])), np.isin(topic, pair)
    old = rng.permutation(np.flatnonzero(~is_new))
    hist = old[:min(history, int(0.75 * len(old)))]
    traffic = rng.permutation(np.concatenate([np.flatnonzero(is_new), old[len(hist):]]))
    n_held = int(holdout * len(traffic))
    rows = _rows_of(group)
    stream = rows(traffic[n_held:])
    if len(uniq) < len(prompts):   # repeated texts arrive apart, as they would in traffic
        stream = rng.permutation(stream)
    return LabelledSplit(rows(hist), stream, rows(traffic[:n_held]), new,
                         float(is_new[group[rows(traffic)]].mean()) if len(traffic) else 0.0)


def _rows_of(group: np.ndarray):
    """Rows of a list of prompt numbers, in that order (each prompt's rows together)."""
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(group.max() + 2 if len(group) else 1))

    def rows(ids: np.ndarray) -> np.ndarray:
        parts = [order[starts[i]:starts[i + 1]] for i in ids]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=int)

    return rows
