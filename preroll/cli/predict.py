"""``preroll predict``: score query prompts from a policy's history.

Contract: query rows need ``prompt``; every other field is copied through;
each output row adds ``p_success``, ``p_std`` and the Beta ``alpha``/``beta``.
The output is checked before the fit (never an input, never an existing file
without ``--force``) and written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from preroll.defaults import DEFAULT_MAX_HISTORY_ROWS
from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD


def predict(
    context: Path = typer.Option(..., "--context", help="History file (JSONL/CSV/Parquet) in the record schema."),
    prompts: Path = typer.Option(..., "--prompts", help="Query file: rows with 'prompt' (other fields pass through)."),
    out: Path = typer.Option(..., "--out", help="Output JSONL (refused if it is an input or exists, unless --force)."),
    encoder: str = typer.Option(DEFAULT_ENCODER, "--encoder", help="Prompt encoder: minilm, lexical, stats, a sentence-transformers name or path, or several joined by +; lexical+stats needs no torch."),
    head: str = typer.Option(None, "--head", help="logistic (default), ensemble (logistic+knn), knn, gp, tabpfn; "
                                                  "with --by-policy: joint (the router's joint model), ensemble, "
                                                  "logistic, knn. auto (default): the recommended head."),
    reward_range: tuple[float, float] = typer.Option(None, "--reward-range",
                                                     help="Scale of a 'reward' column, e.g. -1 1."),
    max_history_rows: int = typer.Option(DEFAULT_MAX_HISTORY_ROWS, "--max-history-rows", min=0,
                                         help="Refuse a longer history before any work (0: no limit)."),
    policy: str = typer.Option(None, help="Policy to score for (when the history holds several)."),
    step: int = typer.Option(None, help="Training step to score for (default: latest in the history)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
    by_policy: bool = typer.Option(False, "--by-policy",
                                   help="Score every policy of the history with one joint model (the predictor "
                                        "`preroll serve` routes with): p_success and p_std become objects keyed "
                                        "by policy, plus best_policy. Each policy's latest step (or --step)."),
) -> None:
    """Predict each query prompt's success probability and its uncertainty."""
    import warnings

    from rich.console import Console

    from preroll.data import load_queries, load_records
    from preroll.data.loaders import check_history_size
    from preroll.outputs import atomic_open, check_output

    from preroll.cli.options import check_model_options

    console = Console(stderr=True, log_path=False)  # no "predict.py:49" source locations in log lines
    check_model_options(encoder, head or ("auto" if by_policy else DEFAULT_HEAD), by_policy=by_policy)
    check_output(out, inputs=(context, prompts), force=force)
    check_history_size(context, max_history_rows)
    history = load_records(context, reward_range=reward_range)
    rows = load_queries(prompts)
    console.log(f"context: {len(history)} records; queries: {len(rows)}")
    if by_policy:
        _predict_by_policy(history, rows, out, context=context, encoder=encoder, head=head or "auto", step=step,
                           console=console)
        return
    from preroll.model.value_model import ValueModel

    _check_policy(history, policy)  # before the fit: a missing --policy costs one line, not a fit
    vm = ValueModel(encoder=encoder, head=head or DEFAULT_HEAD, show_progress=True)
    vm.fit(history)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        snap = vm.resolve_snapshot(policy, step)
        pred = vm.predict([r["prompt"] for r in rows], policy=policy, step=step)
    for msg in dict.fromkeys(str(w.message) for w in caught):
        console.print(f"warning: {msg}", markup=False, highlight=False)
    console.log(f"scored for {snap.name}", markup=False)
    with atomic_open(out) as fh:
        for row, p, sd, a, b in zip(rows, pred.p_success, pred.std, pred.alpha, pred.beta):
            fh.write(json.dumps({**row, "p_success": float(p), "p_std": float(sd),
                                 "alpha": float(a), "beta": float(b)}, ensure_ascii=False,
                                allow_nan=False) + "\n")
    console.log(f"wrote {len(rows)} predictions to {out}", markup=False)


def _check_policy(history, policy: str | None) -> None:
    """The value model's rule for choosing the policy scored for, stated in CLI flags."""
    from preroll.errors import InputError

    policies = sorted({r.policy for r in history}, key=lambda p: (p is not None, p or ""))
    if policy is None and len(policies) > 1:
        named = ", ".join("(unnamed)" if p is None else p for p in policies)
        raise InputError(f"the history holds several policies ({named}); pass --policy", field="--policy")
    if policy is not None and policy not in policies:
        known = ", ".join(p for p in policies if p is not None) or "none named"
        raise InputError(f"no history for policy {policy!r}; known: {known}", field="--policy")


def _predict_by_policy(history, rows: list[dict], out: Path, *, context: Path, encoder: str, head: str,
                       step: int | None, console) -> None:
    """One joint model over the policies (each its own history; a prompt may be seen by only some of them).

    Why the router: comparing policies needs their probabilities calibrated against each
    other, which per-policy models fitted apart are not (docs/route.md); this is the same
    predictor ``preroll serve`` routes with, prices left out.
    """
    from preroll.data.errors import RecordError
    from preroll.outputs import atomic_open
    from preroll.route import ModelSpec, Router

    missing = sum(r.policy is None for r in history)
    if missing:
        raise RecordError(f"--by-policy needs a policy on every record; {missing} have none", path=context,
                          field="policy")
    histories: dict[str, list] = {}
    for policy in sorted({r.policy for r in history}):
        mine = [r for r in history if r.policy == policy]
        steps = sorted({r.step for r in mine if r.step is not None})
        chosen = (step if step in steps else max(steps)) if steps else None
        histories[policy] = [r for r in mine if chosen is None or r.step is None or r.step == chosen]
        console.log(f"{policy}: {len(histories[policy])} records" + (f" at step {chosen}" if chosen is not None
                                                                       else ""), markup=False)
    if len(histories) < 2:
        raise RecordError("--by-policy needs a history with at least two policies", path=context, field="policy")
    names = list(histories)
    # "auto" here stays the joint model: --by-policy scores success (no routing), which is what it was measured
    # on; the Router's own "auto" moved to the ensemble for routing under shift (docs/route.md).
    router = Router(models=[ModelSpec(name=n, cost_per_call=1.0) for n in names], encoder=encoder,
                    head="joint" if head == "auto" else head, guard=False)
    router.fit(histories, show_progress=True)
    belief = router.predict_beta([r["prompt"] for r in rows])
    p, sd = belief.p_success, belief.std
    with atomic_open(out) as fh:
        for i, row in enumerate(rows):
            fh.write(json.dumps({**row, "p_success": {n: float(p[i, j]) for j, n in enumerate(names)},
                                 "p_std": {n: float(sd[i, j]) for j, n in enumerate(names)},
                                 "best_policy": names[int(p[i].argmax())]}, ensure_ascii=False,
                                allow_nan=False) + "\n")
    console.log(f"wrote {len(rows)} predictions for {len(names)} policies to {out}", markup=False)
