"""How the shared-difficulty model (a live router's model, ``head="auto"`` on a bandit log) scales with its history.

A router that lives for months refits on up to ``ExploreSettings.max_history`` outcomes per model (16,384; for
nine models up to 147,456 rows), and every decision reads the fitted model. This prints, per history size, the
fit time and the latency of one single-prompt prediction, with the default ``max_reference`` (the difficulty's
neighbour search reads at most 16,384 rows) and without it (every row; only up to ``--whole-max`` rows, as a
fit then grows as ``n^2``). A prediction reads every row either way (each model's remainder reads all its own).

The rows are synthetic, a live router's kind of log: 647-dimensional embeddings (the default encoder's width)
around 200 topic centres, one outcome per row, half of them the greedy model's and the rest spread over eight
others. Only the sizes matter here; what a reference costs in accuracy is measured on real streams (RESULTS.md).

Usage: ``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python benchmarks/route_difficulty_scale.py
[--rows 9000,36000,72000,147456] [--whole-max 36000]`` on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from preroll.route.pooled import SharedDifficultyKNN

SHARES = [0.5, 0.2, 0.1, 0.05, 0.05, 0.04, 0.03, 0.02, 0.01]    # of the outcomes, per model


def bandit_log(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` rows of one outcome each, and 200 unseen queries from the same topics."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    X = centres[rng.integers(0, 200, n)] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
    Y = np.full((n, len(SHARES)), np.nan)
    Y[np.arange(n), rng.choice(len(SHARES), n, p=SHARES)] = rng.random(n) < 0.6
    queries = centres[rng.integers(0, 200, 200)] + 0.7 * rng.normal(size=(200, dim)).astype(np.float32)
    return X, Y, queries


def measure(model: SharedDifficultyKNN, X, Y, queries) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    model.fit(X, Y)
    fit_s = time.perf_counter() - t0
    ms = []
    for q in queries:
        t0 = time.perf_counter()
        model.predict(q[None])
        ms.append(1000 * (time.perf_counter() - t0))
    return fit_s, float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="9000,36000,72000,147456")
    parser.add_argument("--whole-max", type=int, default=36_000, help="largest history fitted without a reference")
    parser.add_argument("--dim", type=int, default=647)
    args = parser.parse_args()
    print("| rows | the difficulty search reads | fit (s) | predict one prompt p50 / p99 (ms) |\n|---|---|---|---|")
    for n in (int(r) for r in args.rows.split(",")):
        X, Y, queries = bandit_log(n, args.dim, seed=0)
        for cap in (SharedDifficultyKNN().max_reference, None):
            if cap is None and n > args.whole_max:
                continue
            fit_s, p50, p99 = measure(SharedDifficultyKNN(max_reference=cap), X, Y, queries)
            read = f"{min(n, cap):,} (max_reference {cap:,})" if cap else f"{n:,} (every row)"
            print(f"| {n:,} | {read} | {fit_s:.1f} | {p50:.2f} / {p99:.2f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
