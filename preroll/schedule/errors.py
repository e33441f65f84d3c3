"""The error raised for unusable scheduling input.

Allocation runs inside a training loop; an error that only says "invalid
value" costs a rollout step to debug. Every message names the argument, and
for arrays the first offending index and value.
"""

from __future__ import annotations

from preroll.errors import PrerollError


class ScheduleInputError(PrerollError, ValueError):
    """Bad input to :func:`preroll.schedule.allocate` or the fused baseline.

    ``field`` is the argument name; ``index`` the first offending position in
    an array argument (``None`` for scalars).
    """

    def __init__(self, message: str, *, field: str | None = None, index: int | None = None) -> None:
        self.field = field
        self.index = index
        self.reason = message
        where = ""
        if field is not None:
            where = f"{field}[{index}]" if index is not None else field
        super().__init__(f"{where}: {message}" if where else message)
