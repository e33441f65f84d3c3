"""``preroll bench route``: routing benchmarks on a table of priced models (yours with ``--data DIR``, or
LLMRouter's nine bundled ones) or RouteLLM's two-model MMLU pair.

Heavy imports (numpy, sklearn, the encoder) happen inside the command so
``preroll --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer

#: Example prices, in the ratio of the two models' per-million-token prices
#: quoted by RouteLLM (0.24 vs 24.7 USD). They are the command's defaults
#: only, shown in --help and overridable; the library has no price list.
EXAMPLE_COSTS = ["mistralai/Mixtral-8x7B-Instruct-v0.1=0.24", "gpt-4-1106-preview=24.7"]

QUICK_PROMPTS = 2000
#: The MMLU pair's shift protocols fit two heads per fold: a random subset of this many prompts unless
#: --max-prompts says otherwise (the full 14k take hours on a shared CPU).
PAIR_SHIFT_PROMPTS = 3000


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
    models: Optional[str] = typer.Option(
        None, "--models", help="2: RouteLLM's MMLU pair (APGR); table (or 9, llmrouter-9): a table of priced models "
        "scored per prompt, k-fold CV: LLMRouter's nine bundled, or yours with --data. Default: table when --data "
        "holds models.json, else 2."),
    folds: int = typer.Option(5, min=2, help="Folds of the table's cross-validation."),
    max_folds: Optional[int] = typer.Option(None, min=1, help="Table: run only the first folds of the split."),
    output_tokens: int = typer.Option(256, min=0, help="Table: expected completion tokens per call "
                                                       "(priced with the prompt's)."),
    confidence: float = typer.Option(1.0, min=0.0, help="Table: z of the 'confident' rule."),
    independent: bool = typer.Option(True, "--independent/--no-independent",
                                     help="Table: also run independent per-model heads."),
    latency_prompts: int = typer.Option(200, min=0, help="Table: unseen prompts timed one per route() call."),
    cost: list[str] = typer.Option(EXAMPLE_COSTS, "--cost", metavar="MODEL=PRICE",
                                   help="Price per call of a model (repeat per model). The defaults are example "
                                        "prices in the ratio of RouteLLM's quoted per-token prices."),
    token_cost: list[str] = typer.Option([], "--token-cost", metavar="MODEL=PRICE",
                                         help="Price per 1k tokens instead (prompt tokens estimated as "
                                              "len(text)/4); replaces --cost entirely when given."),
    data: Optional[Path] = typer.Option(None, help="Your own labelled routing table: a folder with train.jsonl "
                                        "({id, prompt, scores: {model: score in [0, 1]}} per line) and models.json "
                                        "(per model input_price_per_mtok, output_price_per_mtok), any number of "
                                        "models (docs/route.md). With --models 2: an MMLU-pair root. Default: the "
                                        "bundled data."),
    quick: bool = typer.Option(False, "--quick", help=f"Use a random {QUICK_PROMPTS:,}-prompt subset."),
    max_prompts: Optional[int] = typer.Option(None, help="Use a random subset of this many prompts."),
    history_frac: float = typer.Option(0.5, help="Share of prompts used as the router's history."),
    seed: int = typer.Option(0, help="Seed of the first split."),
    repeats: int = typer.Option(1, min=1, help="Independent splits (seed, seed+1, ...); mean and std reported."),
    encoder: str = typer.Option("minilm+lexical+stats", help="Encoder: minilm, lexical, stats, a sentence-transformers path, or several joined by + (e.g. minilm+lexical+stats)."),
    cache_dir: Path = typer.Option(Path(".preroll-cache"), help="On-disk embedding cache."),
    head: str = typer.Option("auto", help="Router head: auto (the router's recommended head: ensemble, or difficulty on a bandit log), joint, ensemble, logistic, knn or difficulty."),
    mlp: bool = typer.Option(True, "--mlp/--no-mlp", help="Include the MLP router baseline."),
    out: Path = typer.Option(Path("runs/bench-route"), help="Output folder (results*.json and a PNG; named for the run: results.json for the MMLU pair, "
                              "results-nine.json for the nine bundled models, results-table.json for yours)."),
    stream: bool = typer.Option(False, "--stream", help="Instead: replay the table (yours with --data, else "
                                "LLMRouter's nine) as a stream under bandit feedback from an empty history (explore "
                                "router vs full information, epsilon-greedy and LinUCB on --encoder's parts that "
                                "need no fit, else hashed n-grams, best single in hindsight); --seed/--repeats set "
                                "the streams."),
    lam: float = typer.Option(0.0, min=0.0, help="--stream: the utility rule's lam."),
    holdout: float = typer.Option(0.2, min=0.01, max=0.9, help="--stream: share of prompts held out for the "
                                                               "frozen evaluation."),
    batch: int = typer.Option(16, min=1, help="--stream: requests decided before their outcomes come back."),
    max_share: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="--stream: cap on the share of explored "
                                                                          "decisions (default: ExploreSettings')."),
    anneal_after: Optional[int] = typer.Option(None, min=0, help="--stream: decisions after which the cap on "
                                               "explored decisions anneals to max_share * sqrt(anneal_after * "
                                               "decisions); 0: a flat cap (default: ExploreSettings')."),
    contenders_z: Optional[float] = typer.Option(
        None, help="--stream: explore only models whose mean utility so far is within this many standard errors "
                   "of the best's; negative: explore every model (default: ExploreSettings')."),
    warmup: Optional[int] = typer.Option(
        None, min=0, help="--stream: elimination warm-up: decisions blind to the prompt among the models still in "
                          "the running until each has this many outcomes; 0: none (default: ExploreSettings')."),
    max_gap: Optional[int] = typer.Option(
        None, min=0, help="--stream: at most this many outcomes between two refits of the explore router; 0: "
                          "refits at doublings only (default: ExploreSettings')."),
    full_info: bool = typer.Option(True, "--full-info/--no-full-info", help="--stream: also replay the "
                                                                           "full-information router (slow: its refits)."),
    budget_per_1k: Optional[float] = typer.Option(None, min=0.0, help="--stream: at most this extra spend over the "
                                                                     "greedy choices per 1,000 requests."),
    labels: int = typer.Option(0, min=0, help="--stream: start every method from every model's score on this many "
                                              "prompts (a router fitted on labels, then live) instead of an empty "
                                              "history; a router fitted on them and never updated is replayed too."),
    labels_from: str = typer.Option("topics", "--labels-from", metavar="topics|random",
                                    help="--stream --labels: topics (the labels from three of five lexical k-means "
                                         "topics; the traffic adds the other two: a mix unlike the labels) or "
                                         "random (the traffic's mix is the labels')."),
    protocol: str = typer.Option(
        "random,cluster5,cluster10,reweight", "--protocol", metavar="P1,P2,...",
        help="Evaluation protocols: random (K-fold), cluster<K> (whole k-means clusters of the prompts held out; "
             "for the MMLU pair: whole subjects), group (MMLU subjects), reweight (test drawn with a Dirichlet mix "
             "of clusters). 'random' alone runs the detailed random-fold benchmark with every baseline; any shift "
             "protocol runs the shift benchmark (results-shift.json), heads compared by their worst case."),
    fold_seeds: Optional[str] = typer.Option(None, "--fold-seeds", metavar="S1,S2,...",
                                             help="Shift benchmark: fold seeds (default: --seed)."),
    heads: str = typer.Option("joint,ensemble", "--heads",
                              help="Shift benchmark: heads fitted per fold (the average of joint and ensemble is "
                                   "added when both run)."),
    alpha: float = typer.Option(1.0, min=0.01, help="Shift benchmark: Dirichlet concentration of the reweighted "
                                                     "folds' cluster mix (smaller: further from the history's)."),
    learning_curve: Optional[str] = typer.Option(
        None, "--learning-curve", metavar="F1,F2,...",
        help="Instead of the full benchmark: refit the router (and the kNN router) on these shares of each "
             "history, e.g. 0.25,0.5,1, with the evaluation prompts fixed; prints the gain against history "
             "size and what a doubling added."),
) -> None:
    """Route prompts across priced models: your table (--data DIR), LLMRouter's nine (--models table) or the MMLU pair."""
    import json

    fractions = _parse_fractions(learning_curve) if learning_curve is not None else None
    models = _table_or_pair(models, data)
    if stream:
        from preroll.cli.bench_route_stream import bench_stream

        bench_stream(data=data, seeds=list(range(seed, seed + repeats)), max_prompts=QUICK_PROMPTS if quick and
                     max_prompts is None else max_prompts, encoder=encoder, cache_dir=cache_dir, out=out,
                     output_tokens=output_tokens, lam=lam, holdout=holdout, batch=batch,
                     explore=_explore_settings(max_share=max_share, budget_per_1k=budget_per_1k,
                                               anneal_after=anneal_after, contenders_z=contenders_z,
                                               warmup=warmup, max_gap=max_gap),
                     full_info=full_info, head=head, labels=labels, labels_from=_labels_from(labels_from))
        return None
    from preroll.cli import bench_route_shift as shift

    protocols = shift.parse_protocols(protocol)
    shifted = fractions is None and protocols != ["random"]
    if shifted and models == "table":
        return shift.nine(data=data, protocols=protocols, seeds=shift.parse_ints(fold_seeds, seed, "--fold-seeds"),
                          heads=shift.parse_heads(heads), folds=folds, max_folds=max_folds,
                          max_prompts=QUICK_PROMPTS if quick and max_prompts is None else max_prompts,
                          encoder=encoder, cache_dir=cache_dir, output_tokens=output_tokens, alpha=alpha, out=out)
    if models == "table":
        return _bench_nine(data=data, folds=folds, seed=seed, max_prompts=QUICK_PROMPTS if quick and max_prompts
                           is None else max_prompts, encoder=encoder, cache_dir=cache_dir, out=out,
                           output_tokens=output_tokens, confidence=confidence, independent=independent,
                           mlp=mlp, latency_prompts=latency_prompts, max_folds=max_folds, fractions=fractions)

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
    if fractions is not None:
        return _curve("pair", cfg, fractions, out, data)
    if shifted:
        return shift.pair(specs=specs, data=data, protocols=protocols,
                          seeds=shift.parse_ints(fold_seeds, seed, "--fold-seeds"), heads=shift.parse_heads(heads),
                          folds=folds, max_folds=max_folds, max_prompts=cfg.max_prompts or PAIR_SHIFT_PROMPTS,
                          encoder=encoder,
                          cache_dir=cache_dir, alpha=alpha, out=out)
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


