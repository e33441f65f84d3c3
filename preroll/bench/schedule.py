"""Rollout-allocation simulator on real success rates (``preroll bench schedule``).

One simulated world = one (policy, step) snapshot of the shared DAPO-Math
data, true rates drawn from each prompt's Beta posterior, a candidate pool of
``pool_factor * batch_prompts`` prompts drawn at random. For each budget
(``b`` rollouts per batch prompt, total B = b * batch_prompts) every rule
allocates B over the pool from each predictor's view of the rates; rollouts
are then Bernoulli draws from the true rates. Uniform GRPO (batch_prompts
random prompts x b rollouts) is the yardstick. Metrics per budget:

* informative groups per 1,000 rollouts (groups neither all-correct nor
  all-wrong) and its ratio to uniform GRPO in the same worlds;
* summed V_0 utility sum_i 1 - p_i^n_i - (1-p_i)^n_i at the true rates
  (expected informative groups, without the Bernoulli noise);
* share of rollouts wasted in dead groups;
* DAPO dynamic sampling: random prompts with b rollouts, dead groups thrown
  away, until batch_prompts informative groups are kept; its extra
  generation cost is generated / (batch_prompts * b) - 1;
* baseline MSE: on the pool, the fused V_0.5 estimate from 4 rollouts vs the
  4- and 16-rollout group means, and the sequential controller (4 to 16
  rollouts) vs the group mean of the very same rollouts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from preroll.outputs import atomic_write_text, save_figure
from preroll.bench._schedule_data import SnapshotRecords, load_history_snapshots, load_snapshots
from preroll.bench._schedule_predictors import (
    PREDICTORS,
    history_overlap,
    history_prediction,
    load_model_predictions,
)
from preroll.beliefs import BetaPrediction
from preroll.model.defaults import DEFAULT_ENCODER, DEFAULT_HEAD
from preroll.schedule import RULES, SequentialBaseline, allocate
from preroll.schedule.fused import fuse_stats

ALLOCATING_RULES = tuple(r for r in RULES if r != "uniform")


@dataclass
class ScheduleBenchConfig:
    """Everything a run depends on; written next to the results."""

    budgets: list[int] = field(default_factory=lambda: [4, 8, 16])
    pool_factor: float = 4.0
    batch_prompts: int = 64
    replicates: int = 20
    seed: int = 0
    min_rollouts: int = 2
    max_rollouts: int = 64
    predictors: list[str] = field(default_factory=lambda: list(PREDICTORS))
    fixed_group: bool = False  # allocating rules use groups of exactly b (selection only)
    rules: list[str] = field(default_factory=lambda: list(ALLOCATING_RULES))
    noise_sd: float = 0.2
    fused_rollouts: int = 4
    full_rollouts: int = 16
    controller_cost: float = 0.002
    snapshots: list[str] | None = None  # names "policy@step"; None = all
    #: A user's history (records schema: prompt, successes + attempts or a rate, policy, step), one simulated
    #: world per (policy, step); None = the bundled DAPO-Math context.
    context: str | None = None
    model_cache: str | None = None
    model_encoder: str = DEFAULT_ENCODER
    model_head: str = DEFAULT_HEAD
    model_splits: int = 8
    # The quick run's value model: only the simulated snapshots are scored (the policy's other steps
    # stay as context), text views fitted once on all prompts (label-free); see load_model_predictions.
    model_quick: bool = False
    model_threads: int | None = 1  # torch and BLAS threads: one per process suits a shared machine

    def validate(self) -> None:
        if not self.budgets or any(int(b) < 1 for b in self.budgets):
            raise ValueError(f"budgets must be positive rollouts per prompt (got {self.budgets})")
        if self.pool_factor < 1:
            raise ValueError(f"pool_factor must be >= 1 (got {self.pool_factor})")
        if self.batch_prompts < 1 or self.replicates < 1:
            raise ValueError("batch_prompts and replicates must be >= 1")
        unknown = set(self.predictors) - set(PREDICTORS)
        if unknown:
            raise ValueError(f"unknown predictors {sorted(unknown)} (choose from {', '.join(PREDICTORS)})")
        unknown = set(self.rules) - set(ALLOCATING_RULES)
        if unknown:
            raise ValueError(f"unknown rules {sorted(unknown)} (choose from {', '.join(ALLOCATING_RULES)})")
        if not 1 <= self.fused_rollouts <= self.full_rollouts:
            raise ValueError("need 1 <= fused_rollouts <= full_rollouts")


def _group_metrics(x: np.ndarray, p: np.ndarray, rng: np.random.Generator) -> dict[str, float]:
    k = rng.binomial(x, p)
    live = x > 0
    informative = live & (k > 0) & (k < x)
    dead = live & ~informative
    util = np.where(live, 1.0 - p ** x - (1.0 - p) ** x, 0.0)
    return {"informative": float(informative.sum()), "rollouts": float(x.sum()),
            "groups": float(live.sum()), "v0_utility": float(util.sum()),
            "wasted": float(x[dead].sum())}


def _dapo_fill(p_all: np.ndarray, batch: int, group: int, rng: np.random.Generator,
               max_draws: int = 200_000) -> float:
    """Rollouts DAPO generates to keep ``batch`` informative groups of size ``group``."""
    kept = generated = 0
    while kept < batch and generated < max_draws * group:
        order = rng.permutation(p_all.size)
        k = rng.binomial(group, p_all[order])
        ok = (k > 0) & (k < group)
        need = batch - kept
        hits = np.flatnonzero(ok)
        if hits.size >= need:
            used = hits[need - 1] + 1
            return float(generated + used * group)
        kept += hits.size
        generated += p_all.size * group
    return float("inf")


def _mse_block(pred, p: np.ndarray, rewards: np.ndarray, cfg: ScheduleBenchConfig) -> dict[str, float]:
    k0, k1 = cfg.fused_rollouts, cfg.full_rollouts
    if isinstance(pred, BetaPrediction):
        m, prior_var = pred.p_success, pred.var
    else:
        m, prior_var = np.asarray(pred, float), None
    s0 = rewards[:, :k0].sum(axis=1)
    fused = fuse_stats(m, s0, np.full(m.size, float(k0)), prior_var=prior_var)
    ctrl = SequentialBaseline(cost=cfg.controller_cost, min_rollouts=k0, max_rollouts=k1)
    est, used = ctrl.run_batch(m, rewards, prior_var=prior_var)
    same = np.array([rewards[i, :u].mean() for i, u in enumerate(used)])
    return {
        "mse_prior": float(np.mean((m - p) ** 2)),
        "mse_mean_small": float(np.mean((s0 / k0 - p) ** 2)),
        "mse_fused_small": float(np.mean((fused.estimate - p) ** 2)),
        "mse_mean_full": float(np.mean((rewards[:, :k1].mean(axis=1) - p) ** 2)),
        "prior_rejected": float(fused.rejected.mean()),
        "ctrl_rollouts": float(used.mean()),
        "mse_ctrl": float(np.mean((est.estimate - p) ** 2)),
        "mse_mean_same": float(np.mean((same - p) ** 2)),
    }


def all_snapshots(cfg: ScheduleBenchConfig) -> list[SnapshotRecords]:
    """Every snapshot of the run's data: the user's history (``cfg.context``) or the bundled one."""
    return load_snapshots() if cfg.context is None else load_history_snapshots(cfg.context)


def simulate(cfg: ScheduleBenchConfig, *, snapshots: list[SnapshotRecords] | None = None,
             progress: Callable[[int, int], None] | None = None,
             log: Callable[[str], None] = print,
             cv_progress: Callable[[int, int], None] | None = None,
             work: Callable[[float, str], None] | None = None) -> dict:
    """Run the simulation; returns raw rows and aggregated summaries (JSON-able).

    ``cv_progress(done, total)`` counts the value model's cross-validation
    folds (minutes on a fresh cache), ``progress`` the simulated worlds; ``work(units, stage)``
    the embedding and view fitting before the folds (see ``load_model_predictions``).
    """
    cfg.validate()
    snapshots = snapshots if snapshots is not None else all_snapshots(cfg)
    if cfg.snapshots:
        snapshots = [s for s in snapshots if s.name in cfg.snapshots]
        if not snapshots:
            raise ValueError(f"no snapshot matches {cfg.snapshots}")
    model_preds = None
    if "model" in cfg.predictors:
        model_preds = load_model_predictions(
            all_snapshots(cfg) if cfg.snapshots else snapshots,
            cache=Path(cfg.model_cache) if cfg.model_cache else None,
            n_splits=cfg.model_splits, encoder=cfg.model_encoder, head=cfg.model_head,
            seed=cfg.seed, log=log, progress=cv_progress,
            scored=[s.name for s in snapshots] if cfg.model_quick else None,
            fit_views_once=cfg.model_quick, threads=cfg.model_threads, work=work)
    all_snaps = all_snapshots(cfg) if cfg.snapshots else snapshots
    rng = np.random.default_rng(cfg.seed)
    alloc_rows, mse_rows, dapo_rows, notes = [], [], [], []
    if "model" in cfg.predictors and model_preds is None:
        notes.append("predictor 'model' skipped: value model not available")
    for s in snapshots:
        if "history" in cfg.predictors:
            ov = history_overlap(s, all_snaps)
            if history_prediction(s, all_snaps) is None:
                notes.append(f"history {s.name}: no earlier step, not evaluated")
            else:
                notes.append(f"history {s.name}: {ov}/{len(s.records)} prompts seen at the earlier step, "
                             "the rest get its mean rate")
    total = len(snapshots) * cfg.replicates
    done = 0
    pool_size = int(round(cfg.pool_factor * cfg.batch_prompts))
    for snap in snapshots:
        hist = history_prediction(snap, all_snaps) if "history" in cfg.predictors else None
        if pool_size > len(snap.records):
            raise ValueError(f"pool of {pool_size} prompts exceeds the {len(snap.records)} in {snap.name}; "
                             "lower batch_prompts or pool_factor")
        for rep in range(cfg.replicates):
            p_all = snap.draw_rates(rng)
            pool = rng.choice(p_all.size, pool_size, replace=False)
            p = p_all[pool]
            preds = {}
            for name in cfg.predictors:
                if name == "oracle":
                    preds[name] = p
                elif name == "noisy":
                    preds[name] = np.clip(p + rng.normal(0.0, cfg.noise_sd, p.size), 0.0, 1.0)
                elif name == "history" and hist is not None:
                    preds[name] = hist[pool]
                elif name == "model" and model_preds is not None:
                    preds[name] = model_preds[snap.name][pool]
                elif name == "constant":
                    preds[name] = np.full(p.size, 0.5)
            base = {"snapshot": snap.name, "rep": rep}
            for b in cfg.budgets:
                budget = int(b) * cfg.batch_prompts
                x = allocate(p, budget, rule="uniform", group_size=int(b), rng=rng,
                             min_rollouts=min(cfg.min_rollouts, int(b)), max_rollouts=max(cfg.max_rollouts, int(b)))
                alloc_rows.append({**base, "budget": int(b), "predictor": "-", "rule": "uniform",
                                   **_group_metrics(x, p, rng)})
                gen = _dapo_fill(p_all, cfg.batch_prompts, int(b), rng)
                dapo_rows.append({**base, "budget": int(b), "generated": gen,
                                  "extra": gen / (cfg.batch_prompts * int(b)) - 1.0,
                                  "informative_per_1k": 1000.0 * cfg.batch_prompts / gen})
                lo, hi = (int(b), int(b)) if cfg.fixed_group else (cfg.min_rollouts, cfg.max_rollouts)
                for name, pred in preds.items():
                    for rule in cfg.rules:
                        x = allocate(pred, budget, rule=rule, min_rollouts=lo, max_rollouts=hi,
                                     group_size=int(b), rng=rng)
                        alloc_rows.append({**base, "budget": int(b), "predictor": name, "rule": rule,
                                           **_group_metrics(x, p, rng)})
            rewards = (rng.random((p.size, cfg.full_rollouts)) < p[:, None]).astype(float)
            for name, pred in preds.items():
                if name == "constant":
                    continue
                mse_rows.append({**base, "predictor": name, **_mse_block(pred, p, rewards, cfg)})
            done += 1
            if progress:
                progress(done, total)
    return {"config": asdict(cfg), "notes": notes, "allocation": alloc_rows, "dapo": dapo_rows,
            "mse": mse_rows, "summary": summarise(alloc_rows, dapo_rows, mse_rows)}


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0


def summarise(alloc_rows: list[dict], dapo_rows: list[dict], mse_rows: list[dict]) -> dict:
    """Aggregate per (predictor, rule, budget), pairing each with uniform GRPO
    in exactly the worlds (snapshot, replicate) that predictor saw."""
    uni = {(r["snapshot"], r["rep"], r["budget"]): r for r in alloc_rows if r["rule"] == "uniform"}
    keys = sorted({(r["predictor"], r["rule"], r["budget"]) for r in alloc_rows if r["rule"] != "uniform"})
    alloc = []
    for pred, rule, b in keys:
        rows = [r for r in alloc_rows if (r["predictor"], r["rule"], r["budget"]) == (pred, rule, b)]
        base = [uni[(r["snapshot"], r["rep"], b)] for r in rows]
        inf_1k, inf_se = _mean_se([1000 * r["informative"] / r["rollouts"] for r in rows])
        uni_1k = float(np.mean([1000 * u["informative"] / u["rollouts"] for u in base]))
        alloc.append({
            "predictor": pred, "rule": rule, "budget": b, "worlds": len(rows),
            "informative_per_1k": inf_1k, "informative_per_1k_se": inf_se,
            "uniform_per_1k": uni_1k, "ratio_vs_uniform": inf_1k / uni_1k if uni_1k else float("nan"),
            "v0_utility": float(np.mean([r["v0_utility"] for r in rows])),
            "uniform_v0_utility": float(np.mean([u["v0_utility"] for u in base])),
            "wasted_share": float(np.mean([r["wasted"] / r["rollouts"] for r in rows])),
            "groups": float(np.mean([r["groups"] for r in rows])),
        })
    uniform = []
    for b in sorted({r["budget"] for r in alloc_rows}):
        rows = [r for r in alloc_rows if r["rule"] == "uniform" and r["budget"] == b]
        d = [r for r in dapo_rows if r["budget"] == b]
        uniform.append({
            "budget": b, "worlds": len(rows),
            "informative_per_1k": float(np.mean([1000 * r["informative"] / r["rollouts"] for r in rows])),
            "v0_utility": float(np.mean([r["v0_utility"] for r in rows])),
            "wasted_share": float(np.mean([r["wasted"] / r["rollouts"] for r in rows])),
            "dapo_extra": float(np.mean([r["extra"] for r in d])),
            "dapo_informative_per_1k": float(np.mean([r["informative_per_1k"] for r in d])),
        })
    mse = []
    for pred in sorted({r["predictor"] for r in mse_rows}):
        rows = [r for r in mse_rows if r["predictor"] == pred]
        entry = {"predictor": pred, "worlds": len(rows)}
        for key in rows[0]:
            if key not in ("snapshot", "rep", "predictor"):
                entry[key] = float(np.mean([r[key] for r in rows]))
        mse.append(entry)
    return {"allocation": alloc, "uniform": uniform, "mse": mse}


def headline(summary: dict, budget: int = 8) -> list[dict]:
    """Best rule per predictor at one budget: the README's headline numbers."""
    out = []
    for pred in sorted({r["predictor"] for r in summary["allocation"]}):
        rows = [r for r in summary["allocation"] if r["predictor"] == pred and r["budget"] == budget]
        if rows:
            out.append(max(rows, key=lambda r: r["informative_per_1k"]))
    return out


