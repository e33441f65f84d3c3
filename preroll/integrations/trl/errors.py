"""The one error type of the TRL integration: a setup or reward problem, named precisely."""

from __future__ import annotations

from preroll.errors import ConfigError


class PrerollTRLError(ConfigError):
    """The trainer cannot keep a faithful prompt book for this dataset, reward setup or checkpoint.

    Raised at construction (dataset, ids, reward weights) or at the first step
    that shows the problem (a reward outside ``reward_range``), never replaced by
    a silent fallback to uniform sampling.
    """
