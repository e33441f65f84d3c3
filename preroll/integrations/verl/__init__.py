"""preroll inside verl: the prompt book chooses what to roll out and learns from each step's rewards.

- ``PrerollPPOTrainer`` (verl >= 0.9, v1 trainer, ``trainer.v1.trainer_mode=preroll``):
  selection before rollout, per-prompt n through ``__rollout_n__``, rewards
  read back per uid. Registered when ``preroll.integrations.verl.trainer`` is
  imported (``VERL_USE_EXTERNAL_MODULES=preroll.integrations.verl.trainer``).
- ``PrerollCurriculumSampler`` (verl 0.6-0.7, ``data.sampler``): selection only.

The verl-free parts (``PrerollDriver``, ``PrerollVerlConfig``, the plan and
outcome functions) import without verl; the two verl classes raise an
ImportError naming ``pip install 'preroll[verl]'`` when verl is absent.
See docs/verl.md.
"""

from __future__ import annotations

from preroll.integrations.verl.driver import PrerollDriver, PrerollVerlConfig
from preroll.integrations.verl.outcomes import (
    StepOutcomes,
    final_session_rows,
    group_by_uid,
    outcomes_from_dataproto,
    outcomes_from_trajectories,
    sequence_scores,
)
from preroll.integrations.verl.plan import (
    PoolWalker,
    RolloutPlan,
    index_positions,
    message_text,
    plan_allocate,
    plan_select,
)

_LAZY = {"PrerollPPOTrainer": "preroll.integrations.verl.trainer",
         "PrerollCurriculumSampler": "preroll.integrations.verl.sampler"}

__all__ = ["PrerollDriver", "PrerollVerlConfig", "StepOutcomes", "RolloutPlan", "PoolWalker", "final_session_rows",
           "group_by_uid", "outcomes_from_dataproto", "outcomes_from_trajectories", "sequence_scores",
           "index_positions", "message_text", "plan_allocate", "plan_select", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
