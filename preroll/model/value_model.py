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

import warnings
from typing import Iterable, Sequence

import numpy as np

from preroll.data.records import Outcome, OutcomeTable
from preroll.data.snapshot import Snapshot
from preroll.errors import InputError
from preroll.encoders import fresh_views, get_encoder
from preroll.encoders.base import Encoder
from preroll.beliefs import BetaPrediction
from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD
from preroll.validation import check_fitted


#: Least concentration (alpha + beta) of a belief: Beta(1, 1) at a base rate of 0.5.
_MIN_CONCENTRATION = 2.0
#: History rows used to measure how far apart the history's prompts lie.
_REACH_SAMPLE = 4096


def _nearest_distances(Q: np.ndarray, R: np.ndarray, *, exclude_self: bool = False, chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each row of ``Q`` to its nearest row of ``R``.

    One ``chunk x len(R)`` product per chunk, in float32: this runs on every
    prediction against up to ``_REACH_SAMPLE`` history rows, and is most of the
    time a scorer spends once embeddings come from the cache. float32 halves it;
    the distances only widen beliefs, so their ~1e-6 relative error is immaterial.
    """
    R32 = np.ascontiguousarray(R, dtype=np.float32)
    r2 = np.einsum("ij,ij->i", R32, R32)
    out = np.empty(len(Q))
    for start in range(0, len(Q), chunk):
        q = np.ascontiguousarray(Q[start:start + chunk], dtype=np.float32)
        d2 = np.einsum("ij,ij->i", q, q)[:, None] + r2[None, :] - 2.0 * (q @ R32.T)
        if exclude_self:
            idx = np.arange(start, start + len(q))
            d2[np.arange(len(q)), idx] = np.inf
        out[start:start + len(q)] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


class SnapshotWarning(UserWarning):
    """A query scored for another (policy, step) than the one asked for."""



class ValueModel:
    """Predict P(success) of a policy on unseen prompts from its history.

    Parameters
    ----------
    encoder: any spec of :func:`preroll.encoders.get_encoder` (default
        ``"minilm+lexical+stats"``: the bundled MiniLM beside TF-IDF n-grams and
        surface statistics), or an :class:`Encoder` instance.
    head: ``"logistic"`` (default), ``"auto"`` (the recommended head, :data:`preroll.defaults.AUTO_HEAD`),
        ``"ensemble"`` (logistic + kNN), ``"knn"``, ``"gp"``, ``"tabpfn"``, or a head instance.
    evidence_decay: weight of a same-prompt outcome per step of distance.
    fit_encoder: ``True`` (default) fits the encoder's views (lexical, stats) on the history's prompts.
        ``False`` uses an already fitted encoder as it is: for evaluations that fit the label-free text
        views once on a whole prompt pool instead of once per fold (the quick ``preroll eval``).
    """

    def __init__(self, encoder: str | Encoder = DEFAULT_ENCODER, head=DEFAULT_HEAD, *,
                 evidence_decay: float = 0.5, cache_dir=None, show_progress: bool = False, fit_encoder: bool = True):
        self.encoder = encoder
        self.head = head
        self.evidence_decay = evidence_decay
        self.cache_dir = cache_dir
        self.show_progress = show_progress
        self.fit_encoder = fit_encoder

    # -- fitting ---------------------------------------------------------
    def fit(self, records: Iterable[Outcome] | OutcomeTable) -> "ValueModel":
        table = records if isinstance(records, OutcomeTable) else OutcomeTable.from_records(records)
        if len(table) == 0:
            raise InputError("cannot fit a value model on an empty history")
        # fresh_views: an Encoder instance passes through with new copies of its fitted views (lexical,
        # stats), so fitting this model never refits an encoder the caller (or another model) holds.
        if self.fit_encoder:
            self.encoder_ = fresh_views(get_encoder(self.encoder, cache_dir=self.cache_dir))
            self.encoder_.fit(table.prompts)
        else:
            self.encoder_ = get_encoder(self.encoder, cache_dir=self.cache_dir)
        row_snaps = table.snapshots
        self.snapshots_ = sorted(set(row_snaps), key=lambda s: s.sort_key)
        self.snapshot_index_ = {s: i for i, s in enumerate(self.snapshots_)}
        X = self.encoder_.encode(table.prompts, show_progress=self.show_progress)
        groups = np.array([self.snapshot_index_[s] for s in row_snaps])
        from preroll.heads import make_head  # scikit-learn: ~1 s to import, paid at fit, not at import

        self.head_ = make_head(self.head).fit(X, table.successes, table.attempts, groups=groups)
        self._fit_humility(np.asarray(X, dtype=np.float32), table)
        self.table_ = table
        self._text_index: dict[str, list[int]] = {}
        for i, text in enumerate(table.prompts):
            self._text_index.setdefault(text, []).append(i)
        return self

    # -- knowing what the history does not say ---------------------------
    def _fit_humility(self, X: np.ndarray, table: OutcomeTable) -> None:
        """What :meth:`_temper` needs: what the history supports, and how far apart its prompts lie.

        ``evidence_`` (:class:`~preroll.heads.humble.Evidence`): the prior for a prompt the history
        says little about, how much the head's own prediction is worth, and the concentration cap.
        ``reach_`` is the 90th percentile of each history prompt's distance to its nearest
        other prompt (on up to ``_REACH_SAMPLE`` rows): a query farther than that from every
        history prompt is outside what the history covers.
        """
        from preroll.heads.humble import Evidence  # with the heads: loaded at fit, not at import

        self.evidence_ = Evidence.of(table.successes, table.attempts, table.prompts)
        self.base_rate_ = float(table.successes.sum() / table.attempts.sum())
        self.max_concentration_ = float(max(len(set(table.prompts)), _MIN_CONCENTRATION))
        rng = np.random.default_rng(0)
        ref = X if len(X) <= _REACH_SAMPLE else X[rng.choice(len(X), _REACH_SAMPLE, replace=False)]
        self.reference_ = ref
        if len(ref) < 2:
            self.reach_ = 0.0
            return
        d = _nearest_distances(ref, ref, exclude_self=True)
        d = d[np.isfinite(d)]
        self.reach_ = float(np.quantile(d, 0.9)) if len(d) else 0.0

    def _temper(self, pred: BetaPrediction, X: np.ndarray) -> BetaPrediction:
        """Widen a belief that the history cannot support (:func:`~preroll.heads.humble.humble`).

        A head fitted on a few rows, on rows that all agree, or on near-identical prompts can
        report p=1.0 with a tiny spread for an unrelated query. Three limits:

        - evidence: the head's mean is blended with the history's prior by its credibility
          (0 when no outcome varies, near 1 from a hundred distinct prompts on), and the
          concentration (alpha + beta, a pseudo-count) never exceeds the number of distinct
          prompts in the history; two rows cannot give the certainty of two thousand;
        - distance: a query farther than ``reach_`` from every history prompt has that weight
          and its concentration cut further by ``(reach_ / distance)^2``, down to a near-uniform
          belief at the prior for prompts unlike any seen.

        Direct evidence (the query's own outcomes) is added afterwards, so only evidence
        shrinks the spread again.
        """
        if len(X) == 0:
            return pred
        d = _nearest_distances(X, self.reference_)
        reach = max(self.reach_, 1e-6)
        w = np.where(d <= reach, 1.0, (reach / np.maximum(d, 1e-12)) ** 2)
        evidence = getattr(self, "evidence_", None)
        if evidence is None:  # a model saved before evidence was kept: its base rate and size only
            mean = w * pred.p_success + (1 - w) * self.base_rate_
            conc = np.maximum(w * np.minimum(pred.concentration, self.max_concentration_), _MIN_CONCENTRATION)
            return BetaPrediction.from_mean_concentration(np.clip(mean, 1e-4, 1 - 1e-4), conc)
        from preroll.heads.humble import humble

        return humble(pred, evidence, w)

    def resolve_snapshot(self, policy: str | None = None, step: int | None = None) -> Snapshot:
        """The history's snapshot a query for ``(policy, step)`` is scored as.

        No policy: the history's only policy (several: an error naming them). No step: the
        policy's latest. A step the history does not hold: the nearest one, with a
        :class:`SnapshotWarning` naming it, because a silent substitution hides that the
        belief describes another point of training.
        """
        check_fitted(self, "head_")
        policies = sorted({s.policy for s in self.snapshots_}, key=lambda p: (p is not None, p or ""))
        if policy is None:
            if len(policies) > 1:
                named = ", ".join("(unnamed)" if p is None else p for p in policies)
                raise InputError(f"the history holds several policies ({named}); pass policy=", field="policy")
            policy = policies[0]
        cands = [s for s in self.snapshots_ if s.policy == policy]
        if not cands:
            known = ", ".join(p for p in policies if p is not None) or "none named"
            raise InputError(f"no history for policy {policy!r}; known: {known}", field="policy")
        stepped = {s: s.step for s in cands if s.step is not None}   # the snapshots that name a step, and it
        if step is None:
            return max(stepped, key=stepped.__getitem__) if stepped else cands[0]
        if not stepped:
            warnings.warn(f"the history names no steps; step {step} is scored as the whole history of "
                          f"{cands[0].name}", SnapshotWarning, stacklevel=3)
            return cands[0]
        pick = min(stepped, key=lambda s: (abs(stepped[s] - step), -stepped[s]))
        if pick.step != step:
            known = ", ".join(str(s.step) for s in stepped)
            warnings.warn(f"step {step} is not in the history of {pick.policy or 'the policy'} (steps {known}); "
                          f"scoring for the nearest, step {pick.step}", SnapshotWarning, stacklevel=3)
        return pick

    # -- prediction ------------------------------------------------------
    def predict(self, prompts: Sequence[str], *, step: int | None = None, policy: str | None = None,
                use_direct_evidence: bool = True) -> BetaPrediction:
        """Beta belief over each prompt's success rate for ``(policy, step)``."""
        check_fitted(self, "head_")
        if isinstance(prompts, str):
            raise TypeError("predict takes a sequence of prompts, not one string")
        prompts = list(prompts)
        if not prompts:
            return BetaPrediction(np.empty(0), np.empty(0))
        snap = self.resolve_snapshot(policy, step)
        X = self.encoder_.encode(prompts, show_progress=self.show_progress)
        pred = self.head_.predict(X, groups=np.full(len(prompts), self.snapshot_index_[snap]))
        pred = self._temper(pred, np.asarray(X, dtype=np.float32))
        if use_direct_evidence and self.evidence_decay > 0:
            pred = self._add_direct_evidence(pred, prompts, snap)
        return pred

    def _add_direct_evidence(self, pred: BetaPrediction, prompts, snapshot: Snapshot) -> BetaPrediction:
        t = self.table_
        steps_sorted = sorted({s.step for s in self.snapshots_ if s.policy == snapshot.policy and s.step is not None})
        rank = {s: i for i, s in enumerate(steps_sorted)}
        succ = np.zeros(len(prompts))
        fail = np.zeros(len(prompts))
        for q, text in enumerate(prompts):
            for i in self._text_index.get(text, ()):
                if t.policies[i] != snapshot.policy:
                    continue
                step_i = t.steps[i]
                dist = 0 if snapshot.step is None or step_i is None else abs(rank[step_i] - rank[snapshot.step])
                w = self.evidence_decay ** dist
                succ[q] += w * t.successes[i]
                fail[q] += w * (t.attempts[i] - t.successes[i])
        return pred.update(succ, fail)
