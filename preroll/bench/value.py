"""``preroll eval``: cold-prompt CV inside each (policy, step) context plus the held-out queries.

Each policy is cross-validated with its own multi-step history as context and
(optionally) the other policies' histories as extra context; a fold's prompts
are removed from every context so the scores are for prompts never seen.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from preroll.data.v0 import load_v0
from preroll.errors import InputError
from preroll.encoders import get_encoder
from preroll.encoders.warm import embed_missing, missing_texts
from preroll.model.crossval import cross_val_predict
from preroll.model.metrics import score
from preroll.outputs import atomic_write_text, save_figure
from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD
from preroll.model.value_model import ValueModel
from preroll.workunits import UNITS_LOAD_MODEL, UNITS_PER_EMBEDDED_PROMPT, UNITS_PER_FIT_ROW, UNITS_PER_VIEW_TEXT


def _report(progress, units: float, stage: str | None = None) -> None:
    if progress is not None:
        progress.advance(units, stage)


def run_eval(data_dir: Path, *, encoder=DEFAULT_ENCODER, head=DEFAULT_HEAD, n_splits=8, seed=0, pool_policies=True,
             limit: int | None = None, latest_only: bool = False, heldout: bool = True, log=print,
             progress=None, threads: int | None = None) -> dict:
    """Cross-validate per (policy, step); ``latest_only`` scores each policy's latest step only.

    With ``latest_only`` the earlier steps still join the context (the snapshot adapter uses
    them), so the quick run measures the same model on fewer scored rows and fits.
    ``heldout`` also fits each policy on its whole history and scores ``queries.jsonl``.
    ``progress``, if given, has ``plan(total_units)`` and ``advance(units, stage_text)``
    (see ``preroll.cli.progress.WorkProgress``): the work is planned before it starts,
    and the prompts missing from the embedding cache are embedded first, in chunks.
    ``threads`` caps the CPU threads of torch and of the BLAS/OpenMP pools (None: the
    libraries' defaults). One thread per process is what a shared machine wants: there,
    idle-spinning worker threads doubled an eval's CPU time.
    """
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    with nullcontext() if threads is None else threadpool_limits(limits=threads):
        return _run_eval(data_dir, encoder=encoder, head=head, n_splits=n_splits, seed=seed,
                         pool_policies=pool_policies, limit=limit, latest_only=latest_only, heldout=heldout,
                         log=log, progress=progress, threads=threads)


def _run_eval(data_dir: Path, *, encoder, head, n_splits, seed, pool_policies, limit, latest_only, heldout, log,
              progress, threads) -> dict:
    data_dir = Path(data_dir)
    for name in ("context.jsonl", "queries.jsonl"):
        if not (data_dir / name).is_file():
            raise InputError(f"no {name} here (expected a V_0-layout data folder)", path=data_dir)
    context = load_v0(data_dir / "context.jsonl")
    queries = load_v0(data_dir / "queries.jsonl") if heldout else []
    if limit:
        by = defaultdict(list)
        for r in context:
            by[(r.policy, r.step)].append(r)
        context = [r for rs in by.values() for r in rs[:limit]]
    # Shared by every fold and policy: each prompt is encoded once.
    enc = get_encoder(encoder, num_threads=threads) if isinstance(encoder, str) else get_encoder(encoder)
    # Quick look: the label-free text views (TF-IDF+SVD, surface statistics) are fitted once on every prompt
    # text instead of once per fold (a lexical fit is ~30 s of a fold's ~50 s here). No outcome is seen,
    # so no label leaks; the full run refits them on each fold's context as a deployed model would.
    once = latest_only
    texts = sorted({r.prompt for r in context} | {r.prompt for r in queries})
    policies = sorted({r.policy for r in context})

    # The plan: what is left to embed, the view fits, and every fold's and final fit's rows.
    to_embed = missing_texts(enc, texts)
    n_embed = sum(len(m) for _, m in to_embed)
    last_step = {p: max(r.step for r in context if r.policy == p) for p in policies}
    scored = {p: [r for r in context if r.policy == p and (not latest_only or r.step == last_step[p])]
              for p in policies}
    n_ctx = len(context) if pool_policies else None
    fit_rows = 0.0
    for p in policies:
        rows = n_ctx if n_ctx is not None else sum(1 for r in context if r.policy == p)
        fit_rows += n_splits * (rows - len(scored[p]) / n_splits) + (rows if heldout else 0)
    view_units = UNITS_PER_VIEW_TEXT * len(texts) * (1 if once else len(policies) * (n_splits + heldout))
    if progress is not None:
        progress.plan((UNITS_LOAD_MODEL if n_embed else 0) + UNITS_PER_EMBEDDED_PROMPT * n_embed + view_units
                      + UNITS_PER_FIT_ROW * fit_rows)

    if n_embed:
        _report(progress, 0, "loading the encoder model")
        loading = [UNITS_LOAD_MODEL]  # counted with the first chunk, which loads the model

        def embedded(now: int, done: int, total: int) -> None:
            _report(progress, UNITS_PER_EMBEDDED_PROMPT * now + loading.pop() if loading else
                    UNITS_PER_EMBEDDED_PROMPT * now, f"embedding prompts {done}/{total}")

        embed_missing(to_embed, embedded)
    if once:
        log("quick look: text views fitted once on all prompt texts (no outcomes); --full refits them per fold")
        _report(progress, 0, "fitting the text views")
        enc.fit(texts)
        _report(progress, view_units)
    rows = []
    for k, policy in enumerate(policies):
        mine = [r for r in context if r.policy == policy]
        other = [r for r in context if r.policy != policy] if pool_policies else []
        if latest_only:
            last = max(r.step for r in mine)
            other = [r for r in mine if r.step != last] + other
            mine = [r for r in mine if r.step == last]
        log(f"{policy}: {n_splits}-fold prompt-disjoint CV on {len(mine)} records (+{len(other)} context)")
        n_rows = len(mine) + len(other)
        fold_units = UNITS_PER_FIT_ROW * (n_rows - len(mine) / n_splits) + (
            0 if once else UNITS_PER_VIEW_TEXT * len(texts))
        _report(progress, 0, f"{policy}: fold 1/{n_splits}")

        def fold_done(f, n, policy=policy, fold_units=fold_units):
            _report(progress, fold_units, f"{policy}: fold {min(f + 1, n)}/{n}")

        pred = cross_val_predict(mine, n_splits=n_splits, encoder=enc, head=head, seed=seed, extra_context=other,
                                 progress=fold_done, fit_encoder=not once)
        vm = None
        if heldout:
            _report(progress, 0, f"{policy}: fit on the whole history")
            vm = ValueModel(encoder=enc, head=head, fit_encoder=not once).fit(mine + other)
            _report(progress, UNITS_PER_FIT_ROW * n_rows + (0 if once else UNITS_PER_VIEW_TEXT * len(texts)))
        for step in sorted({r.step for r in mine}):
            idx = [i for i, r in enumerate(mine) if r.step == step]
            rate = np.array([mine[i].success_rate for i in idx])
            cv = score(pred.p_success[idx], rate)
            q = [r for r in queries if r.policy == policy and r.step == step]
            held = score(vm.predict([r.prompt for r in q], policy=policy, step=step).p_success,
                         np.array([r.success_rate for r in q])) if q and vm is not None else None
            rows.append({"policy": policy, "step": step, "cv": cv, "heldout": held,
                         "_pred": pred.p_success[idx].tolist(), "_rate": rate.tolist()})
    mean = {k: float(np.nanmean([r["cv"][k] for r in rows])) for k in ("auc", "brier", "mae", "ece")}
    held_aucs = [r["heldout"]["auc"] for r in rows if r["heldout"]]
    held_mean = float(np.nanmean(held_aucs)) if held_aucs else None
    return {"encoder": getattr(enc, "name", str(encoder)), "encoder_spec": str(encoder), "head": head,
            "n_splits": n_splits, "seed": seed, "latest_only": latest_only, "heldout": heldout,
            "pool_policies": pool_policies, "text_views_fitted_once": once, "rows": rows, "mean_cv": mean,
            "mean_heldout_auc": held_mean}


def reliability_plot(report: dict, path: Path) -> None:
    from preroll._optional import require

    require("matplotlib", what="drawing a plot").use("Agg")
    import matplotlib.pyplot as plt

    pred = np.concatenate([r["_pred"] for r in report["rows"]])
    rate = np.concatenate([r["_rate"] for r in report["rows"]])
    bins = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(pred, bins) - 1, 0, 9)
    xs = [pred[idx == b].mean() for b in range(10) if (idx == b).any()]
    ys = [rate[idx == b].mean() for b in range(10) if (idx == b).any()]
    ns = [(idx == b).sum() for b in range(10) if (idx == b).any()]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.scatter(xs, ys, s=np.array(ns) / 3, zorder=3, label="bins (size = prompts)")
    ax.plot(xs, ys, "-o", ms=3)
    ax.set_xlabel("predicted success rate (cross-validated)")
    ax.set_ylabel("observed success rate")
    # Cache names carry hashes and settings ("minilm-53aa...-len96-q8+lexical-..."): the title keeps the kinds.
    short = "+".join(part.split("-")[0] for part in report["encoder"].split("+"))
    ax.set_title(f"Reliability: {short} / {report['head']}\nmean CV AUC {report['mean_cv']['auc']:.3f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, path)


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "report.json"
    clean = {**report, "rows": [{k: v for k, v in r.items() if not k.startswith("_")} for r in report["rows"]]}
    atomic_write_text(js, json.dumps(clean, indent=2))  # first: a missing 'plots' extra must not lose the numbers
    png = out_dir / "reliability.png"
    reliability_plot(report, png)
    return js, png
