"""``preroll bench route``: the routing benchmark on RouteLLM's MMLU data.

Heavy imports (numpy, sklearn, the encoder) happen inside the command so
``preroll --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

#: Example prices, in the ratio of the two models' per-million-token prices
#: quoted by RouteLLM (0.24 vs 24.7 USD). They are the command's defaults
#: only, shown in --help and overridable; the library has no price list.
EXAMPLE_COSTS = ["mistralai/Mixtral-8x7B-Instruct-v0.1=0.24", "gpt-4-1106-preview=24.7"]

QUICK_PROMPTS = 2000


def _parse_prices(items: list[str], option: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        name, sep, price = item.rpartition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected MODEL=PRICE, got {item!r}", param_hint=option)
        try:
            out[name.strip()] = float(price)
        except ValueError:
            raise typer.BadParameter(f"price of {name!r} is not a number: {price!r}", param_hint=option) from None
    return out


def bench_route(
    cost: list[str] = typer.Option(EXAMPLE_COSTS, "--cost", metavar="MODEL=PRICE",
                                   help="Price per call of a model (repeat per model). The defaults are example "
                                        "prices in the ratio of RouteLLM's quoted per-token prices."),
    token_cost: list[str] = typer.Option([], "--token-cost", metavar="MODEL=PRICE",
                                         help="Price per 1k tokens instead (prompt tokens estimated as "
                                              "len(text)/4); replaces --cost entirely when given."),
    data: Optional[Path] = typer.Option(None, help="MMLU data root (default: the shared data)."),
    quick: bool = typer.Option(False, "--quick", help=f"Use a random {QUICK_PROMPTS:,}-prompt subset."),
    max_prompts: Optional[int] = typer.Option(None, help="Use a random subset of this many prompts."),
    history_frac: float = typer.Option(0.5, help="Share of prompts used as the router's history."),
    seed: int = typer.Option(0, help="Seed of the first split."),
    repeats: int = typer.Option(1, min=1, help="Independent splits (seed, seed+1, ...); mean and std reported."),
    encoder: str = typer.Option("minilm+lexical", help="Encoder: minilm, lexical, a sentence-transformers path, or several joined by + (e.g. minilm+lexical)."),
    cache_dir: Path = typer.Option(Path(".preroll-cache"), help="On-disk embedding cache."),
    head: str = typer.Option("auto", help="Router head: auto, logistic or knn."),
    mlp: bool = typer.Option(True, "--mlp/--no-mlp", help="Include the MLP router baseline."),
    out: Path = typer.Option(Path("runs/bench-route"), help="Output folder for results.json and frontier.png."),
) -> None:
    """Route MMLU prompts between two models; report APGR, AIQ, CPT and baselines."""
    import json

    from rich.console import Console
    from rich.table import Table

    from preroll.bench.route import RouteBenchConfig, plot_frontier, run_route_bench
    from preroll.outputs import atomic_write_text, check_output

    check_output(out, inputs=(data,), folder=True)
    from preroll.route.specs import ModelSpec

    console = Console(width=None if Console().is_terminal else 160)
    if token_cost:
        prices = _parse_prices(token_cost, "--token-cost")
        specs = [ModelSpec(name=n, cost_per_1k_tokens=p) for n, p in prices.items()]
    else:
        prices = _parse_prices(cost, "--cost")
        specs = [ModelSpec(name=n, cost_per_call=p) for n, p in prices.items()]
    if len(specs) != 2:
        raise typer.BadParameter(f"the benchmark routes between two models; got prices for {len(specs)}: "
                                 f"{', '.join(prices)}", param_hint="--cost")
    cfg = RouteBenchConfig(models=specs, root=None if data is None else str(data), history_frac=history_frac,
                           seed=seed, repeats=repeats, max_prompts=QUICK_PROMPTS if quick and max_prompts is None
                           else max_prompts, encoder=encoder, cache_dir=str(cache_dir), head=head, mlp=mlp)
    result = run_route_bench(cfg, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(result, indent=1))
    png = plot_frontier(result, out / "frontier.png")

    split0 = result["splits"][0]
    table = Table(title=f"Routing on MMLU: {split0['n_history']} history / {split0['n_eval']} eval prompts, "
                        f"{repeats} split(s); weak {split0['weak']}, strong {split0['strong']}")
    for col in ("router", "APGR", "AIQ", "CPT(50%)", "strong share @95% acc", "acc @50% strong", "accuracy"):
        table.add_column(col, justify="left" if col == "router" else "right")

    def fmt(row, key, pct=False):
        v = row.get(key)
        if v is None:
            return "-"
        sd = row.get(key + "_std")
        s = f"{100 * v:.1f}%" if pct else f"{v:.3f}"
        if sd is not None:
            s += f" ±{100 * sd:.1f}" if pct else f" ±{sd:.3f}"
        return s

    for row in result["summary"]:
        table.add_row(row["name"], fmt(row, "apgr"), fmt(row, "aiq"), fmt(row, "cpt50", True),
                      fmt(row, "share_for_target", True), fmt(row, "acc_at_half"), fmt(row, "accuracy"))
    console.print(table)
    console.print(f"wrote {out / 'results.json'} and {png}")
