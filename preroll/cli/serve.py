"""Placeholder: being written."""


def serve() -> None:
    """Not written yet."""
    raise NotImplementedError("serve")
