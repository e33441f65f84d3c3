"""Resuming a trainer's prompt book: build-then-load (before) against load-only (now).

Run:  python benchmarks/book_resume.py [--prompts 20000] [--encoder auto] [--steps 20]

What is timed is what the verl integration's driver does when a trainer resumes
from a checkpoint folder (``PrerollDriver``: the verl v1 trainer, the legacy
sampler and, with the same book calls, the TRL trainer):

- before: the book built and prepared (ids, embeddings, neighbour graph), then
  replaced by the saved one (``PrerollDriver(prepare=True)`` + ``load``), as
  every resume did;
- now: the saved book and its graph file read, nothing built
  (``PrerollDriver(prepare=False)`` + ``load`` + ``prepare``, a no-op).

The checkpoint is a driver's save after ``--steps`` recorded steps (512 prompts
x 8 rollouts each) on the same prompts. The texts are the synthetic DAPO-Math
variants of ``experiments.online_scale``. Wall and CPU seconds of this process;
the 1-minute load average is printed (the machine may be shared). Last, the
bytes a remote checkpoint (fsspec's in-memory store) uploads from local files:
the single-file book (before) against the graph-beside form (now).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from experiments.online_scale import synthetic_prompts
from preroll.integrations.verl.driver import PrerollDriver, PrerollVerlConfig


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=20_000)
    ap.add_argument("--encoder", default="auto", help="The book's encoder (auto: lexical up to 50k, else hashing).")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--dir", type=Path, default=None, help="Where to write (default: a temporary folder).")
    args = ap.parse_args()
    prompts = synthetic_prompts(args.prompts)
    config = PrerollVerlConfig(settings={"encoder": args.encoder, "seed": 0})
    rng = np.random.default_rng(0)
    rates = rng.beta(0.4, 0.4, len(prompts))
    load_before = os.getloadavg()[0]

    fresh, build_wall, build_cpu = _timed(lambda: PrerollDriver(prompts, config, group_size=8))
    for step in range(1, args.steps + 1):
        plan = fresh.plan(512, 8)
        wins = rng.random((len(plan.indices), 8)) < rates[plan.indices][:, None]
        fresh.book.record(step, plan.indices, wins.astype(float).tolist())
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="book-resume-") as tmp:
        folder = Path(tmp) / "global_step_20"
        fresh.save(folder)
        expected = fresh.book.stats()

        def before():
            driver = PrerollDriver(prompts, config, group_size=8)
            assert driver.load(folder)
            return driver

        def now():
            driver = PrerollDriver(prompts, config, group_size=8, prepare=False)
            assert driver.load(folder)
            driver.prepare()
            return driver

        rows = [("fresh start (build, nothing to load)", build_wall, build_cpu)]
        for name, fn in (("resume before: build, then load", before), ("resume now: load only", now)):
            driver, wall, cpu = _timed(fn)
            assert driver.book.stats() == expected and driver.book._graph is not None
            rows.append((name, wall, cpu))
        uploaded = remote_bytes(fresh, Path(tmp))
        resumed = resumed_bytes(prompts, config, Path(tmp))
    print(f"prompts {len(prompts):,}, encoder {args.encoder}, history {expected.rows:,} rows; "
          f"load average (1 min) {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"| {'what':38s} | wall s | CPU s |")
    print(f"|{'-' * 40}|-------:|------:|")
    for name, wall, cpu in rows:
        print(f"| {name:38s} | {wall:6.1f} | {cpu:5.1f} |")
    single, first, later = uploaded
    print(f"bytes uploaded per remote checkpoint (fsspec memory://): single file (before) {single / 2**20:.1f} MB; "
          f"graph beside (now) {first / 2**20:.1f} MB the first time, {later / 2**20:.1f} MB after (the graph "
          "copied inside the store)")
    written, sent = resumed
    print(f"first local + remote save after a resume from mem://: graph bytes written locally "
          f"{written / 2**20:.1f} MB, bytes uploaded {sent / 2**20:.1f} MB")


def remote_bytes(driver: PrerollDriver, tmp: Path) -> tuple[int, int, int]:
    """Bytes sent from local files by three remote saves: the single-file form, then the graph-beside form twice."""
    from preroll.integrations.core.store import fsspec_upload, is_remote

    sent: list[int] = []

    def upload(source: str, url: str) -> None:
        sent.append(0 if is_remote(source) else os.path.getsize(source))
        fsspec_upload(source, url)

    single = driver.book.save(tmp / "single" / "preroll_book.npz", graph_beside=False).stat().st_size
    driver.save(tmp / "local" / "global_step_1")      # the trainer's local checkpoint comes first
    driver.save("memory://bench/global_step_1", upload=upload)
    first = sum(sent)
    sent.clear()
    driver.save(tmp / "local" / "global_step_2")
    driver.save("memory://bench/global_step_2", upload=upload)
    return single + len(json.dumps(driver.walker.state_dict())), first, sum(sent)


def resumed_bytes(prompts: list[str], config: PrerollVerlConfig, tmp: Path) -> tuple[int, int]:
    """Graph bytes written to local files, and bytes sent from local files, by the first local and remote save
    (verl's order) of a driver resumed from the remote checkpoint ``remote_bytes`` wrote last."""
    from preroll.integrations.core.store import fsspec_upload, is_remote

    written = sent = 0
    savez = np.savez

    def counting_savez(fh, *args, **arrays):
        nonlocal written
        start = fh.tell()
        savez(fh, *args, **arrays)
        written += fh.tell() - start if "index" in arrays else 0     # a graph file

    def upload(source: str, url: str) -> None:
        nonlocal sent
        sent += 0 if is_remote(source) else os.path.getsize(source)
        fsspec_upload(source, url)

    driver = PrerollDriver(prompts, config, group_size=8, prepare=False)
    assert driver.load("memory://bench/global_step_2")
    np.savez = counting_savez
    try:
        driver.save(tmp / "resumed" / "global_step_3")
        driver.save("memory://bench/global_step_3", upload=upload)
    finally:
        np.savez = savez
    return written, sent


if __name__ == "__main__":
    main()