def _explore_settings(*, max_share: Optional[float], budget_per_1k: Optional[float],
                      anneal_after: Optional[int], contenders_z: Optional[float] = None,
                      warmup: Optional[int] = None, max_gap: Optional[int] = None) -> dict:
    """The ``ExploreSettings`` fields the --stream flags set (the rest keep their defaults); ``--anneal-after 0``
    is the settings' ``anneal_after=None`` (the flat cap), ``--warmup 0`` its ``warmup=None`` (no warm-up),
    ``--max-gap 0`` its ``max_gap=None`` (refits at doublings only), a negative ``--contenders-z`` its ``None``
    (no test)."""
    explore: dict = {k: v for k, v in (("max_share", max_share), ("budget_per_1k", budget_per_1k)) if v is not None}
    if anneal_after is not None:
        explore["anneal_after"] = anneal_after or None
    if contenders_z is not None:
        explore["contenders_z"] = contenders_z if contenders_z >= 0 else None
    if warmup is not None:
        explore["warmup"] = warmup or None
    if max_gap is not None:
        explore["max_gap"] = max_gap or None
    return explore


def _labels_from(value: str) -> str:
    from preroll.bench.route_labels import LABEL_SOURCES

    if value not in LABEL_SOURCES:
        raise typer.BadParameter(f"choose {' or '.join(LABEL_SOURCES)}, got {value!r}", param_hint="--labels-from")
    return value


