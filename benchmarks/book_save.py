"""Prompt book save time at scale: the first save, saves of the same book again, a save into a new folder.

Run:  python benchmarks/book_save.py [--prompts 250000] [--history-rows 250000] [--repeats 3]

Why a random graph: what a save costs depends on the sizes of the arrays it
writes (the neighbour graph is prompts x 32 int32 indices + float32 cosines,
256 MB at a million prompts), not on which neighbours they name; building the
real graph (``preroll bench online --prompts N``) takes minutes. The history is
``--history-rows`` recorded rows (a run part-way through). "again" is the mean
of ``--repeats`` saves to the same path, each after one more recorded step (the
graph unchanged); "new folder" is one save into a fresh checkpoint folder, as a
trainer does at each checkpoint; "load" is ``PromptBook.load`` of the saved
book. Times include the fsync of every file written.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from preroll.online import OnlineSettings, PromptBook


def _folder_mb(folder: Path) -> float:
    seen, total = set(), 0
    for p in folder.rglob("*"):
        st = p.stat()
        if p.is_file() and st.st_ino not in seen:   # a hard-linked file counts once
            seen.add(st.st_ino)
            total += st.st_size
    return total / 2 ** 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=250_000)
    ap.add_argument("--history-rows", type=int, default=250_000)
    ap.add_argument("--neighbours", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="Where to write (default: a temporary folder).")
    args = ap.parse_args()
    n, k = args.prompts, args.neighbours
    rng = np.random.default_rng(0)
    texts, ids = [f"prompt {i}" for i in range(n)], [str(i) for i in range(n)]
    book = PromptBook(texts, ids=ids, settings=OnlineSettings(refit_every=0, seed=0))
    book._graph = (rng.integers(0, n, (n, k), dtype=np.int32), rng.random((n, k), dtype=np.float32))
    step, batch = 0, 4096
    while book.rows_ < args.history_rows:
        idx = rng.choice(n, min(batch, n), replace=False)
        book.record(step, idx, [[1.0] * int(s) + [0.0] * (8 - int(s)) for s in rng.integers(0, 9, len(idx))])
        step += 1
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="book-save-") as tmp:
        path = Path(tmp) / "run" / "book.npz"
        t0 = time.perf_counter()
        book.save(path)
        first = time.perf_counter() - t0
        again = []
        for _ in range(args.repeats):
            book.record(step, rng.choice(n, 512, replace=False), [[1.0, 0.0] * 4] * 512)
            step += 1
            t0 = time.perf_counter()
            book.save(path)
            again.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        book.save(Path(tmp) / "checkpoint-2" / "book.npz")
        new_folder = time.perf_counter() - t0
        t0 = time.perf_counter()
        PromptBook.load(path, texts, ids)
        load = time.perf_counter() - t0
        files = sorted(p.name for p in path.parent.iterdir())
        run_mb = _folder_mb(path.parent)
        disk_mb = _folder_mb(Path(tmp))
    print(f"prompts {n:,}, history rows {book.rows_:,}, graph {n * k * 8 / 2 ** 20:.0f} MB in memory, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"files of one saved book: {', '.join(files)} ({run_mb:.0f} MB); two checkpoints on disk {disk_mb:.0f} MB")
    print("| first save s | same path again s, mean (max) | new folder s | load s |")
    print("|---:|---:|---:|---:|")
    print(f"| {first:.2f} | {np.mean(again):.2f} ({np.max(again):.2f}) | {new_folder:.2f} | {load:.2f} |")


if __name__ == "__main__":
    main()
