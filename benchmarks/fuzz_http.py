"""Fuzz the proxy's HTTP surface: >= 10,000 generated requests, and not one 500 or traceback allowed.

Runs :mod:`preroll.serve.fuzzing`: a real proxy app in process (bearer token,
lexical encoder, 64 KiB body and upstream limits) over two fake upstreams on
loopback, and hypothesis-generated requests against every endpoint (chat
completions, route, feedback, stats, models, health, refit, plus odd methods
and paths): valid bodies with fields swapped for wrong types, NaN/Infinity,
lone surrogates, huge integers, long or empty text and unknown models;
arbitrary JSON; raw bytes and 5,000-deep nesting; odd ``x-preroll-lambda``,
``content-type``, ``authorization`` and ``Origin`` headers. Every answer must
be a 2xx, a 4xx or 502/503/504/507, in JSON with the error shape when it is
an error (:func:`preroll.serve.fuzzing.problem`).

Prints one row per endpoint (cases, status counts, 500s, other rule breaks)
and the first few breaking cases; exits non-zero if any. Bounded by
``--cases`` and ``--timeout``.

    python benchmarks/fuzz_http.py                  # 10,000 cases
    python benchmarks/fuzz_http.py --cases 500      # a quick look
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="Cases from preroll's own request strategies.")
    parser.add_argument("--schema-cases", type=int, default=2_000,
                        help="Further cases schemathesis derives from the app's OpenAPI schema.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=3600, help="Stop generating after this many seconds.")
    parser.add_argument("--out", type=Path, default=None, help="Also write the table as JSON here.")
    args = parser.parse_args(argv)

    from hypothesis import HealthCheck, Phase, given, seed, settings

    from preroll.serve.fuzzing import (
        ENDPOINTS,
        MAX_UPSTREAM_BYTES,
        FuzzTarget,
        problem,
        requests,
        schema_requests,
        send,
    )

    by_endpoint: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    broken: list[tuple[str, str]] = []
    t0 = time.monotonic()
    with FuzzTarget() as client:
        def check(case, source: str) -> None:
            if time.monotonic() - t0 > args.timeout:
                return
            r = send(client, case)
            counts = by_endpoint[f"{case.method} {case.path.split('?')[0]}"]
            counts["cases"] += 1
            counts[source] += 1
            counts[r.status_code] += 1
            what = problem(r.status_code, r.headers, r.content, max_bytes=MAX_UPSTREAM_BYTES)
            if what is not None:
                counts["problems"] += 1
                broken.append((what, repr(case)))

        def runner(strategy, n: int, source: str):
            @seed(args.seed)
            @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(strategy)
            def run(case) -> None:
                check(case, source)

            return run

        for strategy, n, source in ((requests(), args.cases, "own"),
                                    (schema_requests(client.app), args.schema_cases, "schema")):
            if n > 0:
                runner(strategy, n, source)()
        stats = client.get("/stats", headers={"authorization": "Bearer fuzz-token-0123456789abcdef"}).json()
    seconds = time.monotonic() - t0

    known = [f"{m} {p}" for m, p in ENDPOINTS]
    rows = sorted(by_endpoint, key=lambda k: (k not in known, known.index(k) if k in known else 0, k))
    statuses = sorted({s for c in by_endpoint.values() for s in c if isinstance(s, int)})
    head = f"{'endpoint':<32} {'cases':>6} {'own':>6} {'schema':>6} " + " ".join(f"{s:>5}" for s in statuses) + f" {'500s':>5} {'broken':>6}"
    print(head)
    print("-" * len(head))
    total: collections.Counter = collections.Counter()
    for key in rows:
        c = by_endpoint[key]
        total.update(c)
        print(f"{key[:32]:<32} {c['cases']:>6} {c['own']:>6} {c['schema']:>6} " + " ".join(f"{c[s]:>5}" for s in statuses)
              + f" {c[500]:>5} {c['problems']:>6}")
    print("-" * len(head))
    print(f"{'total':<32} {total['cases']:>6} {total['own']:>6} {total['schema']:>6} " + " ".join(f"{total[s]:>5}" for s in statuses)
          + f" {total[500]:>5} {total['problems']:>6}")
    print(f"\n{total['cases']} cases in {seconds:.0f} s (seed {args.seed}); the server's own error counts: "
          f"{json.dumps(stats.get('errors', {}), sort_keys=True)}")
    for what, case in broken[:10]:
        print(f"BROKEN: {what}: {case}")
    if args.out is not None:
        args.out.write_text(json.dumps({"cases": total["cases"], "seconds": round(seconds, 1), "seed": args.seed,
                                        "by_endpoint": {k: {str(s): n for s, n in by_endpoint[k].items()}
                                                        for k in rows},
                                        "broken": broken[:50]}, indent=1))
    return 1 if broken or total[500] else 0


if __name__ == "__main__":
    sys.exit(main())
