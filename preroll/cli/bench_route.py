"""Placeholder: being written."""


def bench_route() -> None:
    """Not written yet."""
    raise NotImplementedError("bench_route")
