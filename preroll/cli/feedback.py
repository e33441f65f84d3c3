"""Placeholder: being written."""


def feedback() -> None:
    """Not written yet."""
    raise NotImplementedError("feedback")