def _table_or_pair(models: Optional[str], data: Optional[Path]) -> str:
    """``"table"`` (priced models scored per prompt) or ``"2"`` (the MMLU pair); a user's folder with a
    ``models.json`` is a table unless ``--models 2`` says otherwise."""
    if models is None:
        return "table" if data is not None and (data / "models.json").is_file() else "2"
    if models in ("table", "9", "llmrouter-9"):
        return "table"
    if models != "2":
        raise typer.BadParameter(f"choose 2 or table (9), got {models!r}", param_hint="--models")
    return models


def _parse_fractions(text: str) -> list[float]:
    from preroll.bench.route_learning import check_fractions

    try:
        return check_fractions([float(x) for x in text.split(",") if x.strip()])
    except ValueError as e:
        msg = str(e) if "fraction" in str(e) else f"expected numbers separated by commas, got {text!r}"
        raise typer.BadParameter(msg, param_hint="--learning-curve") from None


def _curve(kind: str, cfg, fractions: list[float], out: Path, data: Optional[Path]) -> None:
    """Run a learning curve (``kind``: "nine" or "pair"), save JSON and PNG, print the table."""
    import json
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from preroll.bench import route_learning as rl
    from preroll.outputs import atomic_write_text, check_output

    check_output(out, inputs=(data,), folder=True)
    console = Console(width=None if Console().is_terminal else 160)
    progress = lambda msg: console.print(f"[dim]{msg}[/dim]")  # noqa: E731
    if kind == "nine":
        points = rl.table_curve(cfg, fractions, progress)
        metric, what = "gain over the best single model at lam = 0 (points)", "fold"
        config = asdict(cfg)
    else:
        points = rl.pair_curve(cfg, fractions, progress)
        metric, what = "APGR (gain rule)", "split"
        config = {k: v for k, v in asdict(cfg).items() if k != "models"}
        config["models"] = [m.model_dump() for m in cfg.models]
    config["encoder"] = cfg.encoder if isinstance(cfg.encoder, str) else type(cfg.encoder).__name__
    config["fractions"] = fractions
    result = rl.curve_result(points, metric, config)
    stem = f"learning-curve-{table_stem(data)}" if kind == "nine" else "learning-curve"
    atomic_write_text(out / f"{stem}.json", json.dumps(result, indent=1))
    png = rl.plot_curve(result, out / f"{stem}.png")
    fmt = (lambda v: f"{v:+.2f}") if kind == "nine" else (lambda v: f"{v:.3f}")
    sd = (lambda v: f"{v:.2f}") if kind == "nine" else (lambda v: f"{v:.3f}")
    table = Table(title=f"Learning curve: {metric}; mean ± std over {what}s, evaluation prompts fixed")
    for col in ("history share", "history prompts", "router", f"router per {what}", "kNN router", "fit s"):
        table.add_column(col, justify="right")
    for r in result["summary"]:
        table.add_row(f"{r['fraction']:g}", f"{r['n_history']:.0f}", f"{fmt(r['router'])} ± {sd(r['router_std'])}",
                      " ".join(fmt(v) for v in r["router_per_fold"]), f"{fmt(r['knn'])} ± {sd(r['knn_std'])}",
                      f"{r['fit_s']:.1f}")
    console.print(table)
    for key, label in (("router", "router"), ("knn", "kNN router")):
        t = result["trend"][key]
        if t is not None:
            largest = result["summary"][-1]["n_history"]
            console.print(f"{label}: {t['per_doubling']:+.3f} per doubling of the history; the trend line gives "
                          f"{fmt(rl.CurveTrend(**t).at(2 * largest))} at {2 * largest:.0f} prompts (an extrapolation)")
    console.print(f"wrote {out / (stem + '.json')} and {png}")


