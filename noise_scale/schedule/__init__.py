"""Schedules: the single source of truth for B, ε and m at every example of a run.

- ``core``: ``Stage``, ``Schedule``, ``StagePlan`` and the one walk (the stream rule);
- ``rules``: the paper's rules (decay_lr, increase_batch, hybrid; B ∝ ε, B ∝ 1/(1−m));
- ``render``: table, JSON, comparison, figure;
- ``__main__``: ``python -m noise_scale.schedule --config=configs/X.py:variant``.
"""

from noise_scale.errors import ScheduleError
from noise_scale.schedule.core import (
    Schedule,
    Stage,
    StagePlan,
    accumulation_steps,
    hyperparams_at,
    stage_index,
    walk,
    warmed_up,
)
from noise_scale.schedule.render import compare_table, to_dict, to_json
from noise_scale.schedule.render import table as schedule_table
from noise_scale.schedule.rules import RULES, from_lr_steps, schedule_from_config

__all__ = [
    "RULES", "Schedule", "ScheduleError", "Stage", "StagePlan", "accumulation_steps",
    "compare_table", "from_lr_steps", "hyperparams_at", "schedule_from_config",
    "schedule_table", "stage_index", "to_dict", "to_json", "walk", "warmed_up",
]
