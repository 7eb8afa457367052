"""Growing the slice with the batch: which devices each stage wants, and moving between them.

A run may start on a small slice and move to a larger one when its batch grows:
stop at the start of a stage on purpose (``config.stop_at_stage``), create the
larger slice, rerun the command on the same workdir without ``stop_at_stage`` (or
with a later stage: the same command would pause at the same place again, which
keeps a requeued or restarted job from training the stage on the small slice).
The clock (examples
seen), the data order (by position) and the fingerprint (no device count in it)
already make the resumed run the same experiment; the plan (per-device batch,
accumulation) is recomputed for the new slice before anything compiles.

One thing would silently change with the slice: ghost batch norm. Ghost batches
never span devices, so a ghost size that does not divide a stage's per-device
micro-batch is cut down to the largest divisor that does, and that divisor
depends on the device count (B = 32 with ghost size 16: batches of 4 on 8
devices, of 16 on 2; the moved run's loss then differs by up to 10 %, measured).
So a run that names its slices (``config.slices``) demands a ghost size that
divides every stage's micro-batch on every one of them, and a resume whose ghost
batches would differ from those the checkpoint was trained with is refused
unless ``config.allow_ghost_change`` says so. Where the ghost size divides, the
ghost batches are the same contiguous runs of examples on every slice.
"""

from __future__ import annotations

import math
import os
import shlex
import sys

from noise_scale.errors import ConfigError, SetupError
from noise_scale.models.layers import effective_ghost_size
from noise_scale.schedule import Schedule, StagePlan
from noise_scale.schedule.core import smallest_slice

# JAX devices per unit of a Cloud TPU type's number: v2/v3 and v5e/v6e expose one device
# per core (or chip), v4 and v5p count TensorCores in their names but expose one device per
# two-core (megacore) chip: a v4-32 is 16 devices.
TPU_DEVICES_PER_UNIT = {"v2": 1.0, "v3": 1.0, "v4": 0.5, "v5p": 0.5, "v5litepod": 1.0,
                        "v5e": 1.0, "v6e": 1.0}


def slice_devices(name: str) -> int:
    """Devices of a slice given as a count ("32") or a Cloud TPU type ("v4-32", "v5e-16").

    Raises ValueError for anything else.
    """
    name = name.strip().lower()
    if name.isdigit():
        return int(name)
    kind, _, size = name.rpartition("-")
    if kind not in TPU_DEVICES_PER_UNIT or not size.isdigit():
        raise ValueError(name)
    devices = int(size) * TPU_DEVICES_PER_UNIT[kind]
    if devices < 1 or devices != int(devices):
        raise ValueError(name)
    return int(devices)


def device_counts(config, current: int) -> list[int]:
    """The slices the run plans for: ``config.slices`` and the current device count."""
    return sorted({*config.slices, current})


def ghost_sizes(plans: list[StagePlan], ghost: int) -> list[int]:
    """Per stage, the ghost batch batch norm actually uses (0 without batch norm)."""
    return [effective_ghost_size(p.micro_batch, ghost) if ghost else 0 for p in plans]


def largest_common_ghost(micro_batches: list[int], ghost: int) -> int:
    """The largest ghost size up to ``ghost`` that divides every micro-batch."""
    return effective_ghost_size(math.gcd(*micro_batches), ghost)


def check_ghost_on_slices(config, schedule: Schedule, current: int) -> None:
    """With ``config.slices`` named: every stage's micro-batch on every slice is whole ghost
    batches of ``config.ghost_batch_size``, and every batch divides over every slice.

    Raises ConfigError naming the largest ghost size that fits all (never picks it itself).
    """
    ghost = config.ghost_batch_size
    if not config.slices:
        return
    micro, bad = [], []
    for n in device_counts(config, current):
        try:
            plans = schedule.plan(n, config.max_device_batch)
        except ValueError as e:
            raise ConfigError(f"config.slices={tuple(config.slices)!r}: on {n} devices, {e}") \
                from None
        micro += [p.micro_batch for p in plans]
        bad += [(p, n) for p in plans if ghost and p.micro_batch % ghost]
    if bad:
        p, n = bad[0]
        fit = largest_common_ghost(micro, ghost)
        raise ConfigError(
            f"config.ghost_batch_size={ghost} does not divide stage {p.index}'s micro-batch of "
            f"{p.micro_batch} examples per device on {n} devices (B={p.batch_size:,}), so batch "
            f"norm would use ghost batches of {effective_ghost_size(p.micro_batch, ghost)} there "
            f"and of another size elsewhere: the slices config.slices="
            f"{tuple(config.slices)!r} would train different models. Fix: "
            f"--config.ghost_batch_size={fit} (the largest that divides every stage's "
            "micro-batch on every slice), or drop the slices you will not use.")


