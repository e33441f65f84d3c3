"""``python -m experiments.online --prompts N``: the prompt book's start-up and per-step cost on a dataset of N prompts.

Why synthetic texts: no shared dataset has a million prompts. The texts are
the 2,722 real DAPO-Math prompts, each repeated with its numbers redrawn and a
serial number appended, so lengths, languages and vocabulary are real and
templated near-duplicates exist, as in the large public RL math sets (Big-Math,
DeepMath). Rates are drawn from a U-shaped Beta: the book's cost does not
depend on them.

Measured: start-up (the book built and ``prepare``d: ids, embeddings with the
default encoder for that size, the neighbour graph), the process's peak
resident memory (the texts included, as in a trainer), the mean and worst
seconds per step (``predict`` + ``select`` + ``record``, refit every step) at
two points of a run (after ``early_rows`` history rows, and after every prompt
was seen once), and the graph's recall@k against exact neighbours on a sample.
"""

from __future__ import annotations

import json
import os
import re
import resource
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

_NUMBER = re.compile(r"\d+")


def synthetic_prompts(n: int, seed: int = 0, source: Path | None = None) -> list[str]:
    """``n`` prompt texts: real DAPO-Math prompts with their numbers redrawn and a serial number (see module doc)."""
    from preroll.data.paths import dapo_dir

    base = list(json.loads(((source or dapo_dir()) / "prompts.json").read_text(encoding="utf-8")).values())
    import random

    which = np.random.default_rng(seed).integers(0, len(base), n).tolist()
    draw = random.Random(seed).randrange   # one small int at a time: no large buffer in the measured peak memory
    out = []
    for i, b in enumerate(which):
        text = _NUMBER.sub(lambda _: str(draw(1, 1000)), base[b]) if i >= len(base) else base[b]
        out.append(f"{text} (#{i})")
    return out


