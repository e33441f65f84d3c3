"""Where the simulator's predictions come from.

(a) ``model``: the value model's prompt-disjoint cross-validated predictions
    (``preroll.model.crossval.cross_val_predict``), a Beta per prompt;
(b) ``history``: what a GRESO/Knapsack-RL style trainer knows, the prompt's
    observed rate at the same policy's previous step; prompts not seen there
    (most of them: the snapshots share ~40 prompts per pair) get that earlier
    step's mean rate. Not defined at a policy's first step;
(c) ``oracle``: the simulated true rate itself, the physical limit;
    ``noisy``: the oracle plus N(0, sd) noise, clipped to [0, 1];
``constant``: 0.5 for every prompt, i.e. no information. A control: with
    free group sizes it spreads the budget evenly over the whole pool, which
    already beats uniform GRPO's fixed groups on informative groups per
    rollout; what a predictor adds is its gain over this row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from preroll.bench._schedule_data import SnapshotRecords, data_digest, earlier_snapshot
from preroll.beliefs import BetaPrediction
from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD

PREDICTORS = ("oracle", "noisy", "history", "model", "constant")


def history_prediction(snap: SnapshotRecords, snapshots: list[SnapshotRecords]) -> np.ndarray | None:
    """Previous-step rate of each prompt, else that step's mean rate."""
    prev = earlier_snapshot(snap, snapshots)
    if prev is None:
        return None
    rates = dict(zip(prev.ids, prev.successes / prev.attempts, strict=True))
    fallback = float(np.mean(prev.successes / prev.attempts))
    return np.array([rates.get(i, fallback) for i in snap.ids])


def history_overlap(snap: SnapshotRecords, snapshots: list[SnapshotRecords]) -> int:
    prev = earlier_snapshot(snap, snapshots)
    return 0 if prev is None else len(set(prev.ids) & set(snap.ids))


def load_model_predictions(snapshots: list[SnapshotRecords], *, cache: Path | None = None,
                           n_splits: int = 8, encoder: str = DEFAULT_ENCODER, head: str = DEFAULT_HEAD,
                           seed: int = 0, log: Callable[[str], None] = print,
                           progress: Callable[[int, int], None] | None = None,
                           scored: list[str] | None = None, fit_views_once: bool = False,
                           threads: int | None = None,
                           work: Callable[[float, str], None] | None = None) -> dict[str, BetaPrediction] | None:
    """Cross-validated value-model predictions per snapshot name, or None if
    the value model is not available.

    One CV run per policy over all its snapshots (the model reads a policy's
    history across steps; folds are prompt-disjoint). Results are cached as
    JSON under ``cache`` because encoding ~2,700 prompts takes minutes here;
    ``progress(done, total)`` counts folds over all policies meanwhile.

    The quick run (``bench schedule --quick``) narrows this: ``scored`` names the
    snapshots to predict (the policy's other snapshots stay in every fold's context,
    minus the fold's prompts, as in the full run), and ``fit_views_once`` fits the
    label-free text views once on every prompt instead of once per fold, as the quick
    ``preroll eval`` does (no outcome is read, so no label leaks). ``threads`` caps
    torch's and the BLAS pools' threads (one per process suits a shared machine).
    ``work(units, stage)`` reports the steps before the folds (embedding what the cache
    lacks, fitting the views) in the units of ``preroll.bench.value``.
    """
    quick = f"-q{','.join(sorted(scored))}{'-once' if fit_views_once else ''}" if scored or fit_views_once else ""
    key = f"cv-{encoder}-{head}-k{n_splits}-s{seed}{quick}-{data_digest(snapshots)}".replace("/", "_")
    cache_file = cache / f"{key}.json" if cache is not None else None
    wanted = [s for s in snapshots if scored is None or s.name in scored]
    if cache_file is not None and cache_file.exists():
        raw = json.loads(cache_file.read_text())
        if all(s.name in raw for s in wanted):
            log(f"value-model predictions: reusing {cache_file}")
            return {name: BetaPrediction(np.array(v["alpha"]), np.array(v["beta"])) for name, v in raw.items()}
    try:
        from preroll.model.crossval import cross_val_predict
    except ImportError as exc:
        log(f"value-model predictions unavailable ({exc}); predictor 'model' skipped")
        return None
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with nullcontext() if threads is None else threadpool_limits(limits=threads):
        return _cross_validate(snapshots, wanted, cache_file, n_splits=n_splits, encoder=encoder, head=head,
                               seed=seed, log=log, progress=progress, fit_views_once=fit_views_once,
                               threads=threads, cross_val_predict=cross_val_predict, work=work)


def _cross_validate(snapshots, wanted, cache_file, *, n_splits, encoder, head, seed, log, progress, fit_views_once,
                    threads, cross_val_predict, work) -> dict[str, BetaPrediction]:
    from preroll.workunits import UNITS_LOAD_MODEL, UNITS_PER_EMBEDDED_PROMPT, UNITS_PER_VIEW_TEXT
    from preroll.encoders import get_encoder
    from preroll.encoders.warm import embed_missing, missing_texts

    def report(units: float, stage: str) -> None:
        if work is not None:
            work(units, stage)

    enc = get_encoder(encoder, num_threads=threads) if threads is not None else get_encoder(encoder)
    texts = sorted({r.prompt for s in snapshots for r in s.records})
    todo = missing_texts(enc, texts)
    if any(t for _, t in todo):
        report(0, "loading the encoder model")
        loading = [UNITS_LOAD_MODEL]
        embed_missing(todo, lambda now, done, total: report(
            UNITS_PER_EMBEDDED_PROMPT * now + (loading.pop() if loading else 0.0), f"embedding prompts {done}/{total}"))
    if fit_views_once:
        log("value-model predictions: text views fitted once on all prompt texts (no outcomes)")
        report(0, "fitting the text views")
        enc.fit(texts)
        report(UNITS_PER_VIEW_TEXT * len(texts), "value-model CV folds")
    out: dict[str, BetaPrediction] = {}
    policies = sorted({s.policy for s in wanted})
    for k, policy in enumerate(policies):
        snaps = [s for s in wanted if s.policy == policy]
        records = [r for s in snaps for r in s.records]
        names = {s.name for s in snaps}
        other = [r for s in snapshots if s.policy == policy and s.name not in names for r in s.records]
        log(f"value-model predictions: {n_splits}-fold CV on {len(records)} records of {policy}"
            + (f" (+{len(other)} context)" if other else ""))
        fold_done = None if progress is None else (
            lambda done, _total, k=k: progress(k * n_splits + done, len(policies) * n_splits))
        pred = cross_val_predict(records, n_splits=n_splits, encoder=enc, head=head, seed=seed,
                                 extra_context=other, progress=fold_done, fit_encoder=not fit_views_once)
        alpha, beta = np.asarray(pred.alpha, float), np.asarray(pred.beta, float)
        if alpha.shape != (len(records),):
            raise ValueError(f"cross_val_predict returned {alpha.shape} predictions for {len(records)} records")
        start = 0
        for s in snaps:
            end = start + len(s.records)
            out[s.name] = BetaPrediction(alpha[start:end], beta[start:end])
            start = end
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps({k: {"alpha": v.alpha.tolist(), "beta": v.beta.tolist()}
                                          for k, v in out.items()}))
    return out
