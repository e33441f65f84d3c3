"""Closed-loop TRL GRPO benchmark on CPU: uniform vs per-prompt memory vs DAPO-style filtering vs preroll.

    HF_HUB_OFFLINE=1 nice python -m experiments.trl_closed_loop --out bench-out/trl     (from the repository root)

Prints a table (mean and per-seed values over the seeds), writes results.json
and trl_closed_loop.png into --out (results.json after every run, so a stopped
run still reports with --from-json; several results.json of processes run side by side, e.g. on disjoint seeds,
merge with --from-json A B ...). A run of the default 12,288 rollouts (384 train prompts, 4 epochs) took 20-45 s
on one quiet core and 2-6 minutes at load average 10-24 on the shared 2-core machine, plus ~2 minutes of
pre-training (RESULTS.md). See docs/trl.md and experiments/trl_loop.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path


def main(argv=None) -> int:
    from experiments.trl_loop import METHODS, LoopConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench-out/trl"))
    p.add_argument("--seeds", type=int, nargs="+", default=list(LoopConfig.seeds))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--budget", type=int, default=LoopConfig.budget, help="rollouts per run")
    p.add_argument("--n-train", type=int, default=LoopConfig.n_train, help="train prompts (revisited every epoch)")
    p.add_argument("--group-size", type=int, default=LoopConfig.num_generations, help="G, rollouts per prompt")
    p.add_argument("--prompts-per-step", type=int, default=LoopConfig.prompts_per_step,
                   help="B, prompts per generation batch (each rolled out G times)")
    p.add_argument("--eval-every", type=int, default=LoopConfig.eval_every, help="rollouts between held-out evals")
    p.add_argument("--encoder", default=LoopConfig.encoder,
                   help="preroll's neighbour encoder spec (preroll.encoders.get_encoder), e.g. lexical, lexical+stats")
    p.add_argument("--book", nargs="*", default=None, metavar="FIELD=VALUE",
                   help="OnlineSettings fields for both book methods, replacing the benchmark's "
                        f"({' '.join(f'{k}={v}' for k, v in LoopConfig().book.items())}); none given = the "
                        "book's own defaults (numbers parsed as JSON)")
    p.add_argument("--coverage-bar", type=float, default=LoopConfig().coverage["coverage_bar"],
                   help="preroll-coverage: OnlineSettings.coverage_bar (the expected informativeness a prompt needs)")
    p.add_argument("--pretrain-steps", type=int, default=LoopConfig.pretrain_steps)
    p.add_argument("--threads", type=int, default=LoopConfig.threads)
    p.add_argument("--learning-rate", type=float, default=LoopConfig.learning_rate)
    p.add_argument("--loss-type", default=LoopConfig.loss_type, help="TRL GRPOConfig.loss_type, for every method")
    p.add_argument("--scale-rewards", default=LoopConfig.scale_rewards, choices=("group", "batch", "none"),
                   help="TRL GRPOConfig.scale_rewards, for every method")
    p.add_argument("--policy-dir", type=Path, default=None,
                   help="reuse the pre-trained policy saved here (pre-train and save it there when absent)")
    p.add_argument("--from-json", type=Path, nargs="+", default=None,
                   help="print the table and draw the PNG from results.json files of earlier (possibly partial) runs; "
                        "several are merged (same config, runs of each method and seed once) and saved to --out")
    a = p.parse_args(argv)
    cfg = LoopConfig(seeds=tuple(a.seeds), methods=tuple(a.methods), budget=a.budget, n_train=a.n_train,
                     num_generations=a.group_size, prompts_per_step=a.prompts_per_step,
                     eval_every=a.eval_every, encoder=a.encoder,
                     book=LoopConfig().book if a.book is None else book_fields(a.book, p),
                     pretrain_steps=a.pretrain_steps, threads=a.threads, learning_rate=a.learning_rate,
                     loss_type=a.loss_type, scale_rewards=a.scale_rewards,
                     coverage={**LoopConfig().coverage, "coverage_bar": a.coverage_bar})
    if cfg.budget < cfg.eval_every:
        print(f"--budget must be at least {cfg.eval_every} rollouts", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()   # no per-run "Loading weights" bars in the log
    from rich.console import Console
    from rich.progress import Progress

    from experiments.trl_loop import pretrained_policy, run_one, save_json, summarise

    console = Console(width=150)
    if a.from_json is not None:
        from experiments.trl_loop import load_json

        from experiments.trl_loop import merge_results, save_json, summarise

        results, cfg = merge_results([load_json(path) for path in a.from_json])
        a.out.mkdir(parents=True, exist_ok=True)
        if len(a.from_json) > 1:
            save_json(results, summarise(results, cfg), cfg, a.out / "results.json")
        return report(results, cfg, a.out, console)
    results = []
    with tempfile.TemporaryDirectory(prefix="preroll-trl-") as tmp, Progress(console=console) as progress:
        work = Path(tmp)
        policy = a.policy_dir or work / "policy"
        if not (policy / "config.json").exists():
            task = progress.add_task("pre-training the policy", total=cfg.pretrain_steps)
            pretrained_policy(cfg, policy, progress=lambda s: progress.update(task, completed=s + 1))
        runs = progress.add_task("GRPO runs", total=len(cfg.seeds) * len(cfg.methods))
        for seed in cfg.seeds:
            for method in cfg.methods:
                r = run_one(method, seed, cfg, policy, work)
                results.append(r)
                progress.console.print(f"{method:8s} seed {seed}: held-out reward {r.heldout_sampled[0]:.3f} -> "
                                       f"{r.heldout_sampled[-1]:.3f} (greedy {r.heldout[0]:.3f} -> {r.heldout[-1]:.3f}) "
                                       f"after {r.rollouts[-1]} rollouts, {r.tokens[-1]:,} tokens, {r.train_seconds:.0f} s training, dead groups {r.dead_share:.2f}, "
                                       f"{r.seconds_per_step:.2f} s/step, train-prompt reward {r.train_sampled:.3f}, "
                                       + coverage_text(r.coverage(cfg.n_train))
                                       + "".join(f", {k} {d}/{n} dead" for k, (d, n) in r.dead_by_reason.items()))
                progress.advance(runs)
                save_json(results, summarise(results, cfg), cfg, a.out / "results.json")  # partial results survive
    save_json(results, summarise(results, cfg), cfg, a.out / "results.json")
    return report(results, cfg, a.out, console)


def _mean_text(values, fmt: str) -> str:
    import numpy as np

    values = [v for v in values or [] if v is not None]
    return fmt.format(np.mean(values)) if values else "-"


def coverage_text(c: dict) -> str:
    if not c["prompts"]:
        return "no informative groups trained"
    return (f"informative groups on {c['prompts']}/{c['of']} prompts (top 10: {c['top_share']:.0%}, max {c['max']}, "
            f"{c['mean_visits']:.1f} groups per prompt trained)")


def book_fields(pairs: list[str], parser) -> dict:
    """``FIELD=VALUE`` pairs as a dict (values parsed as JSON when they parse, else kept as strings)."""
    import json

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"--book expects FIELD=VALUE (got {pair!r})")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    from preroll.online import OnlineInputError
    from preroll.online.settings import build_settings

    try:
        build_settings(**out)
    except OnlineInputError as exc:
        parser.error(f"--book: {exc}")
    return out


def report(results, cfg, out: Path, console) -> int:
    import numpy as np
    from rich.table import Table

    from experiments.trl_loop import against_uniform_over_the_run, paired_difference, plot, summarise, targets

    summary = summarise(results, cfg)
    seeds = sorted({r.seed for r in results})
    table = Table(title=f"TRL GRPO closed loop: {cfg.budget} rollouts per run, {cfg.n_train} train prompts, "
                        f"B={cfg.prompts_per_step}, G={cfg.num_generations}, lr {cfg.learning_rate:g}, seeds {seeds}")
    for col in ("method", "held-out reward start", "final (mean)", "final per seed", "last quarter (mean)",
                "greedy final per seed",
                "zero-signal groups", "rollouts", "tokens generated (mean)", "train wall-clock s (mean)", "s/step",
                "steps"):
        table.add_column(col)
    for m, s in summary.items():
        table.add_row(m, f"{np.mean(s['start_sampled']):.3f}", f"{np.mean(s['final_sampled']):.3f}",
                      " ".join(f"{x:.3f}" for x in s["final_sampled"]), f"{np.mean(s['late_sampled']):.3f}",
                      " ".join(f"{x:.3f}" for x in s["final"]),
                      f"{np.mean(s['dead_share']):.2f} ± {np.std(s['dead_share']):.2f}",
                      f"{int(np.mean(s['rollouts']))}", _mean_text(s.get("tokens"), "{:,.0f}"),
                      _mean_text(s.get("train_seconds"), "{:.0f}"),
                      f"{np.mean(s['seconds_per_step']):.2f}", f"{int(np.mean(s['steps']))}")
    console.print(table)
    spread = Table(title="Where the gradient went: informative groups trained on, per seed (dapo: the kept groups)")
    for col in ("method", "prompts with any", "top-10 share", "most on one prompt", "train-prompt reward"):
        spread.add_column(col)
    for m, s in summary.items():
        cov = s.get("coverage", [])
        spread.add_row(m, " ".join(str(c.get("prompts", 0)) for c in cov),
                       " ".join(f"{c.get('top_share', float('nan')):.2f}" for c in cov),
                       " ".join(str(c.get("max", 0)) for c in cov),
                       " ".join(f"{x:.3f}" for x in s.get("train_sampled", [])))
    console.print(spread)
    lengths = Table(title="By task length k (difficulty): final held-out reward / informative groups trained, "
                          "mean over seeds")
    lengths.add_column("method")
    for k in range(1, cfg.k_max + 1):
        lengths.add_column(f"k={k}")
    for m, s in summary.items():
        bl = s.get("by_length") or {}
        if bl:
            lengths.add_row(m, *(f"{h:.3f} / {g:.0f}" for h, g in zip(bl["heldout"], bl["informative"])))
    console.print(lengths)
    run_table = Table(title="Held-out reward against rollouts, per seed: mean over the run minus uniform's; rollouts, "
                            "generated tokens and training seconds until it first reached uniform's final level "
                            "(uniform's last-quarter mean)")
    for col in ("method", "curve mean - uniform", "rollouts to reach", "tokens to reach", "seconds to reach"):
        run_table.add_column(col)

    def reach(rows, key, fmt):
        return " ".join("never" if x[key] is None else fmt.format(x[key]) for x in rows)

    for m in summary:
        rows = against_uniform_over_the_run(results, m)
        if rows:
            run_table.add_row(m, " ".join(f"{x['curve_gap']:+.4f}" for x in rows),
                              reach(rows, "rollouts_to_reach", "{}"), reach(rows, "tokens_to_reach", "{:,}"),
                              reach(rows, "seconds_to_reach", "{:.0f}"))
    console.print(run_table)
    from experiments.trl_loop import paired_tests

    for m in summary:
        if m == "uniform":
            continue
        tests = paired_tests(results, m)
        if not tests:
            continue
        t = Table(title=f"{m} vs uniform, paired over seeds {tests[next(iter(tests))]['seeds']}: Wilcoxon signed-rank "
                        "and paired t (a run that never reached uniform's level counts one interval past its budget)")
        for col in ("quantity", f"{m} (mean)", "uniform (mean)", "mean diff [95% CI]", f"{m} better on",
                    "Wilcoxon p", "paired t p"):
            t.add_column(col)
        for name, e in tests.items():
            t.add_row(name, f"{np.mean(e['method']):.4g}", f"{np.mean(e['baseline']):.4g}",
                      f"{e['mean_diff']:+.4g} [{e['ci95'][0]:+.4g}, {e['ci95'][1]:+.4g}]",
                      f"{e['method_better_on']}/{e['n']}", f"{e['wilcoxon_p']:.3f}", f"{e['t_p']:.3f}")
        console.print(t)
    for m in summary:
        if m != "uniform":
            pairs = paired_difference(results, m)
            if pairs:
                console.print(f"{m} - uniform, final held-out reward per seed (± paired se): " + ", ".join(
                    f"seed {x['seed']}: {x['diff']:+.3f} ± {x['se']:.3f}" for x in pairs))
    from experiments.trl_loop import BOOK_METHODS

    for method in BOOK_METHODS:
        for name, ok in targets(summary, results, method).items():
            console.print(f"{method}: target {name}: {'met' if ok else 'NOT met'}")
    plot(results, summary, out / "trl_closed_loop.png")
    console.print(f"wrote {out / 'trl_closed_loop.png'} (runs: {out / 'results.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
