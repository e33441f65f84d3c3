"""A router fitted on labels of some topics, then live on traffic whose topic mix has moved.

The setting a deployment starts from: a labelled table (every model's score on
a set of prompts, like LLMRouter's train split) fits the router, and the
traffic that follows is unlike it. Here the labelled history is drawn from
three of five lexical k-means topics of LLMRouter's nine-model table; the
traffic is the other two topics plus the rest of the three (about half new),
replayed in batches of 16 under bandit feedback; a fifth of the traffic's
prompts is held out for the frozen evaluation. Per stream seed, the variants:

* ``offline``: the router fitted on the labels and never updated (how
  offline-trained routers are deployed);
* ``greedy``: the same router with ``explore=`` on, routing with
  ``explore=False``: it learns only from the outcomes of its own greedy
  choices;
* ``explore``: ``explore=True`` with the defaults;
* ``explore-everywhere``: ``explore=ExploreSettings(explore_near_labels=True)``,
  Thompson sampling on every prompt (the behaviour before the eighth round).

Reported, in points against the best single model in hindsight on the same
requests (of utility, score - ``lam`` * cost, with ``--lam``): the whole
stream (``all``), its last ``last`` requests, and the router refitted on
everything it observed, greedy on the held-out prompts (``frozen``).
RESULTS.md, "Live routing, eighth round".

Run from the repository root: ``python -m experiments.route_warm_shift --seeds 4-11``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from preroll.bench.route_labels import LabelledSplit, labelled_split

VARIANTS = ("offline", "greedy", "explore", "explore-everywhere")


World = LabelledSplit   # one stream seed's split: labelled history, stream, held-out rows


def build_world(prompts: list[str], seed: int, *, history: int = 2500, topics: int = 5,
                cache_dir: str | None = None) -> World:
    """Lexical k-means topics; two of them (together 25-55% of the rows, drawn at random) are new to the history
    (the split ``preroll bench route --stream --labels`` makes)."""
    return labelled_split(prompts, seed, history=history, source="topics", topics=topics, cache_dir=cache_dir)


def run_variant(data, world: World, variant: str, seed: int, *, encoder: Any, last: int = 1500,
                batch: int = 16, lam: float = 0.0) -> dict[str, Any]:
    """One variant on one world: points of utility (score - ``lam`` * cost) against the best single model in
    hindsight by utility (whole stream, last ``last``, frozen)."""
    from preroll.route import ExploreSettings, Router
    from preroll.route.explore import refit_now

    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
    names, specs = data.models, data.model_specs(256)
    Y = np.nan_to_num(data.scores, nan=0.0)
    U = Y - lam * Router(specs).costs(data.prompts)
    Ys, Yh = U[world.stream], U[world.held]
    prompts = [data.prompts[i] for i in world.stream]
    held = [data.prompts[i] for i in world.held]
    n = len(prompts)
    t0 = time.perf_counter()
    stats: dict[str, Any] = {}
    if variant == "offline":
        router = Router(specs, encoder=encoder, lam=lam).fit(data.histories(world.history))
        pick = np.array([names.index(d.model) for d in router.route(prompts)])
    else:
        settings = ExploreSettings(seed=seed, explore_near_labels=variant == "explore-everywhere")
        router = Router(specs, encoder=encoder, lam=lam, explore=settings).fit(data.histories(world.history))
        pick = np.zeros(n, dtype=int)
        for s in range(0, n, batch):
            rows = np.arange(s, min(s + batch, n))
            ds = router.route([prompts[i] for i in rows], explore=False if variant == "greedy" else None)
            pick[rows] = [names.index(d.model) for d in ds]
            # The router learns the score; the table reports utility.
            router.observe([prompts[i] for i in rows], [d.model for d in ds], Y[world.stream[rows], pick[rows]])
        stats = router.explore_stats()
        refit_now(router)
    frozen = np.array([names.index(d.model) for d in router.route(held, explore=False)])
    tail = np.arange(max(n - last, 0), n)
    got = Ys[np.arange(n), pick]
    return {"seed": seed, "variant": variant, "lam": lam, "seconds": round(time.perf_counter() - t0, 1),
            "new_topics": list(world.new_topics), "new_share": world.new_share,
            "history": len(world.history), "stream": n, "held": len(world.held),
            "all": 100 * float(got.mean() - Ys.mean(axis=0).max()),
            "last": 100 * float(got[tail].mean() - Ys[tail].mean(axis=0).max()),
            "frozen": 100 * float(Yh[np.arange(len(held)), frozen].mean() - Yh.mean(axis=0).max()),
            "explored_share": stats.get("explored_share"),
            "picks_last": np.bincount(pick[tail], minlength=len(names)).tolist()}


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="4-11", help="stream seeds, e.g. 4-11 or 0,2,5")
    parser.add_argument("--variants", default="offline,explore,explore-everywhere")
    parser.add_argument("--encoder", default="minilm+lexical+stats")
    parser.add_argument("--lam", type=float, default=0.0, help="price weight: utility = score - lam * cost")
    parser.add_argument("--out", default=None, help="append one JSON line per run to this file")
    args = parser.parse_args(argv)
    from preroll.bench.llmrouter import load_llmrouter
    from preroll.encoders import get_encoder

    data = load_llmrouter()
    encoder = get_encoder(args.encoder)   # vectors cached under $PREROLL_CACHE
    variants = args.variants.split(",")
    rows = []
    for seed in _seeds(args.seeds):
        world = build_world(data.prompts, seed)
        for v in variants:
            res = run_variant(data, world, v, seed, encoder=encoder, lam=args.lam)
            rows.append(res)
            print(json.dumps(res), flush=True)
            if args.out:
                with open(args.out, "a", encoding="utf-8") as f:
                    f.write(json.dumps(res) + "\n")
    print("\n| variant | all | last | frozen | worst last |\n|---|---|---|---|---|")
    for v in variants:
        got = [r for r in rows if r["variant"] == v]
        print(f"| {v} | {np.mean([r['all'] for r in got]):+.2f} | {np.mean([r['last'] for r in got]):+.2f} | "
              f"{np.mean([r['frozen'] for r in got]):+.2f} | {min(r['last'] for r in got):+.2f} |")


if __name__ == "__main__":
    main()
