"""The online prompt book inside a long, drifting GRPO run, and its overhead (formerly ``preroll bench online``).

    python -m experiments.online --seeds 2                       # the grounded replay (from the repository root)
    python -m experiments.online --prompts 20000,250000,1000000  # the book at scale
    python -m experiments.online --help                          # every option

A reproduction of published numbers (RESULTS.md, docs/online.md) on worlds fitted to the bundled DAPO-Math
histories; it takes no user data, so it lives beside the package, not in it. Options are those of the former
command; errors are one line (exit 2), as in the ``preroll`` CLI.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from preroll.cli import errors


def bench_online(
    epochs: int = typer.Option(8, min=1, help="Passes of the data loader over the dataset."),
    batch: int = typer.Option(256, min=1, help="Prompts per trainer step (groups rolled out)."),
    pool_factor: int = typer.Option(4, min=1, help="Candidates offered per chosen prompt."),
    group_size: int = typer.Option(8, min=2, help="Rollouts per chosen prompt."),
    variants: int = typer.Option(4, min=1, help="Synthetic prompts per real DAPO-Math text (2,722 texts)."),
    share: float = typer.Option(0.5, min=0.0, max=1.0, help="Latent difficulty a variant shares with its text."),
    seeds: int = typer.Option(1, min=1, help="Simulated runs (seeds first_seed..first_seed+N-1)."),
    first_seed: int = typer.Option(0, min=0, help="First seed (keep seeds that no tuning used for final numbers)."),
    samplers: str = typer.Option(",".join(("uniform", "dapo", "memory", "book-no-neighbours", "book", "oracle")),
                                 help="Comma-separated samplers (uniform is the reference). Also: book-earlier, "
                                      "book-other (warm starts from the same policy's earlier-step outcomes or "
                                      "another policy's), book-probe (a probe before step 0), screen, book-screen, "
                                      "book-other-screen (screening passes kept in the group)."),
    probe: int = typer.Option(256, min=1, help="book-probe: prompts rolled out before the first step (paid)."),
    screen: int = typer.Option(2, min=1, help="Screening samplers: rollouts per screened prompt."),
    overhead: bool = typer.Option(True, "--overhead/--no-overhead", help="Also time the book at trainer scale."),
    overhead_pool: int = typer.Option(2048, min=2, help="Overhead: candidate pool per step."),
    overhead_history: int = typer.Option(50_000, min=0, help="Overhead: history rows recorded before timing."),
    selection: str = typer.Option("value", help="The book's selection (OnlineSettings.selection): value or coverage."),
    coverage_bar: float = typer.Option(0.5, min=0.0, max=1.0, help="OnlineSettings.coverage_bar (selection=coverage)."),
    prompts: str = typer.Option("", help="Scale benchmark instead of the replay: the book's start-up, peak memory, "
                                "per-step time and graph recall on this many synthetic prompts (comma-separated "
                                "sizes, e.g. 20000,250000,1000000)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny run for tests: 300 texts x 2, batch 16, 3 epochs."),
    out: Path = typer.Option(Path("runs/bench-online"), help="Output folder for results.json and online.png."),
) -> None:
    """Samplers at equal rollouts in a multi-epoch run whose rates drift as fitted on DAPO-Math."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from experiments.online_replay import OnlineBenchConfig, measure_overhead, simulate, write_outputs

    console = Console(width=max(shutil.get_terminal_size((140, 24)).columns, 120))
    if prompts.strip():
        bench_scale(prompts, out, console, quick=quick)
        return
    cfg = OnlineBenchConfig(variants=variants, share=share, batch=batch, pool_factor=pool_factor,
                            group_size=group_size, epochs=epochs, seeds=tuple(range(first_seed, first_seed + seeds)),
                            samplers=tuple(s.strip() for s in samplers.split(",") if s.strip()), quick=quick,
                            book_settings=book_settings(selection, coverage_bar), probe=probe, screen=screen)
    if quick:
        cfg.variants, cfg.batch, cfg.epochs, cfg.max_anchors = 2, 16, 3, 300
    try:
        cfg.validate()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with Progress(TextColumn("[bold]training steps"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=True) as prog:
        task = prog.add_task("sim", total=None)
        result = simulate(cfg, progress=lambda d, t: prog.update(task, completed=d, total=t),
                          log=lambda m: console.print(f"[dim]{m}[/dim]"))
    if overhead:
        kw = dict(n_prompts=2000, pool=256, batch=64, history_rows=2000, steps=3) if quick else dict(
            pool=overhead_pool, batch=overhead_pool // pool_factor, history_rows=overhead_history)
        with console.status("timing the book at trainer scale"):
            result["overhead"] = asdict(measure_overhead(**kw))
    paths = write_outputs(result, out)
    print_tables(result, console)
    console.print(f"wrote {paths['json']} and {paths['png']}")


def bench_scale(prompts: str, out: Path, console, *, quick: bool) -> None:
    """``--prompts``: one scale measurement per size, a table, and ``scale.json`` in ``out``."""
    from experiments.online_scale import measure_scale, print_scale, to_json
    from preroll.outputs import atomic_write_text

    try:
        sizes = [int(x.replace("_", "")) for x in prompts.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--prompts must be comma-separated whole numbers (got {prompts!r})") from None
    if any(n < 100 for n in sizes):
        raise typer.BadParameter("--prompts: each size must be at least 100")
    results = []
    for n in sizes:
        kw = dict(steps=3, early_rows=1000, recall_sample=200) if quick else {}
        results.append(measure_scale(n, log=lambda m: console.print(f"[dim]{m}[/dim]"), **kw))
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "scale.json", to_json(results))
    print_scale(results, console)
    console.print(f"wrote {out / 'scale.json'}")


def book_settings(selection: str, coverage_bar: float) -> dict:
    """OnlineSettings fields for the book samplers; only what differs from the book's defaults."""
    from preroll.online import OnlineInputError
    from preroll.online.settings import build_settings

    fields = {} if selection == "value" else {"selection": selection, "coverage_bar": coverage_bar}
    try:
        build_settings(**fields)
    except OnlineInputError as exc:
        raise typer.BadParameter(str(exc)) from None
    return fields


def print_tables(result: dict, console) -> None:
    from rich.table import Table

    c = result["config"]
    t = Table(title=f"Informative groups per rollout generated: {result['n_prompts']} prompts, batch {c['batch']}, "
                    f"pool {c['pool_factor']}x, groups of {c['group_size']}, {c['epochs']} epochs "
                    f"x {result['steps_per_epoch']} steps, seeds {len(c['seeds'])}")
    for col in ("sampler", "per 1k rollouts", "epoch 1, x uniform", "after epoch 1, x uniform", "all, x uniform",
                "zero-signal groups %", "rollouts/step"):
        t.add_column(col, justify="left" if col == "sampler" else "right")
    for r in result["samplers"]:
        t.add_row(r["sampler"], f"{r['informative_per_1k_rollouts']:.1f}", f"{r['x_uniform_epoch1']:.2f}",
                  f"{r['x_uniform_after_epoch1']:.2f}", f"{r['x_uniform_all']:.2f}",
                  f"{100 * r['zero_signal_share']:.1f}", f"{r['rollouts_per_step']:.0f}")
    console.print(t)
    e = Table(title="Per epoch: informative groups per rollout, x uniform")
    e.add_column("sampler")
    uni = result["per_epoch"]["uniform"]
    for i in range(len(uni)):
        e.add_column(str(i + 1), justify="right")
    for s, v in result["per_epoch"].items():
        e.add_row(s, *[f"{x / u:.2f}" for x, u in zip(v, uni)])
    console.print(e)
    p = Table(title="Next-step prediction on every pool prompt (held-out group of the true rate)")
    for col in ("book", "prompts", "n", "AUC", "Brier", "ECE", "P(informative) pred / obs", "ECE informative",
                "beta-binomial log-loss"):
        p.add_column(col, justify="left" if col in ("book", "prompts") else "right")
    for name, parts in result["prediction"].items():
        for part, m in parts.items():
            if m:
                p.add_row(name, part, str(m["n"]), f"{m['auc']:.3f}", f"{m['brier']:.3f}", f"{m['ece']:.3f}",
                          f"{m['informative_predicted']:.3f} / {m['informative_observed']:.3f}",
                          f"{m['informative_ece']:.3f}", f"{m['betabinom_logloss']:.3f}")
    console.print(p)
    for name, st in result.get("book_stats", {}).items():
        done = st["revisits_informative"] + st["revisits_dead"]
        console.print(f"{name}: selections {st['selections']}; revisits came back informative "
                      f"{st['revisits_informative']}/{done}; prior concentration {st['prior_concentration']:.2f}, "
                      f"drift discount {st['drift_decay']:.2f}/step; "
                      f"{1000 * result['book_seconds_per_step'].get(name, float('nan')):.0f} ms/step in the simulation")
    o = result.get("overhead")
    if o:
        ov = Table(title=f"Overhead: {o['n_prompts']} prompts, pool {o['pool']}, batch {o['batch']}, "
                         f"{o['history_rows']} history rows before timing")
        for col in ("record s", "predict s", "select s", "step s (mean)", "step s (max)", "graph once s",
                    "peak traced MB", "max RSS MB", "save s", "state MB"):
            ov.add_column(col, justify="right")
        ov.add_row(*(f"{o[k]:.3f}" for k in ("record_seconds", "predict_seconds", "select_seconds", "step_seconds",
                                               "step_seconds_max", "graph_seconds")),
                   f"{o['peak_traced_mb']:.1f}", f"{o['max_rss_mb']:.0f}", f"{o['save_seconds']:.2f}",
                   f"{o['state_mb']:.1f}")
        console.print(ov)
    w = result["world"]
    console.print(f"[dim]world fitted on DAPO-Math: start logit ~ N({w['mu']:.2f}, {w['tau']:.2f}), global drift "
                  f"{w['shift_per_step']:.4f} logit per training step, per-prompt drift sd "
                  f"{w['sigma_per_sqrt_step']:.3f}/sqrt(step); same-prompt r measured "
                  + ", ".join(f"{q['from']}->{q['to']} {q['r']:.2f}" for q in w['measured']['same_prompt_correlation'])
                  + "; simulated " + ", ".join(f"{q['r']:.2f}" for q in w['fitted']['same_prompt_correlation'])
                  + "[/dim]")


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
app.command()(bench_online)
errors.install(app)   # user errors: one line, exit 2


def main(argv: list[str] | None = None) -> None:
    app(args=argv)


if __name__ == "__main__":
    main()
