"""Fuzz every CLI entry point class with generated cases; print cases, one-line errors and tracebacks per class.

Run:  python benchmarks/fuzz_cli.py [--cases 10000] [--classes args files manifests models] [--seed 0]

The classes and the rule (work, or preroll's own one-line error; never a traceback; ``--force`` never
deletes outside its folder) are in ``tests/fuzz_cases.py``; ``tests/test_fuzz_cli.py`` runs a small
sample of the same generators in CI. Generation only (no shrinking): a traceback is listed with its
input class and the last lines of its trace, the first few of each class.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzz_cases as fc  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def run_class(name: str, cases: int, fx: fc.Fixtures, rng_seed: int, keep: int = 3, progress_every: int = 500):
    counts: collections.Counter = collections.Counter()
    started = time.perf_counter()
    failures: list[str] = []
    conf = settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck))

    def record(results):
        for outcome, detail in results:
            counts[outcome] += 1
            if outcome == fc.TRACEBACK and len(failures) < keep:
                failures.append(detail)
        counts["cases"] += 1
        if counts["cases"] % progress_every == 0:  # a running tally, so a stopped run still reports
            print(f"{name}: {counts['cases']:,} cases, {counts[fc.OK]:,} ok, {counts[fc.ERROR]:,} one-line errors, "
                  f"{counts[fc.TRACEBACK]:,} tracebacks, {time.perf_counter() - started:,.0f} s", flush=True)

    if name == "args":
        @conf
        @given(data=st.data())
        def body(data):
            record([fc.run_cli(data.draw(fc.argv(fx)))])
    elif name == "files":
        @conf
        @given(case=fc.files)
        def body(case):
            suffix, payload = case
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"input{suffix}"
                path.write_bytes(payload)
                record(fc.exercise_file(path))
    elif name == "manifests":
        @conf
        @given(manifest=fc.score_manifests(), flag=st.sampled_from(["force", "resume", "neither"]))
        def body(manifest, flag):
            with tempfile.TemporaryDirectory() as tmp:
                record(fc.score_manifest_case(Path(tmp), fx, manifest, flag))
    else:
        @conf
        @given(mutation=fc.model_mutations)
        def body(mutation):
            with tempfile.TemporaryDirectory() as tmp:
                record(fc.model_folder_case(Path(tmp), fx, mutation))

    with warnings.catch_warnings(), fc.quiet():
        warnings.simplefilter("ignore")
        seed(rng_seed)(body)()
    return counts, failures, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--classes", nargs="+", default=["args", "files", "manifests", "models"])
    ap.add_argument("--seed", type=int, default=0)
    opts = ap.parse_args()
    console = Console()
    table = Table(title=f"preroll CLI fuzz: {opts.cases:,} generated cases per class (seed {opts.seed})")
    for col in ("class", "cases", "calls", "ok", "one-line errors", "tracebacks", "seconds"):
        table.add_column(col, justify="right" if col != "class" else "left")
    all_failures = []
    with tempfile.TemporaryDirectory() as tmp:
        fx = fc.Fixtures(Path(tmp))
        for name in opts.classes:
            counts, failures, seconds = run_class(name, opts.cases, fx, opts.seed)
            calls = counts[fc.OK] + counts[fc.ERROR] + counts[fc.TRACEBACK]
            table.add_row(name, f"{counts['cases']:,}", f"{calls:,}", f"{counts[fc.OK]:,}", f"{counts[fc.ERROR]:,}",
                          f"{counts[fc.TRACEBACK]:,}", f"{seconds:,.0f}")
            all_failures += [(name, f) for f in failures]
            console.print(f"{name}: done ({counts['cases']:,} cases)", style="dim")
    console.print(table)
    for name, detail in all_failures:
        console.rule(f"traceback in class {name}")
        console.print(detail, markup=False, highlight=False)
    sys.exit(1 if all_failures else 0)


if __name__ == "__main__":
    main()
