"""Warm starts of the prompt book: outcomes observed before the run, as a prior over the prompts they cover.

Why: a real run goes through its data one to three times, and in the first
pass a cold book knows nothing of a prompt until it rolls it out (epoch 1 is
about uniform in the grounded replay). Knowledge from before the run often
exists: a previous run's book, the same base policy's probe or earlier-step
outcomes, other policies' outcomes on the same prompts (public RL datasets
ship pass rates), or a saved value model.

What carries over is a prompt's *standing* within its source: each source
(a policy at a step, a book's step, a value model) is reduced to logit rates
relative to that source's own pooled level, since another policy, or the same
one earlier in training, is stronger or weaker overall. The book moves that
standing to its current level and mixes it into the prior mean with a weight
per warm attempt that it fits on its own first observations (see
:meth:`preroll.online.PromptBook.warm_start`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preroll.online.errors import OnlineInputError

#: Rates are kept in [this, 1 - this] before a logit (a 0/10 prompt is hard, not infinitely so).
_CLIP = 0.02
#: Warm attempts one value-model prediction counts as (the fitted weight scales it).
VALUE_MODEL_ATTEMPTS = 4.0


@dataclass(frozen=True)
class WarmEvidence:
    """Outcomes from before the run: one row per (prompt id, source) with successes of attempts."""

    ids: Sequence[str]
    successes: np.ndarray
    attempts: np.ndarray
    source: Sequence[str]          # e.g. "Qwen3-4B@16", "book step 12", "value model"

    def __post_init__(self) -> None:
        n = len(self.ids)
        s, a = np.asarray(self.successes, float), np.asarray(self.attempts, float)
        if len(s) != n or len(a) != n or len(self.source) != n:
            raise OnlineInputError(f"ids, successes, attempts and source must have one entry per row ({n})",
                                   field="warm_start")
        bad = ~np.isfinite(s) | ~np.isfinite(a) | (a <= 0) | (s < 0) | (s > a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise OnlineInputError(f"row {i}: successes {s[i]!r} of attempts {a[i]!r} (need 0 <= successes <= "
                                   "attempts, attempts > 0)", field="warm_start", index=i)


@dataclass(frozen=True)
class WarmReport:
    """What a warm start matched: rows read, rows on the book's prompts, prompts covered, rows per source."""

    rows: int
    rows_matched: int
    prompts_covered: int
    sources: dict[str, int] = field(default_factory=dict)


def _logit(p):
    return np.log(p) - np.log1p(-p)


def apply_evidence(evidence: WarmEvidence, ids: Sequence[str]) -> tuple[WarmReport, np.ndarray, np.ndarray, float]:
    """Per book prompt: warm attempts and logit standing (attempt-weighted over its rows), and the pooled level."""
    position = {str(k): i for i, k in enumerate(ids)}
    rows = np.array([position.get(str(k), -1) for k in evidence.ids], np.int64)
    s = np.asarray(evidence.successes, float)
    a = np.asarray(evidence.attempts, float)
    src = np.asarray([str(x) for x in evidence.source], dtype=object)
    n = len(ids)
    warm_a, warm_za = np.zeros(n), np.zeros(n)
    levels, weights, per_source = [], [], {}
    for name in sorted(set(src.tolist())):
        m = src == name
        per_source[name] = int(m.sum())
        # The source's level from all its rows (also those on other prompts), its standing on matched ones.
        level = float(_logit(np.clip((s[m].sum() + 0.5) / (a[m].sum() + 1.0), _CLIP, 1 - _CLIP)))
        levels.append(level)
        weights.append(a[m].sum())
        keep = m & (rows >= 0)
        counted = a[keep] > 1   # counts are smoothed; a single fractional attempt is a rate (a pass-rate column)
        rate = np.where(counted, (s[keep] + 0.5) / (a[keep] + 1.0), s[keep] / a[keep])
        z = _logit(np.clip(rate, _CLIP, 1 - _CLIP)) - level
        np.add.at(warm_a, rows[keep], a[keep])
        np.add.at(warm_za, rows[keep], a[keep] * z)
    z = np.where(warm_a > 0, warm_za / np.where(warm_a > 0, warm_a, 1.0), 0.0)
    level = float(np.average(levels, weights=weights)) if levels else 0.0
    report = WarmReport(rows=len(rows), rows_matched=int((rows >= 0).sum()), prompts_covered=int((warm_a > 0).sum()),
                        sources=per_source)
    return report, warm_a, z, level


def read_evidence(source: str | Path, book) -> WarmEvidence:
    """Warm evidence from a file or folder, matched to ``book``'s prompts:

    - a saved book (``.npz`` of :meth:`PromptBook.save`) over the same dataset: its history, one source per step;
    - an outcome history (``.jsonl``/``.csv``/``.parquet`` in the format ``preroll fit`` reads: prompt or id,
      successes and attempts or rewards, optional policy and step): one source per (policy, step); rows are
      matched by id when it is one of the book's ids, else by prompt text;
    - a value model folder (``preroll fit --save``): its predicted success of every prompt, as
      ``VALUE_MODEL_ATTEMPTS`` attempts each.
    """
    path = Path(source)
    if not path.exists():
        raise OnlineInputError(f"{path}: no such file or folder", field="warm_start")
    if path.is_dir():
        return _from_value_model(path, book)
    if path.suffix == ".npz":
        return _from_book(path, book)
    return _from_history(path, book)


def _from_book(path: Path, book) -> WarmEvidence:
    import json

    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["__meta__"]))
            index, step = data["history.index"], data["history.step"]
            s, a = data["history.successes"], data["history.attempts"]
    except (OSError, ValueError, KeyError) as exc:
        raise OnlineInputError(f"{path}: not a readable prompt book file ({exc})", field="warm_start") from None
    if meta.get("ids_sha256") != book._fingerprint():
        raise OnlineInputError(f"{path}: a book over another dataset ({meta.get('n_prompts')} prompts); a previous "
                               "run's book warm-starts a book over the same prompts and ids", field="warm_start")
    ids = np.asarray(book.ids, dtype=object)[index]
    return WarmEvidence(ids=list(ids), successes=s, attempts=a, source=[f"book step {int(t)}" for t in step])


def _from_history(path: Path, book) -> WarmEvidence:
    from preroll.data import load_records

    records = load_records(path)
    known = set(book.ids)
    by_text: dict[str, str] = {}
    for i, text in enumerate(book.prompts):
        by_text.setdefault(text, book.ids[i])
    ids = [r.id if r.id is not None and str(r.id) in known else by_text.get(r.prompt, f"?{k}")
           for k, r in enumerate(records)]
    return WarmEvidence(ids=[str(x) for x in ids], successes=np.array([r.successes for r in records]),
                        attempts=np.array([r.attempts for r in records]),
                        source=[f"{r.policy}@{r.step}" for r in records])


def _from_value_model(path: Path, book) -> WarmEvidence:
    from preroll.model.persist import load_model

    model = load_model(path)
    p = np.clip(np.asarray(model.predict(list(book.prompts)).p_success, float), _CLIP, 1 - _CLIP)
    a = np.full(len(p), VALUE_MODEL_ATTEMPTS)
    return WarmEvidence(ids=list(book.ids), successes=p * a, attempts=a, source=["value model"] * len(p))
