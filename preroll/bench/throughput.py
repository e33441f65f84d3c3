"""Runners behind ``preroll bench throughput`` (printing rich tables).

Kept out of the CLI module so the measurements can be reused from Python and
the CLI stays a thin option parser.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from preroll.bench.evaluation import cv_seed_spread, encode_unique, peak_rss_mib, time_call
from preroll.encoders.sentence import DEFAULT_BATCH_SIZE


def _load_context(directory: Path):
    from preroll.data import load_v0

    return load_v0(directory / "context.jsonl", directory / "prompts.json")


def _cold_prompts(directory: Path, exclude: set[str], n: int, seed: int) -> list[str]:
    """``n`` prompts of ``prompts.json`` outside ``exclude`` (so nothing is cached by a fit)."""
    texts = [t for t in json.loads((directory / "prompts.json").read_text(encoding="utf-8")).values() if t not in exclude]
    if n > len(texts):
        raise ValueError(f"asked for {n} cold prompts but {directory / 'prompts.json'} has only {len(texts)} outside the fit history")
    rng = np.random.default_rng(seed)
    return [texts[i] for i in rng.choice(len(texts), size=n, replace=False)]


def _load_value_model():
    """The value model class if it is available in this checkout, else None."""
    try:
        from preroll.model.value_model import ValueModel
    except ImportError:
        return None
    return ValueModel


def _print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], note: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=note)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _machine_note() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} CPUs, load average {load} (other load slows every number down)"


def run_throughput(directory: Path, *, spec: str = "minilm", n_prompts: int = 512, max_length: int | None = None,
                   quantize: bool | None = None, threads: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                   seed: int = 0) -> list[dict]:
    """Encode(+predict) throughput for cold and cached prompts, with peak memory."""
    from preroll.encoders import CachedEncoder, get_encoder

    records = _load_context(directory)
    policy, step = records[0].policy, records[0].step
    history = [r for r in records if (r.policy, r.step) == (policy, step)]
    prompts = _cold_prompts(directory, {r.prompt for r in history}, n_prompts, seed)
    value_model_cls = _load_value_model()
    task = "encode+predict" if value_model_cls is not None else "encode only (ValueModel not available)"
    results = []
    with tempfile.TemporaryDirectory(prefix="preroll-bench-") as cache_dir:
        encoder = get_encoder(spec, cache_dir=cache_dir, max_length=max_length, quantize=quantize,
                              num_threads=threads, batch_size=batch_size)
        encoder.fit([r.prompt for r in history])  # fitted parts (lexical, stats) learn from the history
        # Model load (and weight check) is a one-off per process: timed apart from throughput.
        load_timing, _ = time_call(lambda: encoder.encode([history[0].prompt]), 1)
        if value_model_cls is not None:
            model = value_model_cls(encoder=encoder)
            fit_timing, _ = time_call(lambda: model.fit(history), len(history))

            def run():
                return model.predict(prompts)
        else:
            fit_timing = None

            def run():
                return encoder.encode(prompts)

        cold, _ = time_call(run, len(prompts))
        results.append({"phase": "cold (empty cache)", "timing": cold, "rss": peak_rss_mib()})
        warm, _ = time_call(run, len(prompts))
        results.append({"phase": "cached (memory)", "timing": warm, "rss": peak_rss_mib()})
        if isinstance(encoder, CachedEncoder):
            reopened = CachedEncoder(encoder.encoder, cache_dir)
            disk, _ = time_call(lambda: reopened.encode(prompts), len(prompts))
            results.append({"phase": "cached (disk, reopened; encode)", "timing": disk, "rss": peak_rss_mib()})
            encoder.close()
            reopened.close()
    rows = [[r["phase"], f"{r['timing'].per_s:,.0f}", f"{r['timing'].per_cpu_s:,.0f}", f"{r['timing'].wall_s:.2f}",
             f"{r['rss']:,.0f}"] for r in results]
    extra = f"; model load {load_timing.wall_s:.1f} s"
    if fit_timing is not None:
        extra += f"; fit on {len(history)} history rows ({policy}, step {step}) {fit_timing.wall_s:.1f} s"
    _print_table(f"preroll throughput: {encoder.name}, {task}, {len(prompts)} prompts",
                 ["phase", "prompts/s", "prompts/CPU-s", "wall s", "peak RSS MiB"], rows,
                 note=_machine_note() + extra)
    return results


def sweep_settings(lengths: Sequence[int]) -> list[tuple[str, dict]]:
    """The MiniLM settings compared by ``--sweep``: each length, fp32 and int8."""
    return [(f"minilm len={n}{' int8' if q else ''}", {"max_length": n, "quantize": q})
            for n in lengths for q in (False, True)]


def run_sweep(directory: Path, *, lengths: Sequence[int] = (256, 128, 64), threads: int | None = None,
              batch_size: int = DEFAULT_BATCH_SIZE, lexical_baseline: bool = True, seed: int = 0, timing_prompts: int = 256,
              rounds: int = 3) -> list[dict]:
    """Cold throughput and cold-prompt AUC of each MiniLM setting on the context prompts.

    AUC: every distinct context prompt is encoded once per setting; it is
    averaged over three CV fold seeds and its spread reported, so a difference
    between settings can be read against the noise of the folds.

    Throughput: the settings are timed *interleaved* (round 1: A, B, C...; round
    2: A, B, C...) on the same ``timing_prompts`` prompts, so background load on
    a shared machine hits every setting alike; the best and the median round
    are reported.
    """
    from preroll.encoders import LexicalEncoder, get_encoder

    seeds = (seed, seed + 1, seed + 2)
    records = _load_context(directory)
    texts = [r.prompt for r in records]
    unique = list(dict.fromkeys(texts))
    rng = np.random.default_rng(seed)
    sample = [unique[i] for i in rng.choice(len(unique), size=min(timing_prompts, len(unique)), replace=False)]
    encoders: dict[str, object] = {}
    results: dict[str, dict] = {}
    for label, kwargs in sweep_settings(lengths):
        encoder = get_encoder("minilm", cache_dir=False, num_threads=threads, batch_size=batch_size, **kwargs)
        encoders[label] = encoder
    if lexical_baseline:
        lexical = LexicalEncoder()
        lexical.fit(unique)  # unsupervised: sees the texts, never the labels
        encoders["lexical (TF-IDF+SVD, fit on all prompts)"] = lexical
    for label, encoder in encoders.items():
        _, _, vectors = encode_unique(encoder, texts, seed=seed)
        auc, auc_sd = cv_seed_spread(vectors, records, seeds=seeds)
        results[label] = {"setting": label, "name": encoder.name, "auc": auc, "auc_sd": auc_sd, "timings": []}
        print(f"{label}: AUC {auc:.4f} +- {auc_sd:.4f}", flush=True)
    for round_ in range(rounds):
        for label, encoder in encoders.items():
            timing, _ = time_call(lambda: encoder.encode(sample), len(sample))
            results[label]["timings"].append(timing)
            print(f"round {round_ + 1} {label}: {timing.per_s:.1f} prompts/s, {timing.per_cpu_s:.1f} prompts/CPU-s",
                  flush=True)
    rows = []
    for r in results.values():
        r["best_per_s"] = max(t.per_s for t in r["timings"])
        r["median_per_s"] = float(np.median([t.per_s for t in r["timings"]]))
        r["best_per_cpu_s"] = max(t.per_cpu_s for t in r["timings"])
        rows.append([r["setting"], f"{r['best_per_s']:,.1f}", f"{r['median_per_s']:,.1f}",
                     f"{r['best_per_cpu_s']:,.1f}", f"{r['auc']:.4f} ± {r['auc_sd']:.4f}"])
    _print_table(f"encoder settings, DAPO-Math context: AUC on {len(unique)} prompts, speed on {len(sample)} (cold, no cache)",
                 ["setting", "best prompts/s", "median prompts/s", "best prompts/CPU-s", "cold AUC ± sd over CV seeds"],
                 rows, note=_machine_note() + f"; speed over {rounds} interleaved rounds (other load only slows a "
                 "round, so the best is closest to a quiet machine); AUC: 8-fold CV LogisticRegression(C=1) per "
                 "(policy, step), label rate>=0.5, mean of the groups")
    return list(results.values())
