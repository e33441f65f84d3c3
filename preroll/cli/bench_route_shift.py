"""``preroll bench route`` under shift: run the protocols of :mod:`preroll.bench.route_shift` and print their tables.

Called by :func:`preroll.cli.bench_route.bench_route` when ``--protocol``
names any protocol beside ``random`` (the default does).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer


def parse_protocols(text: str) -> list[str]:
    from preroll.bench.route_shift import check_protocols

    try:
        return check_protocols(text.split(","))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--protocol") from None


def parse_ints(text: str | None, default: int, option: str) -> tuple[int, ...]:
    if text is None:
        return (default,)
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(f"expected integers separated by commas, got {text!r}", param_hint=option) from None
    if not out:
        raise typer.BadParameter("no seed given", param_hint=option)
    return out


def parse_heads(text: str) -> tuple[str, ...]:
    heads = tuple(h.strip() for h in text.split(",") if h.strip())
    bad = [h for h in heads if h not in ("joint", "ensemble", "logistic", "knn", "difficulty")]
    if not heads or bad:
        raise typer.BadParameter(f"choose among joint, ensemble, logistic, knn, difficulty (got {text!r}); the average of "
                                 "joint and ensemble is added when both run", param_hint="--heads")
    return heads


def _console():
    from rich.console import Console

    return Console(width=None if Console().is_terminal else 200)


def nine(*, data: Path | None, protocols: list[str], seeds: tuple[int, ...], heads: tuple[str, ...], folds: int,
         max_folds: int | None, max_prompts: int | None, encoder: str, cache_dir: Path, output_tokens: int,
         alpha: float, out: Path) -> None:
    from preroll.bench.route_shift_run import ShiftBenchConfig, run_shift_bench
    from preroll.outputs import atomic_write_text, check_output

    check_output(out, inputs=(data,), folder=True)
    console = _console()
    cfg = ShiftBenchConfig(root=None if data is None else str(data), folds=folds, seeds=seeds,
                           protocols=tuple(protocols), max_prompts=max_prompts, encoder=encoder,
                           cache_dir=str(cache_dir), output_tokens=output_tokens, heads=heads, alpha=alpha,
                           max_folds=max_folds)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results-shift.json"

    def save(partial):
        atomic_write_text(path, json.dumps(partial, indent=1))

    result = run_shift_bench(cfg, progress=lambda m: console.print(f"[dim]{m}[/dim]"), checkpoint=save)
    print_nine_shift(result, console)
    console.print(f"wrote {path}")


def print_nine_shift(result: dict[str, Any], console=None) -> None:
    """Per (protocol, seed): each variant's gain, cost to match, graded slice, ECE; then the worst-case ranking."""
    from rich.table import Table

    console = console or _console()
    for run in result["runs"]:
        t = Table(title=f"{run['protocol']}, fold seed {run['seed']}: {run['n_test_rows']} pooled test rows "
                        f"(oracle +{100 * run['oracle_gain']:.1f})")
        for c in ("router", "gain @lam=0 (points ± se)", "per fold", "cost to match best single",
                  "graded rows gain", "far share"):
            t.add_column(c, justify="left" if c == "router" else "right")
        for name, m in run["methods"].items():
            ctm = "never" if m["cost_to_match"] is None else f"{100 * m['cost_to_match']:.0f}%"
            gg = "-" if m["graded_gain"] is None else f"{100 * m['graded_gain']:+.1f} (n={m['graded_n']})"
            t.add_row(name, f"{100 * m['gain']:+.2f} ± {100 * m['gain_se']:.2f}",
                      " ".join(f"{100 * g:+.1f}" for g in m["fold_gains"]), ctm, gg,
                      "-" if "far_share" not in m else f"{100 * m['far_share']:.0f}%")
        console.print(t)
        for head, e in run["ece"].items():
            pm = e["per_model"]
            console.print(f"  ECE {head}: mean {sum(pm.values()) / len(pm):.3f}, max {max(pm.values()):.3f}; far rows "
                          f"(n={e['far_n']}) mean {_mean(e['far_rows']):.3f} -> shrunk {_mean(e['far_rows_shrunk']):.3f}")
    s = Table(title="Worst case over protocols and fold seeds (gain at lam = 0, points; cost to match the best single)")
    for c in ("router", "worst gain", "mean gain", "worst cost to match", "graded rows gain (mean)"):
        s.add_column(c, justify="left" if c == "router" else "right")
    for e in result["summary"]:
        w = e["worst_cost_to_match"]
        s.add_row(e["name"], f"{100 * e['worst_gain']:+.2f}", f"{100 * e['mean_gain']:+.2f}",
                  "never (some run)" if w is None else f"{100 * w:.0f}%",
                  "-" if e["graded_gain_mean"] is None else f"{100 * e['graded_gain_mean']:+.2f}")
    console.print(s)


def _mean(d: dict[str, float]) -> float:
    import numpy as np

    v = [x for x in d.values() if not np.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def pair(*, specs, data: Path | None, protocols: list[str], seeds: tuple[int, ...], heads: tuple[str, ...],
         folds: int, max_folds: int | None, max_prompts: int | None, encoder: str, cache_dir: Path, alpha: float,
         out: Path) -> None:
    from rich.table import Table

    from preroll.bench.route_shift_pair import PairShiftConfig, run_pair_shift
    from preroll.outputs import atomic_write_text, check_output

    check_output(out, inputs=(data,), folder=True)
    console = _console()
    protocols = ["group" if p.startswith("cluster") else p for p in protocols]  # MMLU: subjects are the clusters
    cfg = PairShiftConfig(models=specs, root=None if data is None else str(data), folds=folds, seeds=seeds,
                          protocols=tuple(dict.fromkeys(protocols)), max_prompts=max_prompts, encoder=encoder,
                          cache_dir=str(cache_dir), heads=heads, alpha=alpha, max_folds=max_folds)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results-shift.json"
    result = run_pair_shift(cfg, progress=lambda m: console.print(f"[dim]{m}[/dim]"),
                            checkpoint=lambda r: atomic_write_text(path, json.dumps(r, indent=1)))
    t = Table(title=f"MMLU pair under shift, {result['n_prompts']} prompts: APGR of the gain score, pooled folds")
    runs = result["runs"]
    t.add_column("router")
    for r in runs:
        t.add_column(f"{r['protocol']}/s{r['seed']}", justify="right")
    t.add_column("worst", justify="right")
    t.add_column("worst fold", justify="right")
    for e in result["summary"]:
        t.add_row(e["name"], *[f"{r['methods'][e['name']]['apgr']:.3f}" for r in runs], f"{e['worst_apgr']:.3f}",
                  f"{e['worst_fold_apgr']:.3f}")
    console.print(t)
    console.print(f"wrote {path}")