def check_stop_at_stage(config, plans: list[StagePlan]) -> None:
    k = config.stop_at_stage
    if k and k >= len(plans):
        raise ConfigError(
            f"config.stop_at_stage={k} is invalid: this schedule has stages 0-{len(plans) - 1}, "
            f"so it must be 0 (never) or in [1, {len(plans) - 1}]. Fix: "
            f"--config.stop_at_stage={max(len(plans) - 1, 0)}, or 0.")


def check_resume_ghost(meta: dict, plans: list[StagePlan], ghost: int, examples_seen: int,
                       devices: int, allow: bool) -> None:
    """Refuse a resume whose remaining stages would use other ghost batches than planned.

    ``meta``: the checkpoint's (``ghost_sizes`` and ``devices`` of the run that wrote it;
    absent in checkpoints written before they were stored: nothing to compare).
    """
    stored = meta.get("ghost_sizes")
    if stored is None or allow:
        return
    now = ghost_sizes(plans, ghost)
    for p, before, after in zip(plans, stored, now):
        if p.end_example > examples_seen and before != after:
            fit = largest_common_ghost([p.micro_batch for p in plans], ghost)
            raise SetupError(
                f"resuming on {devices} devices would change batch norm: stage {p.index} "
                f"(B={p.batch_size:,}, {p.micro_batch} examples per device per micro-batch) "
                f"would use ghost batches of {after}, but the checkpoint's run planned "
                f"{before} on {meta.get('devices', '?')} devices. Fix: resume on "
                f"{meta.get('devices', 'the same number of')} devices, or start the run "
                f"with --config.ghost_batch_size={fit} and --config.slices listing every "
                "slice it will use; --config.allow_ghost_change=true resumes anyway (a "
                "different experiment from there on).")


def resume_command(stage: int) -> str:
    """The command that started this process without ``--config.stop_at_stage``, if it was
    ``python -m noise_scale.main``; else a sentence saying what to change."""
    argv = sys.argv
    if argv and argv[0].endswith(os.path.join("noise_scale", "main.py")):
        kept = [a for a in argv[1:] if not a.startswith("--config.stop_at_stage")]
        return "python -m noise_scale.main " + " ".join(shlex.quote(a) for a in kept)
    return (f"the command or call without config.stop_at_stage={stage} (or with a later "
            "stage); unchanged, it pauses here again")


def pause_message(config, plan: StagePlan, devices: int, directory: str,
                  again: bool = False) -> str:
    """Which stage comes next, its batch, the slice it wants and the command to resume.

    ``again``: this launch trained nothing, it started at the pause (the run was paused
    there before and was rerun with the same ``stop_at_stage``): said first."""
    b, mdb = plan.batch_size, config.max_device_batch
    here = (f"{plan.per_device_batch:,} per device on the current {devices} devices"
            + (f" in {plan.accumulation_steps} accumulation steps"
               if plan.accumulation_steps > 1 else ""))
    want = smallest_slice(b, device_counts(config, devices), mdb)
    if config.slices and not mdb:
        wants = ("with config.max_device_batch unset every slice runs it without "
                 "accumulation; set it to the largest per-device batch that fits to have a "
                 "slice picked")
    elif config.slices and want is not None:
        wants = (f"it wants a slice of {want} devices ({b // want:,} per device, no "
                 "accumulation)")
    elif config.slices:
        wants = "no slice in config.slices runs it without accumulation"
    else:
        wants = "name the slices you can use in --config.slices to have one picked"
    limit = f" under config.max_device_batch={mdb}" if mdb else ""
    head = (f"nothing trained: the run already stands at the start of stage {plan.index}, "
            f"where config.stop_at_stage={plan.index} pauses it, so this command pauses it "
            "again (and would every time). " if again else "")
    return (f"{head}paused on purpose (config.stop_at_stage={plan.index}) at examples_seen="
            f"{plan.start_example:,}, checkpoint saved in {directory}. Stage {plan.index} comes "
            f"next: B={b:,}, {here}; {wants}{limit}. Create that slice with the same workdir and "
            f"resume with: {resume_command(plan.index)}")