def write_outputs(result: dict, out_dir: Path) -> dict[str, Path]:
    """Write results.json, summary.md and the metric-vs-budget plot; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "md": out_dir / "summary.md",
             "png": out_dir / "informative_vs_budget.png"}
    atomic_write_text(paths["json"], json.dumps(result, indent=1))
    atomic_write_text(paths["md"], summary_markdown(result))
    plot(result["summary"], paths["png"])
    return paths


def summary_markdown(result: dict) -> str:
    """The comparison as Markdown tables (what docs/schedule.md quotes)."""
    s, cfg = result["summary"], result["config"]
    groups = ("fixed at the budget" if cfg.get("fixed_group")
              else "0 or in [%d, %d]" % (cfg["min_rollouts"], cfg["max_rollouts"]))
    lines = [f"Pool {cfg['pool_factor']:g}x batch of {cfg['batch_prompts']}, {cfg['replicates']} worlds per snapshot, "
             f"seed {cfg['seed']}, groups {groups}.",
             "", "| predictor | rule | budget | informative / 1k rollouts | x uniform GRPO | V0 utility (uniform) | wasted % |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in sorted(s["allocation"], key=lambda r: (r["budget"], r["predictor"], -r["informative_per_1k"])):
        lines.append(f"| {r['predictor']} | {r['rule']} | {r['budget']} | {r['informative_per_1k']:.1f} ± "
                     f"{r['informative_per_1k_se']:.1f} | {r['ratio_vs_uniform']:.2f} | {r['v0_utility']:.1f} "
                     f"({r['uniform_v0_utility']:.1f}) | {100 * r['wasted_share']:.1f} |")
    lines += ["", "| budget | uniform GRPO informative / 1k | uniform wasted % | DAPO extra generation | "
                  "DAPO informative / 1k generated |", "|---:|---:|---:|---:|---:|"]
    for r in s["uniform"]:
        lines.append(f"| {r['budget']} | {r['informative_per_1k']:.1f} | {100 * r['wasted_share']:.1f} | "
                     f"{100 * r['dapo_extra']:.0f}% | {r['dapo_informative_per_1k']:.1f} |")
    k0, k1 = cfg["fused_rollouts"], cfg["full_rollouts"]
    lines += ["", f"| predictor | prior MSE | mean@{k0} | fused@{k0} | mean@{k1} | prior rejected % | "
                  f"controller rollouts | controller MSE | mean of same rollouts |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in s["mse"]:
        lines.append(f"| {r['predictor']} | {r['mse_prior']:.4f} | {r['mse_mean_small']:.4f} | "
                     f"{r['mse_fused_small']:.4f} | {r['mse_mean_full']:.4f} | {100 * r['prior_rejected']:.1f} | "
                     f"{r['ctrl_rollouts']:.2f} | {r['mse_ctrl']:.4f} | {r['mse_mean_same']:.4f} |")
    notes = result.get("notes", [])
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Informative groups per 1,000 rollouts and wasted share vs budget,
    one line per (rule, predictor), uniform GRPO and DAPO as references."""
    from preroll._optional import require

    require("matplotlib", what="drawing a plot").use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5))
    preds = sorted({r["predictor"] for r in summary["allocation"]})
    rules = sorted({r["rule"] for r in summary["allocation"]})
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D", "v"]
    cmap = plt.get_cmap("tab10")
    for i, pred in enumerate(preds):
        for j, rule in enumerate(rules):
            rows = sorted((r for r in summary["allocation"] if r["predictor"] == pred and r["rule"] == rule),
                          key=lambda r: r["budget"])
            if not rows:
                continue
            b = [r["budget"] for r in rows]
            kw = dict(color=cmap(i), linestyle=styles[j % len(styles)], marker=markers[j % len(markers)],
                      label=f"{rule} / {pred}", alpha=0.85)
            axes[0].plot(b, [r["informative_per_1k"] for r in rows], **kw)
            axes[1].plot(b, [100 * r["wasted_share"] for r in rows], **kw)
    uni = sorted(summary["uniform"], key=lambda r: r["budget"])
    b = [r["budget"] for r in uni]
    axes[0].plot(b, [r["informative_per_1k"] for r in uni], color="black", linewidth=2.5, label="uniform GRPO")
    axes[0].plot(b, [r["dapo_informative_per_1k"] for r in uni], color="gray", linewidth=2.5,
                 linestyle="--", label="DAPO (per generated)")
    axes[1].plot(b, [100 * r["wasted_share"] for r in uni], color="black", linewidth=2.5, label="uniform GRPO")
    axes[0].set_ylabel("informative groups per 1,000 rollouts")
    axes[1].set_ylabel("% of rollouts in dead groups")
    for ax in axes:
        ax.set_xlabel("budget (rollouts per batch prompt)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(b, [str(v) for v in b])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.suptitle("Rollout allocation on real DAPO-Math success rates")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    save_figure(fig, path, dpi=110)
