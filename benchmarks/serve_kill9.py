"""kill -9 of ``preroll serve`` under concurrent feedback: no acknowledged outcome may be lost.

Each round starts the real server (``python -m preroll.cli.main serve``, lexical
encoder) over two fake upstreams, fires ``--workers`` concurrent clients that
post graded outcomes with unique prompts, and SIGKILLs the server at a random
moment (``--min-s`` to ``--max-s`` after the load starts). Then the store is
opened directly: every outcome the server answered 200 must be there, and
``PRAGMA integrity_check`` must say ok. The next round restarts on the same
store. Prints one row per round; exits non-zero on any loss. Bounded.

    python benchmarks/serve_kill9.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import yaml
from _procs import free_port, stop, wait_up

MATH = [f"math question {i}: add {i} and {i + 3} then multiply" for i in range(30)]
HISTORY = [f"history question {i}: which emperor ruled rome in year {100 + i}" for i in range(30)]


async def load(base: str, round_no: int, workers: int, acked: list[str], stop: asyncio.Event) -> int:
    sent = 0

    async def worker(w: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(timeout=30) as client:
            i = 0
            while not stop.is_set():
                prompt = f"round {round_no} worker {w} outcome {i}: " + random.choice(MATH + HISTORY)
                i += 1
                sent += 1
                try:
                    r = await client.post(f"{base}/v1/feedback", json={
                        "model": random.choice(["small", "large"]), "prompt": prompt,
                        "successes": random.randint(0, 1), "attempts": 1})
                except httpx.HTTPError as exc:
                    if not stop.is_set() and os.environ.get("KILL9_DEBUG"):
                        print("client error before the kill:", repr(exc), file=sys.stderr)
                    return  # the server is gone
                if r.status_code == 200:
                    acked.append(prompt)

    await asyncio.gather(*(worker(w) for w in range(workers)))
    return sent


async def one_round(server: subprocess.Popen, base: str, round_no: int, workers: int, acked: list[str],
                    kill_after: float) -> int:
    """Load the server, SIGKILL it after ``kill_after`` seconds; return the requests sent."""
    stop = asyncio.Event()
    task = asyncio.create_task(load(base, round_no, workers, acked, stop))
    await asyncio.sleep(kill_after)
    server.send_signal(signal.SIGKILL)
    await asyncio.sleep(0.5)
    stop.set()
    return await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--min-s", type=float, default=2.0)
    parser.add_argument("--max-s", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup-timeout", type=float, default=180)
    args = parser.parse_args(argv)
    random.seed(args.seed)

    procs: list[subprocess.Popen] = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="preroll-kill9-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "PREROLL_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1"}
        logs = open(root / "server.log", "w")
        try:
            ports = {n: str(free_port()) for n in ("small", "large")}
            for name, port in ports.items():
                procs.append(subprocess.Popen([sys.executable, "-m", "preroll.serve.testing", "--name", name,
                                               "--port", port], stdout=logs, stderr=logs, env=env))
                wait_up(f"http://127.0.0.1:{port}/v1/models", procs[-1], 60, f"fake backend {name}")
            for name, pairs in (("small", [(p, 1) for p in MATH] + [(p, 0) for p in HISTORY]),
                                ("large", [(p, 1) for p in MATH + HISTORY])):
                (root / f"{name}.jsonl").write_text("".join(
                    json.dumps({"prompt": p, "successes": s, "attempts": 1}) + "\n" for p, s in pairs))
            config = {"store": "history.sqlite", "check_backends": False,
                      "router": {"encoder": "lexical", "refit_every": 500, "cache_dir": False},
                      "backends": [{"name": n, "base_url": f"http://127.0.0.1:{ports[n]}/v1", "cost_per_call": c,
                                    "history": f"{n}.jsonl"} for n, c in (("small", 0.1), ("large", 1.0))]}
            (root / "serve.yaml").write_text(yaml.safe_dump(config))
            store = root / "history.sqlite"
            for round_no in range(1, args.rounds + 1):
                port = free_port()
                server = subprocess.Popen([sys.executable, "-m", "preroll.cli.main", "serve", "--config",
                                           str(root / "serve.yaml"), "--port", str(port)],
                                          stdout=logs, stderr=logs, env=env)
                procs.append(server)             # stopped at the end if a round fails before its kill
                wait_up(f"http://127.0.0.1:{port}/health", server, args.startup_timeout, "preroll serve")
                acked: list[str] = []
                kill_after = random.uniform(args.min_s, args.max_s)

                sent = asyncio.run(one_round(server, f"http://127.0.0.1:{port}", round_no, args.workers, acked,
                                             kill_after))
                server.wait(timeout=30)
                with sqlite3.connect(store) as conn:
                    stored = {p for (p,) in conn.execute("SELECT prompt FROM outcomes WHERE prompt LIKE ?",
                                                         (f"round {round_no} %",))}
                    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
                lost = sum(p not in stored for p in acked)
                rows.append((round_no, round(kill_after, 2), sent, len(acked), len(stored), lost, integrity))
        finally:
            stop(procs)
            logs.close()
    print(f"{'round':>5} {'kill at s':>9} {'sent':>6} {'acked':>6} {'stored':>6} {'lost':>5} integrity")
    for row in rows:
        print(f"{row[0]:>5} {row[1]:>9} {row[2]:>6} {row[3]:>6} {row[4]:>6} {row[5]:>5} {row[6]}")
    total_acked, total_lost = sum(r[3] for r in rows), sum(r[5] for r in rows)
    print(f"total: {total_acked} acknowledged, {total_lost} lost, "
          f"integrity {'ok' if all(r[6] == 'ok' for r in rows) else 'FAILED'}")
    return 0 if total_lost == 0 and all(r[6] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
