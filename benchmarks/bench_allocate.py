"""Allocation speed: time to allocate a budget over 1e4, 1e5 and 1e6 candidates.

Run:  python benchmarks/bench_allocate.py [--sizes 10000 100000 1000000] [--repeats 5]

Budget is 2 rollouts per candidate (a 4x pool at 8 rollouts per batch
prompt), bounds [2, 64]. Rates are Beta(0.5, 0.5) draws, a U-shape like the
real data (many near-dead prompts); "+beta" rows pass a BetaPrediction
(concentration 10), exercising the expected-utility path. Reports the median
and best of ``repeats`` timed runs after one untimed warm-up.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from preroll.beliefs import BetaPrediction
from preroll.schedule import RULES, allocate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--per-candidate", type=float, default=2.0, help="Budget per candidate.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    table = Table(title=f"allocate() time, budget {args.per_candidate:g}/candidate, bounds [2, 64] "
                        f"({platform.processor() or platform.machine()}, numpy {np.__version__})")
    for col in ("candidates", "rule", "input", "median s", "best s", "max group", "groups"):
        table.add_column(col, justify="right")
    for n in args.sizes:
        p = rng.beta(0.5, 0.5, n)
        conc = 10.0
        inputs = {"point": p, "+beta": BetaPrediction(p * conc + 0.05, (1 - p) * conc + 0.05)}
        budget = int(args.per_candidate * n)
        for rule in RULES:
            for label, pred in inputs.items():
                if label == "+beta" and rule == "uniform":
                    continue
                x = allocate(pred, budget, rule=rule, seed=0)  # warm-up
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    x = allocate(pred, budget, rule=rule, seed=0)
                    times.append(time.perf_counter() - t0)
                assert int(x.sum()) == budget
                table.add_row(f"{n:,}", rule, label, f"{statistics.median(times):.3f}", f"{min(times):.3f}",
                              str(int(x.max())), f"{int((x > 0).sum()):,}")
    Console().print(table)


if __name__ == "__main__":
    main()
