"""Throughput and memory of ``preroll score``, end to end, single process vs local Ray.

    python benchmarks/bench_score.py [--work-dir /tmp/bench-score] [--lexical-rows 100000] [--default-rows 20000]

Prompts are the real prompts of the shared data (DAPO-Math prompts.json,
llmrouter-9 train.jsonl, the MMLU CSVs), about 22k distinct texts, tiled with
an index suffix (`` [#123]``) to reach the requested count, and written as
Parquet shards of 25k rows. The model is fitted once on the DAPO-Math history
(3,072 outcomes) with ``preroll fit``. Every row of the table is one
``preroll score`` subprocess (start-up, model load, reading, scoring, writing,
report); the rate is rows / wall time of the whole command, and the peak RSS is
the largest sum of resident memory over the command's process tree (sampled
every 0.2 s; for Ray it includes the raylet and the worker processes).
``in-run/s`` is the rate the command reports itself (model load, reading, scoring
and writing, without the interpreter's start-up). Prints a table and writes
``bench_score.json`` in the work directory.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARD_ROWS = 25_000


def real_prompts() -> list[tuple[str, str]]:
    """Distinct real prompts from the bundled data with their source, in a seeded shuffled order (fixed across runs)."""
    from preroll.data.paths import dapo_dir, llmrouter_dir, mmlu_dir

    found: dict[str, str] = {}
    for text in json.loads((dapo_dir() / "prompts.json").read_text(encoding="utf-8")).values():
        found.setdefault(text, "dapo-math")
    with (llmrouter_dir() / "train.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                found.setdefault(json.loads(line)["prompt"], "llmrouter-9")
    csv.field_size_limit(1 << 24)
    for path in sorted((mmlu_dir() / "responses").glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                found.setdefault(row["prompt"], "mmlu")
    out = [(text, source) for text, source in found.items() if text and text.strip()]
    import random

    random.Random(0).shuffle(out)  # sources interleaved: any prefix is a sample of the whole mix
    return out


def write_pool(directory: Path, n: int, prompts: list[tuple[str, str]]) -> Path:
    """``n`` rows as Parquet shards; prompts beyond the real ones are tiled with an index suffix.

    ``prompts`` come in a seeded random order (:func:`real_prompts`), so a small pool is a sample of the same
    mix of sources and lengths as a large one: a memory comparison between them measures the dataset's size,
    not a different mix (the first 10k prompts in file order were short DAPO and LLMRouter ones only).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if directory.exists():
        return directory
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for start in range(0, n, SHARD_ROWS):
        idx = range(start, min(n, start + SHARD_ROWS))
        rows = {"id": [f"q{i}" for i in idx],
                "prompt": [prompts[i % len(prompts)][0] + (f" [#{i}]" if i >= len(prompts) else "") for i in idx],
                "source": [prompts[i % len(prompts)][1] for i in idx]}
        pq.write_table(pa.table(rows), tmp / f"shard-{start // SHARD_ROWS:04d}.parquet")
    tmp.rename(directory)
    return directory


def history(path: Path) -> Path:
    from preroll.data import load_v0
    from preroll.data.paths import dapo_dir

    if not path.exists():
        with path.open("w", encoding="utf-8") as fh:
            for r in load_v0(dapo_dir() / "context.jsonl"):
                fh.write(json.dumps(r.model_dump(exclude_none=True), ensure_ascii=False) + "\n")
    return path


