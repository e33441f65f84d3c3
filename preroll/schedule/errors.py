"""The error raised for unusable scheduling input.

Allocation runs inside a training loop; an error that only says "invalid
value" costs a rollout step to debug. Every message names the argument, and
for arrays the first offending index and value.
"""

from __future__ import annotations

from preroll.errors import ArgumentError


class ScheduleInputError(ArgumentError):
    """Bad input to :func:`preroll.schedule.allocate` or the fused baseline.

    ``field`` is the argument name; ``index`` the first offending position in
    an array argument (``None`` for scalars).
    """