def _bench_nine(*, data, folds, seed, max_prompts, encoder, cache_dir, out, output_tokens, confidence, independent,
                mlp, latency_prompts, max_folds, fractions=None) -> None:
    import json

    from rich.console import Console

    from preroll.bench.route_multi import MultiBenchConfig, plot_multi_frontier, run_multi_bench
    from preroll.outputs import atomic_write_text, check_output

    check_output(out, inputs=(data,), folder=True)
    console = Console(width=None if Console().is_terminal else 180)
    cfg = MultiBenchConfig(root=None if data is None else str(data), folds=folds, seed=seed, max_prompts=max_prompts,
                           encoder=encoder, cache_dir=str(cache_dir), output_tokens=output_tokens,
                           confidence=confidence, independent=independent, mlp=mlp, latency_prompts=latency_prompts,
                           max_folds=max_folds)
    if fractions is not None:
        return _curve("nine", cfg, fractions, out, data)

    stem = table_stem(data)
    path = out / f"results-{stem}.json"

    def save(partial):  # after every fold, so a long run leaves its finished folds behind
        atomic_write_text(path, json.dumps(partial, indent=1))
        console.print(f"[dim]saved {len(partial['folds'])} fold(s) to {path}[/dim]")

    result = run_multi_bench(cfg, progress=lambda msg: console.print(f"[dim]{msg}[/dim]"), checkpoint=save)
    png = plot_multi_frontier(result, out / f"frontier-{stem}.png")
    print_nine(result, console)
    console.print(f"wrote {path} and {png}")


