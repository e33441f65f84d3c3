"""``preroll bench schedule``: rollout allocation and the fused baseline on real rates.

Heavy imports (numpy, matplotlib, the value model) happen inside the command
so ``preroll --help`` stays instant.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import typer

from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD


def bench_schedule(
    budget: list[int] = typer.Option([4, 8, 16], "--budget", help="Rollouts per batch prompt (repeat for several)."),
    pool_factor: float = typer.Option(4.0, help="Candidate pool size as a multiple of the batch."),
    batch_prompts: int = typer.Option(64, min=1, help="Prompts in a uniform-GRPO batch."),
    replicates: int = typer.Option(20, min=1, help="Simulated worlds per snapshot."),
    seed: int = typer.Option(0, help="Random seed of the whole run."),
    predictors: str = typer.Option("oracle,noisy,history,model,constant",
                                   help="Comma-separated: oracle, noisy, history, model, constant (no-information control)."),
    rules: str = typer.Option("greedy,knapsack,variance,thompson", help="Comma-separated allocation rules."),
    min_rollouts: int = typer.Option(2, min=1, help="Smallest group a rule may give a prompt."),
    max_rollouts: int = typer.Option(64, min=1, help="Largest group a rule may give a prompt."),
    fixed_group: bool = typer.Option(False, "--fixed-group", help="Allocating rules use groups of exactly the budget's "
                                                              "size: prompt selection only, as uniform GRPO."),
    noise_sd: float = typer.Option(0.2, min=0.0, help="Std of the Gaussian noise added for the 'noisy' predictor."),
    controller_cost: float = typer.Option(0.002, min=0.0, help="MSE drop one extra rollout must buy (V_0.5 controller)."),
    encoder: str = typer.Option(DEFAULT_ENCODER, help="Value-model encoder for the 'model' predictor."),
    head: str = typer.Option(DEFAULT_HEAD, help="Value-model head for the 'model' predictor."),
    quick: bool = typer.Option(False, "--quick", help="Small run: 3 replicates, two snapshots, budgets as given; the "
                                                       "value model scores those two only (4 folds, text views "
                                                       "fitted once)."),
    context: Optional[Path] = typer.Option(
        None, "--context", help="Your own history (JSONL, CSV or Parquet: prompt, successes + attempts or "
        "success_rate, policy, step): one simulated world per (policy, step); the 'history' predictor reads each "
        "policy's earlier step. Default: the bundled DAPO-Math histories."),
    out: Path = typer.Option(Path("runs/bench-schedule"), help="Output folder for results.json and the PNG."),
) -> None:
    """Compare rollout-allocation rules and predictors on real success rates (yours with --context)."""
    from rich.console import Console

    from preroll.cli.progress import WorkProgress

    from preroll.bench.schedule import ScheduleBenchConfig, headline, simulate, write_outputs
    from preroll.outputs import check_output

    check_output(out, inputs=(context,), folder=True)

    import shutil

    console = Console(width=max(shutil.get_terminal_size((140, 24)).columns, 120))
    cfg = ScheduleBenchConfig(
        budgets=list(budget), pool_factor=pool_factor, batch_prompts=batch_prompts, replicates=replicates,
        seed=seed, min_rollouts=min_rollouts, max_rollouts=max_rollouts,
        predictors=[p.strip() for p in predictors.split(",") if p.strip()],
        rules=[r.strip() for r in rules.split(",") if r.strip()],
        fixed_group=fixed_group, noise_sd=noise_sd, controller_cost=controller_cost, model_encoder=encoder, model_head=head,
        model_cache=str(out / "cache"), context=None if context is None else str(context),
    )
    if quick:
        cfg.replicates = min(cfg.replicates, 3)
        cfg.snapshots = QUICK_SNAPSHOTS if context is None else _latest_steps(cfg)
        cfg.model_splits, cfg.model_quick = 4, True
    try:
        cfg.validate()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if context is not None:
        _check_pools(cfg)
    # Units (about a quiet core-second each, as in preroll eval): embedding what the cache lacks, the
    # text views, a value-model fold, a simulated world (all budgets, predictors and rules).
    world_units = 0.3 * len(cfg.budgets)
    n_snapshots = len(cfg.snapshots) if cfg.snapshots else (6 if context is None else len(_snapshots(cfg)))
    total = n_snapshots * cfg.replicates * world_units
    fold_units = 0.0
    if "model" in cfg.predictors:
        before, fold_units, n_folds = _model_units(cfg)
        total += before + n_folds * fold_units
    counts = {"folds": 0, "worlds": 0}
    with WorkProgress("preroll bench schedule", total, stage="loading the data") as bar:

        def step(kind: str, units: float, label: str):
            def report(done: int, total: int) -> None:
                bar.advance(units * (done - counts[kind]), f"{label} {done}/{total}")
                counts[kind] = done
            return report

        result = simulate(cfg, progress=step("worlds", world_units, "simulated worlds"),
                          cv_progress=step("folds", fold_units, "value-model CV folds"), log=bar.log,
                          work=lambda units, stage: bar.advance(units, stage))
    paths = write_outputs(result, out)
    print_tables(result, console)
    for b in cfg.budgets:
        best = headline(result["summary"], b)
        if best:
            console.print(f"budget {b}/prompt, pool {cfg.pool_factor:g}x: " + "; ".join(
                f"{r['predictor']}: {r['rule']} {r['ratio_vs_uniform']:.2f}x uniform" for r in best))
    console.print(f"wrote {paths['json']}, {paths['md']} and {paths['png']}")


#: The quick run's snapshots of the bundled data: each policy's middle step.
QUICK_SNAPSHOTS = ["Qwen3-4B-Instruct@64", "DeepSeek-R1-Distill-Qwen-1.5B@64"]


def _snapshots(cfg):
    return _load(cfg.context)


@functools.lru_cache(maxsize=2)
def _load(context: Optional[str]):
    from preroll.bench.schedule import ScheduleBenchConfig, all_snapshots

    return all_snapshots(ScheduleBenchConfig(context=context))


def _latest_steps(cfg) -> list[str]:
    """A user's history under --quick: each policy's latest snapshot."""
    latest = {}
    for snap in _snapshots(cfg):
        latest[snap.policy] = snap.name        # sorted by policy, then step: the last one wins
    return list(latest.values())


def _check_pools(cfg) -> None:
    """Every simulated snapshot must hold the candidate pool: a one-line error naming the smallest, not a
    traceback mid-run."""
    pool = int(round(cfg.pool_factor * cfg.batch_prompts))
    snaps = [s for s in _snapshots(cfg) if not cfg.snapshots or s.name in cfg.snapshots]
    small = min(snaps, key=lambda s: len(s.records))
    if len(small.records) < pool:
        raise typer.BadParameter(f"{cfg.context}: snapshot {small.name} has {len(small.records)} prompts, fewer than "
                                 f"the pool of {pool} (--pool-factor x --batch-prompts); lower those",
                                 param_hint="--context")


def _model_units(cfg) -> tuple[float, float, int]:
    """The value model's work in progress units: before its folds (the prompts the embedding cache
    lacks, looked up now so the plan is right from the start, and in the quick run one fit of the
    views), per fold (its context rows; in the full run also a fit of the views), and the folds."""
    from preroll.workunits import UNITS_LOAD_MODEL, UNITS_PER_EMBEDDED_PROMPT, UNITS_PER_FIT_ROW, UNITS_PER_VIEW_TEXT
    from preroll.encoders import get_encoder
    from preroll.encoders.warm import missing_texts

    snaps = _snapshots(cfg)
    texts = sorted({r.prompt for s in snaps for r in s.records})
    n_embed = sum(len(t) for _, t in missing_texts(get_encoder(cfg.model_encoder), texts))
    before = ((UNITS_LOAD_MODEL if n_embed else 0.0) + UNITS_PER_EMBEDDED_PROMPT * n_embed
              + (UNITS_PER_VIEW_TEXT * len(texts) if cfg.model_quick else 0.0))
    policies = sorted({s.policy for s in snaps})
    rows = max(sum(len(s.records) for s in snaps if s.policy == p) for p in policies)
    scored = max(len(s.records) for s in snaps) if cfg.model_quick else rows
    per_fold = UNITS_PER_FIT_ROW * (rows - scored / cfg.model_splits) + (
        0.0 if cfg.model_quick else UNITS_PER_VIEW_TEXT * len(texts) / len(policies))
    return before, per_fold, len(policies) * cfg.model_splits


def print_tables(result: dict, console) -> None:
    """The comparison tables: allocation by (predictor, rule, budget), the
    uniform/DAPO references, and the baseline MSEs."""
    from rich.table import Table

    s = result["summary"]
    t = Table(title="Rollout allocation (means over simulated worlds)")
    for col in ("predictor", "rule", "budget", "informative/1k", "x uniform", "V0 utility", "uniform V0", "wasted %"):
        t.add_column(col, justify="left" if col in ("predictor", "rule") else "right")
    for r in sorted(s["allocation"], key=lambda r: (r["predictor"], r["budget"], -r["informative_per_1k"])):
        t.add_row(r["predictor"], r["rule"], str(r["budget"]),
                  f"{r['informative_per_1k']:.1f} ± {r['informative_per_1k_se']:.1f}",
                  f"{r['ratio_vs_uniform']:.2f}", f"{r['v0_utility']:.1f}", f"{r['uniform_v0_utility']:.1f}",
                  f"{100 * r['wasted_share']:.1f}")
    console.print(t)
    u = Table(title="References: uniform GRPO and DAPO dynamic sampling")
    for col in ("budget", "uniform informative/1k", "uniform wasted %", "DAPO extra generation", "DAPO informative/1k generated"):
        u.add_column(col, justify="right")
    for r in s["uniform"]:
        u.add_row(str(r["budget"]), f"{r['informative_per_1k']:.1f}", f"{100 * r['wasted_share']:.1f}",
                  f"{100 * r['dapo_extra']:.0f}%", f"{r['dapo_informative_per_1k']:.1f}")
    console.print(u)
    cfg = result["config"]
    k0, k1 = cfg["fused_rollouts"], cfg["full_rollouts"]
    m = Table(title=f"Baseline MSE vs true rate (V_0.5 fusion; controller {k0}..{k1} rollouts, "
                    f"cost {cfg['controller_cost']:g})")
    for col in ("predictor", "prior only", f"mean@{k0}", f"fused@{k0}", f"mean@{k1}", "prior rejected %",
                "controller rollouts", "controller MSE", "mean, same rollouts"):
        m.add_column(col, justify="right")
    for r in s["mse"]:
        m.add_row(r["predictor"], f"{r['mse_prior']:.4f}", f"{r['mse_mean_small']:.4f}", f"{r['mse_fused_small']:.4f}",
                  f"{r['mse_mean_full']:.4f}", f"{100 * r['prior_rejected']:.1f}", f"{r['ctrl_rollouts']:.2f}",
                  f"{r['mse_ctrl']:.4f}", f"{r['mse_mean_same']:.4f}")
    console.print(m)
    for note in result.get("notes", []):
        console.print(f"[dim]note: {note}[/dim]")
