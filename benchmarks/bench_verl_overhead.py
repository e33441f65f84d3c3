"""Overhead of the preroll verl integration per training step (what the trainer adds to a verl step).

Run:  python benchmarks/bench_verl_overhead.py [--batch 512] [--rollouts 8] [--pool-factor 4] [--steps 20]

Prompts are the shared DAPO-Math set (2,722 texts); a step plans a batch of
``--batch`` prompts out of a pool of ``--pool-factor`` x batch (2,048 with the
defaults), in both modes (``select``: fixed n; ``allocate``: per-prompt n
spending batch x rollouts), then records the step from verl's trajectory layout
(``{uid}_{session}_{output}`` keys, one reward per rollout, shuffled as the
replay buffer returns them). Rewards are Bernoulli draws from each prompt's
mean observed DAPO-Math rate
(0.5 for prompts without history). The book uses the default settings (lexical
neighbour encoder, refit every step). "book build" embeds the dataset
and builds the neighbour graph (once, when the trainer is built); the first
step is reported apart. "record" is the whole read-back
(regrouping 4,096 trajectory keys by uid, then ``PromptBook.record`` with its
refit); the book's share is shown apart. Times are medians over ``--steps``
steps on this machine; verl's own collate of the chosen rows is not included.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import uuid

import numpy as np
from rich.console import Console
from rich.table import Table

from preroll.data.paths import dapo_dir
from preroll.integrations.verl import PrerollDriver, PrerollVerlConfig


def load_prompts() -> tuple[list[str], np.ndarray]:
    """DAPO-Math prompt texts and each one's mean observed success rate (score in [-1, 1] -> (score + 1) / 2;
    0.5 for prompts without a context row)."""
    texts = json.loads((dapo_dir() / "prompts.json").read_text())
    ids = sorted(texts)
    total = dict.fromkeys(ids, 0.0)
    count = dict.fromkeys(ids, 0)
    with open(dapo_dir() / "context.jsonl") as fh:
        for line in fh:
            row = json.loads(line)
            pid = f"dapomath_{row['id']}"
            if pid in total:
                total[pid] += (float(row["score"]) + 1.0) / 2.0
                count[pid] += 1
    rate = np.array([total[i] / count[i] if count[i] else 0.5 for i in ids])
    return [texts[i] for i in ids], rate


def run(mode: str, prompts: list[str], rate: np.ndarray, args) -> dict[str, list[float]]:
    rng = np.random.default_rng(args.seed)
    config = PrerollVerlConfig(mode=mode, pool_factor=args.pool_factor, max_rollouts=32, settings={"seed": args.seed})
    start = time.perf_counter()
    driver = PrerollDriver(prompts, config, seed=args.seed)
    times: dict[str, list[float]] = {"construct": [time.perf_counter() - start], "plan": [], "record": [],
                                     "book_record": [], "rollouts": []}
    for step in range(1, args.steps + 2):
        t0 = time.perf_counter()
        plan = driver.plan(args.batch, args.rollouts)
        t1 = time.perf_counter()
        uids = [str(uuid.uuid4()) for _ in range(len(plan))]
        driver.remember(uids, plan.indices)
        n = plan.rollout_n if plan.rollout_n is not None else np.full(len(plan), args.rollouts)
        keys = [f"{u}_{s}_0" for u, k in zip(uids, n) for s in range(int(k))]
        scores = (rng.random(len(keys)) < np.repeat(rate[plan.indices], n)).astype(float)
        order = rng.permutation(len(keys))
        t2 = time.perf_counter()
        metrics = driver.record_trajectories(step, [keys[i] for i in order], scores[order])
        t3 = time.perf_counter()
        times["book_record"].append(metrics["preroll/record_ms"] / 1e3)
        times["plan"].append(t1 - t0)
        times["record"].append(t3 - t2)
        times["rollouts"].append(float(len(keys)))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--pool-factor", type=int, default=4)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    prompts, rate = load_prompts()
    table = Table(title=f"preroll verl step overhead: batch {args.batch} x {args.rollouts} rollouts, pool "
                        f"{args.pool_factor * args.batch} of {len(prompts)} DAPO-Math prompts, median of "
                        f"{args.steps} steps ({platform.machine()}, {platform.python_version()})")
    for col in ("mode", "book build s", "first step s", "plan ms", "record ms", "of which book.record ms",
                "rollouts/step"):
        table.add_column(col, justify="right")
    for mode in ("select", "allocate"):
        t = run(mode, prompts, rate, args)
        table.add_row(mode, f"{t['construct'][0]:.2f}", f"{t['plan'][0] + t['record'][0]:.2f}",
                      f"{1e3 * statistics.median(t['plan'][1:]):.1f}",
                      f"{1e3 * statistics.median(t['record'][1:]):.1f}",
                      f"{1e3 * statistics.median(t['book_record'][1:]):.1f}",
                      f"{statistics.median(t['rollouts'][1:]):.0f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
