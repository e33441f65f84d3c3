"""Throughput benchmark: ``python benchmarks/bench_throughput.py [--sweep] [options]``.

Same as ``preroll bench throughput``; see ``preroll/cli/bench_throughput.py``.
"""

import typer

from preroll.cli.bench_throughput import bench_throughput

if __name__ == "__main__":
    typer.run(bench_throughput)
