"""Prompt-disjoint cross-validated predictions: the honest way to score a value model.

A fold's prompts are removed from the *whole* history (every step), so the
score measures cold prompts: no direct evidence leaks in.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.model_selection import GroupKFold

from preroll.data.records import Outcome, OutcomeTable
from preroll.data.snapshot import Snapshot
from preroll.encoders import get_encoder
from preroll.beliefs import BetaPrediction
from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD
from preroll.model.value_model import ValueModel


def cross_val_predict(records: Sequence[Outcome], *, n_splits: int = 8, encoder=DEFAULT_ENCODER, head=DEFAULT_HEAD,
                      seed: int = 0, extra_context: Sequence[Outcome] = (), progress=None,
                      **model_kw) -> BetaPrediction:
    """Out-of-fold Beta predictions aligned with ``records``.

    ``extra_context`` (e.g. other policies' histories) joins every fold's
    context, minus the fold's prompts.
    """
    records = list(records)
    extra = list(extra_context)
    if len(records) < n_splits:
        raise ValueError(f"need at least n_splits={n_splits} records, got {len(records)}")
    texts = sorted({r.prompt for r in records})
    rng = np.random.default_rng(seed)
    group_of = dict(zip(texts, rng.permutation(len(texts)), strict=True))
    groups = np.array([group_of[r.prompt] for r in records])
    alpha = np.empty(len(records))
    beta = np.empty(len(records))
    # One encoder for every fold, so each prompt is encoded once.
    enc = get_encoder(encoder, cache_dir=model_kw.pop("cache_dir", None))
    for fold, (tr, te) in enumerate(GroupKFold(n_splits=n_splits).split(records, groups=groups)):
        held = {records[i].prompt for i in te}
        ctx = [records[i] for i in tr] + [r for r in extra if r.prompt not in held]
        vm = ValueModel(encoder=enc, head=head, **model_kw).fit(OutcomeTable.from_records(ctx))
        for snap in {Snapshot.of(records[i]) for i in te}:
            idx = [i for i in te if Snapshot.of(records[i]) == snap]
            p = vm.predict([records[i].prompt for i in idx], policy=snap.policy, step=snap.step)
            alpha[idx], beta[idx] = p.alpha, p.beta
        if progress is not None:
            progress(fold + 1, n_splits)
    return BetaPrediction(alpha, beta)
