"""Placeholder: being written."""


def evaluate() -> None:
    """Not written yet."""
    raise NotImplementedError("evaluate")