def table_stem(data: Optional[Path]) -> str:
    """The output names' tag of a table run: ``nine`` for LLMRouter's nine bundled models (the names docs and
    results already cite), ``table`` for a user's own table (``--data``), whatever its number of models."""
    return "nine" if data is None else "table"


def print_nine(result, console) -> None:
    """The table benchmark's tables from a result (also a saved ``results-nine.json`` / ``results-table.json``)."""
    from rich.table import Table

    best_q = [f["best_single_quality"] for f in result["folds"]]
    table = Table(title=f"{len(result['models'])} priced models, {result['n_prompts']} prompts, "
                        f"{len(result['folds'])}-fold CV (mean ± std over folds)")
    for col in ("router", "quality @lam=0", "vs best single (per fold, points)", "cost to match best single",
                "AIQ", "fit s", "decide ms/prompt"):
        table.add_column(col, justify="left" if col == "router" else "right")

    def ms(row, key, scale=1.0, fmt="{:.3f}"):
        v = row.get(key)
        if v is None:
            return "never" if key == "cost_to_match" else "-"
        s = fmt.format(v * scale)
        sd = row.get(key + "_std")
        if sd is not None:
            s += " ±" + fmt.format(sd * scale)
        n = row.get(key + "_n")
        if n is not None and n < len(best_q):
            s += f" ({n}/{len(best_q)} folds)"
        return s

    for row in result["summary"]:
        diffs = " ".join(f"{100 * d:+.1f}" for d in row["vs_best_single"])
        table.add_row(row["name"], ms(row, "quality_at_zero"), diffs,
                      ms(row, "cost_to_match", 100, "{:.0f}%"), ms(row, "aiq"),
                      ms(row, "fit_s", 1, "{:.1f}"), ms(row, "decide_ms", 1, "{:.2f}"))
    console.print(table)
    console.print(f"best single per fold: {', '.join(f['best_single'] for f in result['folds'])}; "
                  f"oracle {np.mean([f['oracle_quality'] for f in result['folds']]):.3f}")
    ece = result["folds"][0]["rows"][0]["extra"]["ece"]
    console.print("router ECE per model (fold 0): " + ", ".join(f"{k} {v:.3f}" for k, v in ece.items()))
    tt = Table(title=f"Topic structure: {result['topics']['n_topics']} KMeans topics of all prompts; pooled held-out "
                     "predictions of all folds")
    for col in ("topic", "n", "topic's best (train folds)", "best single", "router", "router - topic best (± se)",
                "confident - topic best (± se)", "oracle"):
        tt.add_column(col, justify="right")
    for r in result["topics"]["rows"]:
        tt.add_row(str(r["topic"]), str(r["n"]), f"{r['topic_best']:.3f} ({r['topic_best_model']})",
                   f"{r['best_single']:.3f}", f"{r['router']:.3f}",
                   f"{100 * r['router_minus_topic_best']:+.1f} ± {100 * r['se']:.1f}",
                   f"{100 * r['confident_minus_topic_best']:+.1f} ± {100 * r['se_confident']:.1f}",
                   f"{r['oracle']:.3f}")
    console.print(tt)
    if result["topics"].get("no_held_out"):
        console.print("topics with no held-out prompt (no row): "
                      + ", ".join(str(t) for t in result["topics"]["no_held_out"]))
    if result["latency_ms"]:
        lat = result["latency_ms"]
        console.print(f"route() one unseen prompt per call, fold-0 router ({lat['n']} prompts): "
                      f"p50 {lat['p50']:.1f} ms, p90 {lat['p90']:.1f} ms, p99 {lat['p99']:.1f} ms")
