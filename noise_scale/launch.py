"""``python -m noise_scale.launch``: the job that runs a config slice by slice on a cluster engine.

  python -m noise_scale.launch --engine=slurm --config=configs/imagenet_resnet50.py:increase_batch \
      --config.slices='(8,32,128)' --config.max_device_batch=256 --workdir=/shared/runs/ib \
      > noise_scale.sbatch
  sbatch --nodes=1 --ntasks-per-node=8 --gres=gpu:8 noise_scale.sbatch 1   # the first leg

Why: growing the slice with the batch is a sequence of launches, one per *leg* (the
consecutive stages that want the same slice: the smallest in ``config.slices`` on which
they need no accumulation under ``config.max_device_batch``). Each leg stops on purpose at
the next leg's first stage (exit 75), every leg resumes the one workdir, and a preempted
leg (exit 143, checkpoint saved) must be relaunched as it was. Written by hand, that is
where runs are lost; here it is one script per config, tested as text.

SLURM (``--engine=slurm``): one batch script for every leg, its argument the stage the leg
stops at. It installs the clone it is submitted from (a shared file system; one
``.venv`` serves every node), starts one task per GPU with ``srun`` (JAX's rule: each task
takes the GPU of its local rank, so every task must see the node's GPUs: ``--gres``, not
``--gpus-per-task``), logs every task to ``<workdir>/logs``, asks for SIGTERM two minutes
before the time limit (the tasks agree on a step, checkpoint and exit 143), requeues
itself on 143, and at 75 prints the next leg's ``sbatch`` line. ``--run`` writes the script
to ``--script`` and submits the first leg.

Only SLURM so far; gcloud, xpk and SkyPilot are refused with that reason (issue 26 item 5).
"""

from __future__ import annotations

from noise_scale import _python

_python.require_supported()  # before absl, JAX and the pinned packages are imported

import dataclasses
import shlex
import subprocess

from absl import flags

from noise_scale import cli, validation
from noise_scale.errors import UsageError

ENGINES = ("slurm", "gcloud", "xpk", "skypilot")
_ENGINE = flags.DEFINE_enum("engine", None, ENGINES, "The cluster engine to write the job for.")
_GPUS_PER_NODE = flags.DEFINE_integer("gpus_per_node", 8, "SLURM: GPUs (JAX devices) per node.")
_SCRIPT = flags.DEFINE_string("script", "noise_scale.sbatch", "The batch script's file name.")
_RUN = flags.DEFINE_bool("run", False, "Write the script and submit the first leg.")
_TIME = flags.DEFINE_string("time", "", "SLURM: each leg's time limit (sbatch --time), if any.")


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


def sbatch_line(leg: Leg, gpus_per_node: int, script: str) -> str:
    tasks = min(leg.devices, gpus_per_node)
    if leg.devices > gpus_per_node and leg.devices % gpus_per_node:
        raise UsageError(f"a slice of {leg.devices} devices is not whole nodes of "
                         f"--gpus_per_node={gpus_per_node}; list slices that are (config.slices).")
    return (f"sbatch --nodes={max(leg.devices // gpus_per_node, 1)} --ntasks-per-node={tasks} "
            f"--gres=gpu:{tasks} {script} {leg.stop}")


def slurm_script(spec: str, overrides, workdir: str, plan: list[Leg], gpus_per_node: int = 8,
                 script: str = "noise_scale.sbatch", time_limit: str = "") -> str:
    """The batch script for every leg of ``plan`` (see the module docstring)."""
    args = [f"--config={spec}", *(f"--config.{k}={v}" for k, v in overrides
                                  if k != "stop_at_stage"), f"--workdir={workdir}"]
    command = " ".join(shlex.quote(a) for a in args)
    lines = [sbatch_line(leg, gpus_per_node, script) for leg in plan]
    legs_text = "\n".join(f"#   {line}   # {leg}" for line, leg in zip(lines, plan))
    time_text = f"#SBATCH --time={time_limit}\n" if time_limit else ""
    nexts = "\n".join(f'    {leg.stop}) echo "paused: next leg: {nxt}" ;;'
                      for leg, nxt in zip(plan, lines[1:]))
    logs = f"{workdir}/logs"
    return f"""#!/bin/bash
# noise_scale on SLURM, written by python -m noise_scale.launch --engine=slurm.
# One leg per slice; submit the first, each paused leg prints the next:
{legs_text}
#SBATCH --job-name=noise_scale
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --open-mode=append
#SBATCH --output={logs}/%x-%j.log
{time_text}set -uo pipefail
STOP=${{1:-0}}
cd "$SLURM_SUBMIT_DIR"  # a clone of noise_scale on the shared file system
test -x .venv/bin/python || {{ python3 -m venv .venv && \\
  .venv/bin/pip install -q -c constraints.txt -e '.[cuda]'; }} || exit 1
mkdir -p {shlex.quote(logs)}
srun --output={shlex.quote(logs)}/%x-%j-%t.log .venv/bin/python -m noise_scale.main \\
  {command} --config.stop_at_stage="$STOP"
status=$?
case $status in
  143) scontrol requeue "$SLURM_JOB_ID" ;;  # preempted, checkpoint saved: resume as it was
  75) case $STOP in  # paused at a stage boundary on purpose
{nexts}
  esac ;;
esac
exit $status
"""


def main(argv_and_config):
    config_args, argv = argv_and_config  # a config_lib.ConfigArgs (cli.run(variant=False))
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}. "
                         "Pass --helpshort to see the flags.")
    if _ENGINE.value != "slurm":
        raise UsageError(f"--engine={_ENGINE.value} is not written yet (issue 26 item 5): only "
                         "--engine=slurm. For Cloud TPU, see the README's Multi-host section.")
    workdir = cli.require_workdir("the run the job trains")
    config = config_args.load()
    validation.validate_config(config)
    from noise_scale.schedule.rules import schedule_from_config

    plan = legs(config, schedule_from_config(config))
    text = slurm_script(config_args.spec, config_args.overrides, workdir, plan,
                        _GPUS_PER_NODE.value, _SCRIPT.value, _TIME.value)
    if not _RUN.value:
        print(text, end="")
        return
    with open(_SCRIPT.value, "w") as f:
        f.write(text)
    first = sbatch_line(plan[0], _GPUS_PER_NODE.value, _SCRIPT.value)
    print(f"wrote {_SCRIPT.value}; {first}", flush=True)
    status = subprocess.run(shlex.split(first)).returncode
    if status:  # the scheduler's refusal, not bad input of ours: an I/O-class stop (74)
        raise OSError(f"{first!r} exited with status {status}; {_SCRIPT.value} is written, "
                      "submit it by hand once the scheduler accepts jobs")


if __name__ == "__main__":
    cli.run(main, variant=False)
