"""``preroll bench route --stream``: live routing under bandit feedback from an empty history, or from labels
with ``--labels`` (a table of priced models: LLMRouter's nine or a user's own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def bench_stream(*, data, seeds: list[int], max_prompts, encoder: str, cache_dir, out: Path, output_tokens: int,
                 lam: float, holdout: float, batch: int, explore: dict[str, Any], baseline_encoder: str | None = None,
                 full_info: bool = True, last: int = 3000, head: str = "auto", labels: int = 0,
                 labels_from: str = "topics") -> list[dict[str, Any]]:
    import json

    from rich.console import Console

    from preroll.bench.route_stream import (
        StreamBenchConfig,
        plot_regret,
        run_stream_bench,
    )
    from preroll.outputs import atomic_write_text, check_output

    check_output(out, inputs=(data,), folder=True)
    console = Console(width=None if Console().is_terminal else 180)
    results = []
    for seed in seeds:
        cfg = StreamBenchConfig(root=None if data is None else str(data), seed=seed, holdout=holdout,
                                max_prompts=max_prompts, encoder=encoder, cache_dir=str(cache_dir),
                                output_tokens=output_tokens, lam=lam, batch=batch, last=last, explore=dict(explore),
                                baseline_encoder=baseline_encoder, full_info=full_info, head=head, labels=labels,
                                labels_from=labels_from)
        def progress(msg: str, seed: int = seed) -> None:
            console.print(f"[dim]seed {seed}: {msg}[/dim]")

        result = run_stream_bench(cfg, progress=progress)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / f"results-stream-seed{seed}.json", json.dumps(result, indent=1))
        png = plot_regret(result, out / f"regret-seed{seed}.png")
        print_stream(result, console)
        console.print(f"wrote {out / f'results-stream-seed{seed}.json'} and {png}")
        results.append(result)
    return results


def print_stream(result: dict[str, Any], console) -> None:
    from rich.table import Table

    n, last = result["n_stream"], result["last"]
    t = Table(title=f"Stream of {n} requests, bandit feedback from {start_of(result)}, lam {result['config']['lam']:g}, "
                    f"seed {result['config']['seed']}")
    for col in ("method", "quality (all)", "mean cost", f"quality (last {last})",
                f"vs best single on last {last} (points)"):
        t.add_column(col, justify="left" if col == "method" else "right")
    for r in result["rows"]:
        t.add_row(r["method"], f"{r['quality']:.4f}", f"{r['cost']:.3g}", f"{r['quality_last']:.4f}",
                  f"{100 * r['vs_best_single_last']:+.2f}")
    console.print(t)
    console.print(f"best single on the last {last}: {result['best_single_last']} "
                  f"({result['best_single_last_quality']:.4f})")
    e = result["info"]["explore router"]
    console.print(f"explore router: {e['explored']} of {e['decisions']} decisions explored "
                  f"({100 * e['explored_share']:.1f}%; last {last}: {100 * result['explored_last_share']:.1f}%), "
                  f"extra cost vs greedy {e['extra_cost']:.3g} ({e['extra_cost_per_1k']:.3g} per 1k), "
                  f"{e['refits']} refits ({e['refit_s']:.0f} s); route {e['route_ms_per_prompt']:.2f} ms/prompt, "
                  f"observe {e['observe_ms_per_outcome_incremental']:.3f} ms/outcome incremental "
                  f"({e['observe_ms_per_outcome_with_refits']:.1f} with inline refits)")
    if "greedy_quality_last" in result:
        g = result["greedy_quality_last"] - result["best_single_last_quality"]
        console.print(f"explore router on the last {last}: its greedy choices {result['greedy_quality_last']:.4f} "
                      f"({100 * g:+.2f} points vs best single: what it learnt); exploring cost "
                      f"{100 * result['explore_cost_last']:+.2f} points there")
    f = result["frozen"]
    line = (f"frozen, {f['n']} held-out prompts, greedy: router {f['router']:.4f} vs best single in hindsight "
            f"{f['best_single_in_hindsight']} {f['best_single_quality']:.4f} ({100 * f['vs_best_single']:+.2f} "
            f"points); best on stream {f['best_on_stream']} {f['best_on_stream_quality']:.4f}")
    if "full_information_router" in f:
        line += f"; full-information router {f['full_information_router']:.4f}"
    if "labels_only_router" in f:
        line += f"; fitted on labels, never updated {f['labels_only_router']:.4f}"
    console.print(line)


def start_of(result: dict[str, Any]) -> str:
    """What the stream's routers started from: an empty history, or labels (and how the traffic differs)."""
    labels = result.get("labels")
    if not labels:
        return "an empty history"
    text = f"labels of {labels['n']} prompts"
    if labels["new_topics"]:
        text += f" ({100 * labels['new_share']:.0f}% of the traffic from topics absent from them)"
    return text
