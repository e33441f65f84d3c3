"""The value model: encoder -> snapshot adapter -> in-context head.

Why the adapter: a policy's success rates shift as it trains (DAPO-Math:
mean rate .37 -> .62 from step 16 to 256) while which prompts are hard
carries over (r ~ 0.85 for the same prompt across steps). So instead of
throwing away older history we keep every (policy, step) snapshot in one
context and hand the head each row's snapshot as its ``group``: the head
learns a per-snapshot offset on top of shared prompt difficulty (see
:mod:`preroll.heads.groups`), and a query is scored for the snapshot it
names (by default the latest step). Measured: pooling snapshots this way
lifts cold-prompt CV AUC (see README).

Direct evidence: when a query's exact text is already in the history, its
observed successes/failures update the semantic Beta belief, discounted by
``evidence_decay`` per step of distance (other policies' outcomes are not
used as direct evidence).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from preroll.data.records import Outcome, OutcomeTable
from preroll.encoders import get_encoder
from preroll.encoders.base import Encoder
from preroll.heads import make_head
from preroll.beliefs import BetaPrediction

_UNKNOWN = "<none>"

#: The value model's default features and head (README, "Measured", and docs/encoders.md):
#: on DAPO-Math cold prompts the logistic head alone ranks as well as or better than its ensemble
#: with the kNN head, which wins on MMLU routing (the router's ``"auto"``).
DEFAULT_ENCODER = "minilm+lexical+stats"
DEFAULT_HEAD = "logistic"


class ValueModel:
    """Predict P(success) of a policy on unseen prompts from its history.

    Parameters
    ----------
    encoder: any spec of :func:`preroll.encoders.get_encoder` (default
        ``"minilm+lexical+stats"``: the bundled MiniLM beside TF-IDF n-grams and
        surface statistics), or an :class:`Encoder` instance.
    head: ``"logistic"`` (default), ``"auto"`` (logistic + kNN ensemble),
        ``"knn"``, ``"gp"``, ``"tabpfn"``, or a head instance.
    evidence_decay: weight of a same-prompt outcome per step of distance.
    """

    def __init__(self, encoder: str | Encoder = DEFAULT_ENCODER, head=DEFAULT_HEAD, *,
                 evidence_decay: float = 0.5, cache_dir=None, show_progress: bool = False):
        self.encoder = encoder
        self.head = head
        self.evidence_decay = evidence_decay
        self.cache_dir = cache_dir
        self.show_progress = show_progress

    # -- fitting ---------------------------------------------------------
    def fit(self, records: Iterable[Outcome] | OutcomeTable) -> "ValueModel":
        table = records if isinstance(records, OutcomeTable) else OutcomeTable.from_records(records)
        if len(table) == 0:
            raise ValueError("cannot fit a value model on an empty history")
        self.encoder_ = get_encoder(self.encoder, cache_dir=self.cache_dir)  # an Encoder passes through
        self.encoder_.fit(table.prompts)
        self.snapshots_ = sorted({self._snap(p, s) for p, s in zip(table.policies, table.steps)},
                                 key=lambda t: (t[0], -np.inf if np.isnan(t[1]) else t[1]))
        self.snapshot_index_ = {s: i for i, s in enumerate(self.snapshots_)}
        X = self.encoder_.encode(table.prompts, show_progress=self.show_progress)
        groups = np.array([self.snapshot_index_[self._snap(p, s)] for p, s in zip(table.policies, table.steps)])
        self.head_ = make_head(self.head).fit(X, table.successes, table.attempts, groups=groups)
        self.table_ = table
        self._text_index = {}
        for i, text in enumerate(table.prompts):
            self._text_index.setdefault(text, []).append(i)
        return self

    @staticmethod
    def _snap(policy, step) -> tuple[str, float]:
        return (policy if policy is not None else _UNKNOWN, float(step) if step is not None else np.nan)

    def _resolve_snapshot(self, policy, step) -> int:
        policies = sorted({p for p, _ in self.snapshots_})
        if policy is None:
            if len(policies) > 1:
                raise ValueError(f"the history holds several policies ({', '.join(policies)}); pass policy=")
            policy = policies[0]
        cands = [s for s in self.snapshots_ if s[0] == policy]
        if not cands:
            raise ValueError(f"no history for policy {policy!r}; known: {', '.join(policies)}")
        steps = np.array([s[1] for s in cands])
        if step is None or np.all(np.isnan(steps)):
            pick = cands[int(np.nanargmax(steps))] if not np.all(np.isnan(steps)) else cands[0]
        else:
            # Nearest known step: a future step is best described by the latest one.
            pick = cands[int(np.nanargmin(np.abs(steps - float(step))))]
        return self.snapshot_index_[pick]

    # -- prediction ------------------------------------------------------
    def predict(self, prompts: Sequence[str], *, step: int | None = None, policy: str | None = None,
                use_direct_evidence: bool = True) -> BetaPrediction:
        """Beta belief over each prompt's success rate for ``(policy, step)``."""
        if not hasattr(self, "head_"):
            raise RuntimeError("ValueModel is not fitted: call fit(records) first")
        if isinstance(prompts, str):
            raise TypeError("predict takes a sequence of prompts, not one string")
        prompts = list(prompts)
        if not prompts:
            return BetaPrediction(np.empty(0), np.empty(0))
        snap = self._resolve_snapshot(policy, step)
        X = self.encoder_.encode(prompts, show_progress=self.show_progress)
        pred = self.head_.predict(X, groups=np.full(len(prompts), snap))
        if use_direct_evidence and self.evidence_decay > 0:
            pred = self._add_direct_evidence(pred, prompts, self.snapshots_[snap])
        return pred

    def _add_direct_evidence(self, pred: BetaPrediction, prompts, snapshot) -> BetaPrediction:
        policy, step = snapshot
        t = self.table_
        steps_sorted = sorted({s for p, s in self.snapshots_ if p == policy and not np.isnan(s)})
        rank = {s: i for i, s in enumerate(steps_sorted)}
        succ = np.zeros(len(prompts))
        fail = np.zeros(len(prompts))
        for q, text in enumerate(prompts):
            for i in self._text_index.get(text, ()):
                p_i = t.policies[i] if t.policies[i] is not None else _UNKNOWN
                if p_i != policy:
                    continue
                dist = 0 if np.isnan(step) or np.isnan(t.steps[i]) else abs(rank[t.steps[i]] - rank[step])
                w = self.evidence_decay ** dist
                succ[q] += w * t.successes[i]
                fail[q] += w * (t.attempts[i] - t.successes[i])
        return pred.update(succ, fail)
