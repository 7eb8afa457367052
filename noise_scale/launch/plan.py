"""The legs of a growing run, and the training command every engine starts for each.

Why its own module: each engine (``noise_scale.launch``'s SLURM script, ``launch_gcloud``,
``launch_xpk``, ``launch_skypilot``) cuts the run the same way and starts the same
``noise_scale.main`` command; written once here, the engines differ only in how they get
a slice and act on the exit status (75: paused at the next leg's first stage; 143:
preempted with a checkpoint, relaunch as it was; ``noise_scale.errors``).
"""

from __future__ import annotations

import dataclasses
import shlex

from noise_scale.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Leg:
    """Consecutive stages ``first``..``last`` that want one slice of ``devices``."""

    devices: int
    first: int
    last: int
    stop: int  # the stage it pauses at (config.stop_at_stage): last + 1, or 0 at the end

    def __str__(self) -> str:
        stages = (f"stage {self.first}" if self.first == self.last
                  else f"stages {self.first}-{self.last}")
        return f"{stages} on {self.devices} devices"


def legs(config, schedule) -> list[Leg]:
    """The legs of ``schedule`` over ``config.slices`` (a stage no slice runs without
    accumulation goes to the largest, where it accumulates)."""
    from noise_scale.schedule.core import smallest_slice

    if not config.slices:
        raise UsageError("the launch plans one leg per slice: name the slices you can use, as "
                         "device counts, e.g. --config.slices='(8,32,128)' (and "
                         "--config.max_device_batch, the largest per-device batch that fits).")
    wants = [smallest_slice(s.batch_size, config.slices, config.max_device_batch)
             or max(config.slices) for s in schedule.stages]
    firsts = [i for i, w in enumerate(wants) if i == 0 or w != wants[i - 1]]
    ends = [*firsts[1:], len(wants)]
    return [Leg(wants[f], f, end - 1, end if end < len(wants) else 0)
            for f, end in zip(firsts, ends)]


def main_arguments(spec: str, overrides, workdir: str) -> str:
    """``noise_scale.main``'s arguments, shell-quoted, without the leg's ``stop_at_stage``
    (each engine appends its own, so one command text serves every leg)."""
    args = [f"--config={spec}", *(f"--config.{k}={v}" for k, v in overrides
                                  if k != "stop_at_stage"), f"--workdir={workdir}"]
    return " ".join(shlex.quote(a) for a in args)


def is_bucket(path: str) -> bool:
    """A workdir every host of a slice, and every later slice, can reach."""
    return "://" in path
