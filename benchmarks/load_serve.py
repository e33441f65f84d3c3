"""Load test of ``preroll serve`` on loopback: concurrent requests through the proxy to two fake backends.

Starts two fake OpenAI-compatible backends and the proxy as subprocesses (so
the load generator in this process does not share an interpreter with the
server), fits the router on real MMLU outcomes of two models, then:

1. sends ``--sequential`` requests one at a time: the router's decision
   latency with nothing else running (one prompt per router call);
2. fires ``--requests`` requests at once (``--concurrency`` in flight, every
   4th streamed): errors, throughput, end-to-end latency, and the router's
   decision latency under that load;
3. fires the same requests pinned to one backend: the proxy's own cost
   without routing, for comparison.

Every routed prompt is an MMLU question not in the histories and not sent
before, and the embedding cache starts empty, so no decision reads a cached
embedding. The proxy runs as it would on a network: a bearer token (from an
environment variable named in its config) on every request, the default
body/prompt limits and circuit breakers. Bounded: a fixed request count and a
total ``--timeout``; it stops by itself and exits non-zero if any request failed.

    python benchmarks/load_serve.py                       # defaults: 200 concurrent, minilm
    python benchmarks/load_serve.py --encoder lexical     # without the transformer
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml
from _procs import free_port, stop, wait_up

from preroll.bench.mmlu import load_mmlu


#: The environment variable the proxy reads its bearer token from (the token itself is never in the file).
TOKEN_ENV = "PREROLL_LOAD_TOKEN"


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def prepare(workdir: Path, args) -> tuple[Path, list[str], list[str], dict[str, str]]:
    """Histories from MMLU rows, the serve config, and unseen prompts for the two phases."""
    data = load_mmlu()
    order = np.random.default_rng(args.seed).permutation(len(data))
    hist_idx = order[:args.history]
    seq_idx = order[args.history:args.history + args.sequential]
    load_idx = order[args.history + args.sequential:args.history + args.sequential + args.requests]
    if len(data.models) != 2:
        raise SystemExit(f"expected two models in the MMLU data, found {data.models}")
    names = dict(zip(data.models, ("weak", "strong"), strict=True))  # column order: Mixtral, then GPT-4
    histories = data.histories(hist_idx)
    for model, records in histories.items():
        with open(workdir / f"{names[model]}.jsonl", "w") as f:
            for r in records:
                f.write(json.dumps({"prompt": r.prompt, "successes": r.successes, "attempts": r.attempts}) + "\n")
    ports = {names[m]: free_port() for m in data.models}
    costs = {"weak": args.cost_weak, "strong": args.cost_strong}
    config = {
        "store": "history.sqlite",
        "router": {"encoder": args.encoder, "head": "auto", "rule": "utility", "lam": args.lam,
                   "max_batch": args.max_batch, "refit_every": 1000, "cache_dir": "embedding-cache",
                   "threads": args.threads or None},
        "server": {"auth_token_env": TOKEN_ENV},
        "backends": [{"name": n, "base_url": f"http://127.0.0.1:{ports[n]}/v1", "model": f"fake-{n}",
                      "cost_per_call": costs[n], "timeout_s": 30, "history": f"{n}.jsonl"}
                     for n in names.values()],
    }
    path = workdir / "serve.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    prompts = [data.prompts[i] for i in seq_idx], [data.prompts[i] for i in load_idx]
    return path, prompts[0], prompts[1], {n: str(p) for n, p in ports.items()}


async def one(client: httpx.AsyncClient, url: str, prompt: str, stream: bool, model: str = "auto") -> dict:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}
    t0 = time.perf_counter()
    try:
        if stream:
            async with client.stream("POST", url, json=body) as r:
                text = (await r.aread()).decode()
                ok = r.status_code == 200 and "data: [DONE]" in text
                headers = r.headers
        else:
            r = await client.post(url, json=body)
            ok = r.status_code == 200 and bool(r.json()["choices"][0]["message"]["content"])
            headers = r.headers
        status = r.status_code
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "ms": (time.perf_counter() - t0) * 1000}
    out = {"ok": ok, "status": status, "ms": (time.perf_counter() - t0) * 1000,
           "model": headers.get("x-preroll-model"), "fallback": headers.get("x-preroll-fallback")}
    for key in ("router-ms", "router-wait-ms", "router-batch"):
        value = headers.get(f"x-preroll-{key}")
        out[key] = float(value) if value is not None else None
    return out


async def run_phases(base: str, seq_prompts: list[str], load_prompts: list[str], args) -> tuple:
    url = f"{base}/v1/chat/completions"
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)

    def client() -> httpx.AsyncClient:
        # A fresh client per phase: connections left idle between phases would
        # race the server's keep-alive timeout, which is not what is measured here.
        return httpx.AsyncClient(timeout=args.request_timeout, limits=limits,
                                 headers={"authorization": f"Bearer {args.token}"})

    async def burst(model: str) -> tuple[list, float]:
        sem = asyncio.Semaphore(args.concurrency)
        async with client() as c:
            async def bounded(i: int, p: str) -> dict:
                async with sem:
                    return await one(c, url, p, stream=(i % 4 == 3), model=model)

            t0 = time.perf_counter()
            results = await asyncio.gather(*(bounded(i, p) for i, p in enumerate(load_prompts)))
            return results, time.perf_counter() - t0

    async with client() as c:
        sequential = [await one(c, url, p, stream=False) for p in seq_prompts]
    loaded, wall = await burst("auto")
    pinned, pinned_wall = await burst("weak")
    return sequential, loaded, wall, pinned, pinned_wall


def report(sequential: list, loaded: list, wall: float, pinned: list, pinned_wall: float, stats: dict, args,
           load_before, load_after) -> int:
    errors = [r for r in (*sequential, *loaded, *pinned) if not r["ok"]]
    rows = []

    def row(name, value):
        rows.append((name, value))

    seq_router = [r["router-ms"] for r in sequential if r.get("router-ms") is not None]
    load_router = [r["router-ms"] for r in loaded if r.get("router-ms") is not None]
    load_wait = [r["router-wait-ms"] for r in loaded if r.get("router-wait-ms") is not None]
    e2e = [r["ms"] for r in loaded if r["ok"]]
    batches = [r["router-batch"] for r in loaded if r.get("router-batch") is not None]
    row("encoder / head / max_batch", f"{args.encoder} / auto / {args.max_batch}")
    row("history rows per model (MMLU)", f"{args.history}")
    row("requests (concurrent, 1 in 4 streamed)", f"{len(loaded)} ({args.concurrency} in flight)")
    row("wall time", f"{wall:.2f} s")
    row("throughput", f"{len(loaded) / wall:.1f} req/s")
    row("end-to-end latency p50 / p99", f"{pct(e2e, 50):.0f} / {pct(e2e, 99):.0f} ms")
    row("router decision, alone (1 prompt/call) p50 / p99",
        f"{pct(seq_router, 50):.1f} / {pct(seq_router, 99):.1f} ms  (n={len(seq_router)})")
    row("router decision, under load (per call) p50 / p99", f"{pct(load_router, 50):.1f} / {pct(load_router, 99):.1f} ms")
    row("router batch size under load mean / max", f"{np.mean(batches):.1f} / {max(batches):.0f}" if batches else "-")
    row("wait for decision under load p50 / p99", f"{pct(load_wait, 50):.0f} / {pct(load_wait, 99):.0f} ms")
    lat = stats.get("latency_ms", {})
    if lat.get("decision_ms", {}).get("n"):
        d = lat["decision_ms"]
        row("/stats decision_ms p50 / p99 (all calls)", f"{d['p50']:.1f} / {d['p99']:.1f} ms")
    pinned_e2e = [r["ms"] for r in pinned if r["ok"]]
    row("same load pinned to one backend (no routing)",
        f"{len(pinned) / pinned_wall:.1f} req/s, end-to-end p50 / p99 "
        f"{pct(pinned_e2e, 50):.0f} / {pct(pinned_e2e, 99):.0f} ms")
    row("errors (all phases)", f"{len(errors)}")
    row("served by model", json.dumps(stats.get("served_by_model", {})))
    row("circuit breakers (state, opens)", ", ".join(f"{n}: {b['state']}, {b['opens']}"
                                                     for n, b in stats.get("breakers", {}).items()))
    row("load average before / after", f"{load_before:.2f} / {load_after:.2f}  ({os.cpu_count()} CPUs)")
    width = max(len(n) for n, _ in rows)
    print()
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for r in errors[:10]:
        print("error:", r)
    print("PASS: zero errors" if not errors else f"FAIL: {len(errors)} errors")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--sequential", type=int, default=200, help="requests sent one at a time before the load")
    p.add_argument("--history", type=int, default=300, help="MMLU rows in each model's history")
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="the server's encoder threads (router.threads; 0: torch's default)")
    p.add_argument("--lam", type=float, default=0.3)
    p.add_argument("--cost-weak", type=float, default=0.24, help="example price per call of the weaker model")
    p.add_argument("--cost-strong", type=float, default=1.0, help="example price per call of the stronger model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=600)
    p.add_argument("--request-timeout", type=float, default=120)
    p.add_argument("--timeout", type=float, default=600, help="total seconds for both phases")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    args = p.parse_args(argv)

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="preroll-load-") as tmp:
        workdir = Path(tmp)
        config_path, seq_prompts, load_prompts, ports = prepare(workdir, args)
        args.token = secrets.token_urlsafe(24)
        env = {**os.environ, "PREROLL_CACHE": str(workdir / "embedding-cache"), TOKEN_ENV: args.token}
        logs = open(workdir / "server.log", "w")
        try:
            for name, port in ports.items():
                procs.append(subprocess.Popen([sys.executable, "-m", "preroll.serve.testing", "--name",
                                               f"fake-{name}", "--port", port], stdout=logs, stderr=logs, env=env))
            for (name, port), proc in zip(ports.items(), procs):
                wait_up(f"http://127.0.0.1:{port}/v1/models", proc, 60, f"fake backend {name}")
            proxy_port = free_port()
            t0 = time.perf_counter()
            proxy = subprocess.Popen([sys.executable, "-m", "preroll.cli.main", "serve", "--config", str(config_path),
                                      "--port", str(proxy_port)], stdout=logs, stderr=logs, env=env)
            procs.append(proxy)
            base = f"http://127.0.0.1:{proxy_port}"
            wait_up(f"{base}/health", proxy, args.startup_timeout, "proxy")
            print(f"proxy up in {time.perf_counter() - t0:.1f}s (history import, embedding, fit)")
            load_before = os.getloadavg()[0]
            sequential, loaded, wall, pinned, pinned_wall = asyncio.run(
                asyncio.wait_for(run_phases(base, seq_prompts, load_prompts, args), timeout=args.timeout))
            load_after = os.getloadavg()[0]
            stats = httpx.get(f"{base}/stats", timeout=10, headers={"authorization": f"Bearer {args.token}"}).json()
        except BaseException:
            logs.flush()
            sys.stderr.write((workdir / "server.log").read_text()[-4000:])
            raise
        finally:
            stop(procs)
            logs.close()
        if args.json:
            args.json.write_text(json.dumps({"sequential": sequential, "load": loaded, "wall_s": wall,
                                             "pinned": pinned, "pinned_wall_s": pinned_wall,
                                             "stats": stats, "args": {k: str(v) for k, v in vars(args).items()
                                                                      if k != "token"}},
                                            indent=1))
        return report(sequential, loaded, wall, pinned, pinned_wall, stats, args, load_before, load_after)


if __name__ == "__main__":
    sys.exit(main())