def run_measured(cmd: list[str], env: dict) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS (MiB, whole process tree), stderr and CPU seconds of a command; raises on failure.

    CPU seconds (user + system of the command and the children it waited for) say what the command costs
    whatever else runs on the machine; wall seconds depend on the load. Ray's daemons are not counted.
    """
    import resource
    import tempfile

    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    errors.seek(0)
    stderr = errors.read().decode("utf-8", errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, peak / 2**20, stderr, cpu


def in_run_rate(stderr: str) -> float | None:
    """The rate `preroll score` reports itself: rows / (model load + read + score + write), no interpreter start."""
    import re

    m = re.search(r"scored ([\d,]+) rows in ([\d.]+) s", stderr)
    return int(m.group(1).replace(",", "")) / float(m.group(2)) if m else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-score"))
    parser.add_argument("--lexical-rows", type=int, default=100_000)
    parser.add_argument("--default-rows", type=int, default=20_000)
    parser.add_argument("--small-rows", type=int, default=10_000, help="the memory-flatness comparison size")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--policy", default="Qwen3-4B-Instruct", help="the history's policy to score for")
    parser.add_argument("--runs", default="all",
                        help="comma-separated subset of: lexical-small, lexical, lexical-ray, default-cold, "
                             "default-cached, minilm-cached, default-cached-ray (the warm runs need default-cold "
                             "first, on the same --default-rows)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local scoring processes (default: the command's own, this machine's CPUs)")
    parser.add_argument("--usd-per-cpu-hour", type=float, default=0.04,
                        help="assumed price of one vCPU-hour for the 1M-prompt cost estimate")
    args = parser.parse_args()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "PREROLL_CACHE": str(work / "cache"), "RAY_DEDUP_LOGS": "0"}
    cli = [sys.executable, "-m", "preroll.cli.main"]
    prompts = real_prompts()
    print(f"{len(prompts):,} distinct real prompts; pools beyond that are tiled with an index suffix", flush=True)
    hist = history(work / "history.jsonl")

    models = {}
    needed = {"lexical-small": "lexical", "lexical": "lexical", "lexical-ray": "lexical", "default-cold": "default",
              "default-cached": "default", "default-cached-ray": "default", "minilm-cached": "minilm"}
    for name, spec in (("lexical", "lexical"), ("default", "minilm+lexical+stats"), ("minilm", "minilm")):
        if args.runs != "all" and name not in {needed.get(r) for r in args.runs.split(",")}:
            continue
        target = work / f"model-{name}"
        if not target.exists():
            # The fit's own cache is kept apart, so the first scoring run below starts really cold.
            seconds, _, _, _ = run_measured(cli + ["fit", "--context", str(hist), "--save", str(target),
                                                "--encoder", spec], {**env, "PREROLL_CACHE": str(work / "cache-fit")})
            print(f"fit {spec}: {seconds:.0f} s", flush=True)
        models[name] = target

    results_path = work / "bench_score.json"
    wanted = None if args.runs == "all" else set(args.runs.split(","))
    # Results of earlier invocations (other --runs) are kept, so a long benchmark can be taken in pieces.
    results = [r for r in (json.loads(results_path.read_text()) if results_path.exists() else [])
               if wanted is not None and r["run"] not in wanted]

    def score(label, model, rows, extra=(), cache="cold"):
        """One measured run; ``cache="warm"`` relies on an earlier run having encoded the same pool."""
        if wanted is not None and label not in wanted:
            return
        pool = write_pool(work / f"pool-{rows}", rows, prompts)
        out = work / f"out-{label}"
        if "--ray" not in extra and args.workers is not None:
            extra = (*extra, "--workers", str(args.workers))
        seconds, peak, stderr, cpu = run_measured(cli + ["score", "--model", str(models[model]), "--input", str(pool),
                                                         "--out", str(out), "--force", "--no-progress",
                                                         "--policy", args.policy, *extra], env)
        row = {"run": label, "model": model, "rows": rows, "backend": "ray" if "--ray" in extra else "local",
               "workers": int(extra[extra.index("--workers") + 1]) if "--workers" in extra else os.cpu_count(), "cache": cache if model != "lexical" else "-",
               "seconds": round(seconds, 1), "prompts_per_s": round(rows / seconds),
               "cpu_seconds": round(cpu, 1), "prompts_per_cpu_s": round(rows / cpu) if cpu else 0,
               "load_avg": round(os.getloadavg()[0], 1),
               "in_run_prompts_per_s": round(in_run_rate(stderr) or 0), "peak_rss_mib": round(peak)}
        results.append(row)
        print(json.dumps(row), flush=True)
        results_path.write_text(json.dumps(results, indent=1))

    if wanted is None or "default-cold" in wanted:
        shutil.rmtree(work / "cache", ignore_errors=True)  # the scoring runs' embedding cache starts empty
    score("lexical-small", "lexical", args.small_rows)
    score("lexical", "lexical", args.lexical_rows)
    if not args.no_ray:
        score("lexical-ray", "lexical", args.lexical_rows, ("--ray", "--workers", "2"))
    score("default-cold", "default", args.default_rows)                  # encodes every prompt with MiniLM
    score("default-cached", "default", args.default_rows, cache="warm")  # MiniLM vectors from the cache
    score("minilm-cached", "minilm", args.default_rows, cache="warm")
    if not args.no_ray:
        score("default-cached-ray", "default", args.default_rows, ("--ray", "--workers", "2"), cache="warm")

    print()
    print(f"{'run':<22}{'encoder':<22}{'rows':>9}{'backend':>9}{'cache':>7}{'seconds':>9}{'prompts/s':>11}"
          f"{'in-run/s':>10}{'per CPU-s':>11}{'peak RSS MiB':>14}{'load':>6}")
    specs = {"lexical": "lexical", "default": "minilm+lexical+stats", "minilm": "minilm"}
    for r in results:
        print(f"{r['run']:<22}{specs[r['model']]:<22}{r['rows']:>9,}{r['backend']:>9}{r['cache']:>7}"
              f"{r['seconds']:>9.1f}{r['prompts_per_s']:>11,}{r['in_run_prompts_per_s']:>10,}"
              f"{r.get('prompts_per_cpu_s', 0):>11,}{r['peak_rss_mib']:>14,}{r.get('load_avg', 0):>6}")
    by = {r["run"]: r for r in results}
    if "lexical-small" in by and "lexical" in by:
        ratio = by["lexical"]["peak_rss_mib"] / by["lexical-small"]["peak_rss_mib"]
        print(f"\nmemory flatness: peak RSS {by['lexical']['rows']:,} rows / {by['lexical-small']['rows']:,} rows "
              f"= {ratio:.2f}x (target <= 1.2x)")
    print("\nestimated time and cost of 1M prompts, assuming linear scaling with workers "
          f"(one worker = one vCPU at the measured single-process rate; ${args.usd_per_cpu_hour}/vCPU-hour assumed):")
    for label in ("lexical", "default-cold", "default-cached"):
        if label not in by:
            continue
        rate = by[label]["prompts_per_s"]
        cells = []
        for n in (1, 8, 32, 128):
            hours = 1e6 / (rate * n) / 3600
            cells.append(f"N={n}: {hours * 60:,.1f} min, ${hours * n * args.usd_per_cpu_hour:,.2f}")
        print(f"  {label:<16} " + " | ".join(cells))


if __name__ == "__main__":
    main()
