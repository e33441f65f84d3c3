"""Placeholder: being written."""


def bench_throughput() -> None:
    """Not written yet."""
    raise NotImplementedError("bench_throughput")
