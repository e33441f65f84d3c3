"""Placeholder: being written."""


def predict() -> None:
    """Not written yet."""
    raise NotImplementedError("predict")
