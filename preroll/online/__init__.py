"""preroll inside a training run: the online prompt book (``PromptBook``).

One posterior per prompt from its own outcomes (discounted for policy drift),
its semantic neighbours and the policy's overall level; fixed-n selection
(``select``) and per-prompt rollout budgets (``allocate``) with exploration.
See docs/online.md.
"""

from preroll.online.book import PromptBook
from preroll.online.errors import OnlineInputError
from preroll.online.settings import OnlineSettings
from preroll.online.types import BookStats, Selection
from preroll.online.warm import WarmEvidence, WarmReport

__all__ = ["PromptBook", "OnlineSettings", "Selection", "BookStats", "OnlineInputError", "WarmEvidence", "WarmReport"]
