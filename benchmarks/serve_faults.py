"""``preroll serve`` under two faults a unit test cannot stage honestly: a real full disk and a 200 MB answer.

1. **Disk full.** The history store lives on a small tmpfs (mounted here; needs
   root, skipped otherwise). The disk is filled, then ``--feedback`` graded
   outcomes are posted: each must get a JSON answer (507 once the store is full)
   and chat requests must keep being routed meanwhile. The space is freed, more
   feedback is posted, and every acknowledged row must be in the store.
2. **A runaway upstream.** One fake upstream answers ``--answer-mb`` MB. The
   proxy's peak RSS growth over the request is measured (``ru_maxrss``), with
   the default ``limits.max_upstream_bytes`` (16 MiB).

Prints one table; exits non-zero if any expectation fails. Everything runs
in this process on loopback (the proxy, two fake upstreams); bounded.

    sudo python benchmarks/serve_faults.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


class HashingEncoder:
    """Bag of hashed words: instant and stateless, so the benchmark measures the proxy, not an encoder."""

    name = "bench-hashing-128"

    def fit(self, texts):
        return self

    def encode(self, texts, *, show_progress=False):
        X = np.zeros((len(texts), 128), np.float32)
        for i, text in enumerate(texts):
            for word in text.lower().split():
                X[i, zlib.crc32(word.encode()) % 128] += 1.0
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-9)


MATH = [f"math question {i}: add {i} and {i + 3} then multiply" for i in range(30)]
HISTORY = [f"history question {i}: which emperor ruled rome in year {100 + i}" for i in range(30)]


def _proxy(root: Path, urls: dict[str, str], store: Path, **limits):
    import yaml

    from preroll.encoders.base import Encoder
    from preroll.serve.app import create_app
    from preroll.serve.config import load_config

    class Enc(HashingEncoder, Encoder):
        pass

    for name, rows in (("small", [(p, 1) for p in MATH] + [(p, 0) for p in HISTORY]),
                       ("large", [(p, 1) for p in MATH + HISTORY])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p, "successes": s, "attempts": 1}) + "\n"
                                                    for p, s in rows))
    config = {"store": str(store), "check_backends": False, "router": {"rule": "utility", "lam": 0.5,
                                                                        "refit_every": 100000},
              "backends": [{"name": n, "base_url": f"{urls[n]}/v1", "cost_per_call": c, "timeout_s": 60,
                            "history": f"{n}.jsonl"} for n, c in (("small", 0.1), ("large", 1.0))]}
    if limits:
        config["limits"] = limits
    (root / "serve.yaml").write_text(yaml.safe_dump(config))
    return create_app(load_config(root / "serve.yaml"), encoder=Enc())


def disk_full(fakes_urls, n_feedback: int) -> dict:
    import httpx

    from preroll.serve.store import HistoryStore
    from preroll.serve.testing import serve_in_thread

    mnt = Path(tempfile.mkdtemp(prefix="preroll-full-"))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True,
                      check=False).returncode:
        mnt.rmdir()
        return {"skipped": "cannot mount a tmpfs here (needs root)"}
    statuses: dict[str, int] = {}
    acked: list[str] = []
    chat_ok = chats = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            app = _proxy(Path(tmp), fakes_urls, mnt / "history.sqlite")
            with serve_in_thread(app) as url:
                fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
                try:
                    while True:
                        os.write(fd, b"\0" * 65536)
                except OSError:
                    pass
                try:
                    while True:
                        os.write(fd, b"\0" * 512)
                except OSError:
                    pass
                os.close(fd)

                def feedback(i: int, phase: str) -> None:
                    prompt = f"{phase} feedback {i} " + "w" * 2000
                    try:
                        r = httpx.post(f"{url}/v1/feedback", json={"model": "small", "prompt": prompt,
                                                                   "successes": 1, "attempts": 1}, timeout=30)
                        key = f"{phase} {r.status_code}" + ("" if _is_json(r) else " (not JSON)")
                        if r.status_code == 200:
                            acked.append(prompt)
                    except httpx.HTTPError as exc:
                        key = f"{phase} no reply ({type(exc).__name__})"
                    statuses[key] = statuses.get(key, 0) + 1

                for i in range(n_feedback):
                    feedback(i, "full")
                    chats += 1
                    r = httpx.post(f"{url}/v1/chat/completions", timeout=30,
                                   json={"messages": [{"role": "user", "content": MATH[i % 30]}]})
                    chat_ok += r.status_code == 200
                os.remove(mnt / "filler")
                for i in range(n_feedback):
                    feedback(i, "freed")
        with HistoryStore(mnt / "history.sqlite") as store:
            stored = {o.prompt for o in store.records("small")}
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, check=False)
        mnt.rmdir()
    lost = sum(p not in stored for p in acked)
    return {"statuses": statuses, "chats_routed": f"{chat_ok}/{chats}", "acknowledged": len(acked), "lost": lost}


def _is_json(r) -> bool:
    try:
        r.json()
    except ValueError:
        return False
    return True


def runaway(fakes, urls, answer_mb: int) -> dict:
    import httpx

    from preroll.serve.testing import serve_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        app = _proxy(Path(tmp), urls, Path(tmp) / "history.sqlite")
        with serve_in_thread(app) as url:
            body = {"model": "small", "messages": [{"role": "user", "content": MATH[0]}]}
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)  # warm
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            fakes["small"].pad_bytes = answer_mb * 1024 * 1024
            t0 = time.perf_counter()
            received = 0
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=300) as r:
                for chunk in r.iter_bytes():
                    received += len(chunk)
                status = r.status_code
            seconds = time.perf_counter() - t0
            fakes["small"].pad_bytes = 0
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"status": status, "bytes_relayed": received, "seconds": round(seconds, 2),
            "peak_rss_mb_before": round(before), "peak_rss_mb_after": round(after),
            "peak_rss_growth_mb": round(after - before)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", type=int, default=20, help="Feedback posts while the disk is full.")
    parser.add_argument("--answer-mb", type=int, default=200, help="Size of the runaway upstream's answer.")
    args = parser.parse_args(argv)

    from preroll.serve.testing import (
        FakeBackend,
        create_fake_backend_app,
        serve_in_thread,
    )

    fakes = {"small": FakeBackend("small-up"), "large": FakeBackend("large-up")}
    with serve_in_thread(create_fake_backend_app(fakes["small"])) as small, \
            serve_in_thread(create_fake_backend_app(fakes["large"])) as large:
        urls = {"small": small, "large": large}
        full = disk_full(urls, args.feedback)
        big = runaway(fakes, urls, args.answer_mb)
    print(f"{'case':<28} result")
    print("-" * 100)
    for key, value in full.items():
        print(f"{'disk full: ' + key:<28} {value}")
    for key, value in big.items():
        print(f"{f'{args.answer_mb} MB answer: ' + key:<28} {value}")
    ok = big["status"] != 200 and big["bytes_relayed"] < 1024 * 1024
    if "skipped" not in full:
        ok = ok and full["lost"] == 0 and all(k.split()[1] in ("200", "507") and "not JSON" not in k
                                              for k in full["statuses"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
