"""Placeholder: being written."""


def bench_schedule() -> None:
    """Not written yet."""
    raise NotImplementedError("bench_schedule")
