"""Spend rollouts where they pay.

``allocate`` turns predicted success rates into integer group sizes (GRPO
uniform, V_0 greedy, Knapsack RL, a variance objective, Thompson sampling);
``fused_baseline`` and ``SequentialBaseline`` implement the V_0.5 idea of
fusing a predicted prior with a few real rollouts. See docs/schedule.md.
"""

from preroll.schedule.allocate import RULES, allocate
from preroll.schedule.errors import ScheduleInputError
from preroll.schedule.fused import (
    BiasTracker,
    FusedEstimate,
    SequentialBaseline,
    fuse,
    fused_baseline,
)

__all__ = ["allocate", "RULES", "ScheduleInputError", "fused_baseline", "fuse", "FusedEstimate",
           "SequentialBaseline", "BiasTracker"]