@dataclass(frozen=True)
class ScaleResult:
    n_prompts: int
    encoder: str
    graph: str                  # "exact" or "approximate"
    startup_seconds: float      # PromptBook(...) + prepare(): ids, embeddings, neighbour graph
    startup_cpu_seconds: float  # the same in CPU seconds of this process (what it costs on a machine not shared)
    embed_seconds: float        # of which: embeddings
    graph_seconds: float        # of which: the book (ids, state) and its neighbour graph
    cached_embed_seconds: float  # the same embeddings again, read from the on-disk cache (nan if not cached)
    peak_rss_mb: float          # the whole process's peak resident memory (texts included)
    step_seconds_early: float   # mean per step after ``early_rows`` history rows
    step_seconds_early_max: float
    step_seconds_all_seen: float   # mean per step once every prompt has outcomes
    step_seconds_all_seen_max: float
    step_cpu_seconds_all_seen: float   # CPU seconds per step, all prompts seen
    recall_at_k: float          # share of the exact k nearest other prompts the graph holds, on a sample
    recall_sample: int
    k: int
    load_before: float          # 1-minute load average before and after (the machine is shared)
    load_after: float


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_scale(n_prompts: int, *, pool: int = 2048, batch: int = 512, group_size: int = 8, steps: int = 10,
                  early_rows: int = 50_000, recall_sample: int = 1000, seed: int = 0, all_seen: bool = True,
                  workdir: Path | None = None, log=print) -> ScaleResult:
    """Build a book over ``n_prompts`` synthetic prompts and time it (see the module docstring)."""
    from preroll.online import OnlineSettings, PromptBook
    from preroll.online import book as book_module
    from preroll.online.neighbours import EXACT_MAX, _faiss, graph_recall

    load_before = os.getloadavg()[0]
    texts = synthetic_prompts(n_prompts, seed)
    ids = [f"p{i}" for i in range(n_prompts)]
    log(f"{n_prompts} synthetic prompts ready (rss {_rss_mb():.0f} MB)")
    settings = OnlineSettings(group_size=group_size, seed=seed)
    spec = book_module.encoder_spec(settings.encoder, n_prompts)
    with tempfile.TemporaryDirectory(dir=workdir) as cache, _cache_dir(cache):
        # A cold on-disk cache, so the start-up includes embedding every prompt; the second pass reads it back.
        t0, c0 = time.perf_counter(), time.process_time()
        emb = book_module.embed_prompts(texts, settings.encoder)
        embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        book = PromptBook(texts, ids=ids, settings=settings, embeddings=emb).prepare()
        book_s = time.perf_counter() - t0
        startup_cpu = time.process_time() - c0
        log(f"start-up {embed_s + book_s:.1f} s (embeddings {embed_s:.1f} s), rss {_rss_mb():.0f} MB")
        t0 = time.perf_counter()
        again = book_module.embed_prompts(texts, settings.encoder)
        cached = time.perf_counter() - t0 if spec != "lexical" else float("nan")
        del again
    graph_kind = "approximate" if n_prompts > EXACT_MAX and _faiss() is not None else "exact"
    recall = graph_recall(emb, book._graph[0], sample=recall_sample, seed=seed)
    book._embeddings = None
    del emb
    log(f"recall@{settings.neighbours} {recall:.3f}; embeddings again (cache) {cached:.1f} s")

    cpu = [0.0, 0.0]   # process time at the start of run_steps, and CPU seconds per step of the last call
    rng = np.random.default_rng(seed)
    rates = rng.beta(0.4, 0.4, n_prompts)
    step = 0

    def run_steps(count: int) -> list[float]:
        nonlocal step
        out = []
        cpu[0] = time.process_time()
        for _ in range(count):
            cand = rng.choice(n_prompts, min(pool, n_prompts), replace=False)
            t = time.perf_counter()
            book.predict(cand)
            chosen = book.select(cand, min(batch, len(cand))).indices
            t_sel = time.perf_counter() - t
            groups = _groups(rng.binomial(group_size, rates[chosen]), group_size)
            t = time.perf_counter()
            book.record(step, chosen, groups)
            out.append(t_sel + time.perf_counter() - t)
            step += 1
        cpu[1] = (time.process_time() - cpu[0]) / max(count, 1)
        return out

    def prefill(rows: int, chunk: int) -> None:
        nonlocal step
        order = rng.permutation(n_prompts)
        for start in range(0, min(rows, n_prompts), chunk):
            idx = order[start:start + chunk]
            book.record(step, idx, _groups(rng.binomial(group_size, rates[idx]), group_size))
            step += 1

    prefill(early_rows, batch)
    early = run_steps(steps)
    log(f"per step after {book.rows_} rows: {np.mean(early):.3f} s mean, {np.max(early):.3f} s max")
    late = [float("nan")]
    if all_seen:
        prefill(n_prompts, max(batch, n_prompts // 64))
        late = run_steps(steps)
        log(f"per step with all prompts seen: {np.mean(late):.3f} s mean, {np.max(late):.3f} s max")
    return ScaleResult(n_prompts=n_prompts, encoder=spec, graph=graph_kind, startup_seconds=embed_s + book_s, startup_cpu_seconds=startup_cpu,
                       embed_seconds=embed_s, graph_seconds=book_s,
                       cached_embed_seconds=cached, peak_rss_mb=_rss_mb(),
                       step_seconds_early=float(np.mean(early)), step_seconds_early_max=float(np.max(early)),
                       step_seconds_all_seen=float(np.mean(late)), step_seconds_all_seen_max=float(np.max(late)),
                       step_cpu_seconds_all_seen=cpu[1] if all_seen else float("nan"),
                       recall_at_k=recall, recall_sample=min(recall_sample, n_prompts), k=settings.neighbours,
                       load_before=load_before, load_after=os.getloadavg()[0])


@contextmanager
def _cache_dir(path: str):
    """``PREROLL_CACHE`` pointed at ``path`` for the block (the encoders read it when they open the cache)."""
    old = os.environ.get("PREROLL_CACHE")
    os.environ["PREROLL_CACHE"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PREROLL_CACHE", None)
        else:
            os.environ["PREROLL_CACHE"] = old


def _groups(k: np.ndarray, g: int) -> list[np.ndarray]:
    return [np.r_[np.ones(int(ki)), np.zeros(g - int(ki))] for ki in k]


def print_scale(results: list[ScaleResult], console) -> None:
    from rich.table import Table

    t = Table(title="Prompt book at scale (start-up = ids + embeddings + neighbour graph; per step = predict + "
                    "select + record, refit every step)")
    for col in ("prompts", "view, graph", "start-up s (embed + graph)", "start-up CPU s", "from cache s",
                "peak RSS MB",
                "step s early (max)", "step s all seen (max)", "recall@k", "load 1m"):
        t.add_column(col, justify="right")
    for r in results:
        t.add_row(f"{r.n_prompts:,}", f"{r.encoder}, {r.graph}",
                  f"{r.startup_seconds:.1f} ({r.embed_seconds:.1f} + {r.graph_seconds:.1f})",
                  f"{r.startup_cpu_seconds:.1f}", f"{r.cached_embed_seconds:.1f}", f"{r.peak_rss_mb:.0f}",
                  f"{r.step_seconds_early:.3f} ({r.step_seconds_early_max:.3f})",
                  f"{r.step_seconds_all_seen:.3f} ({r.step_seconds_all_seen_max:.3f}; CPU "
                  f"{r.step_cpu_seconds_all_seen:.3f})",
                  f"{r.recall_at_k:.3f} (k={r.k}, {r.recall_sample})", f"{r.load_before:.1f}-{r.load_after:.1f}")
    console.print(t)


def to_json(results: list[ScaleResult]) -> str:
    return json.dumps([asdict(r) for r in results], indent=2, default=float)
