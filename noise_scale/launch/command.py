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

Cloud TPU VMs (``--engine=gcloud``, ``noise_scale.launch.gcloud``): a driver script that
creates each leg's TPU VM (``--tpu_type_prefix``, ``--project``, ``--zone``, ``--spot``,
``--queued``), installs this commit of ``--repo`` on every worker, runs every leg and acts
on 143/75 itself.

GKE (``--engine=xpk``, ``noise_scale.launch.xpk``): a driver script that submits one xpk
workload per leg (``--cluster``; this clone layered into ``python:3.11``), leaves 143 to
xpk's ``--max-restarts`` and starts the next leg when one pauses (75).

SkyPilot (``--engine=skypilot``, ``noise_scale.launch.skypilot``): one managed-job task per
leg (a TPU slice, or ``--gpu`` nodes of ``--gpus_per_node``), SkyPilot recovering preemption
and exit 143 itself, the driver launching the next leg when one pauses (75).

Each driver script takes the leg to start from (default 1); ``--run`` writes it to
``--script`` (default ``noise_scale_ENGINE.sh``) and runs it, exiting with its status.
What each engine's module could not check offline is said in its docstring.
"""

from __future__ import annotations

from noise_scale import _python

_python.require_supported()  # before absl, JAX and the pinned packages are imported

import os
import shlex
import subprocess
import sys

from absl import flags

from noise_scale import cli
from noise_scale.config import validation
from noise_scale.errors import UsageError
from noise_scale.launch.plan import Leg, legs, main_arguments

ENGINES = ("slurm", "gcloud", "xpk", "skypilot")
_ENGINE = flags.DEFINE_enum("engine", None, ENGINES, "The cluster engine to write the job for.")
_GPUS_PER_NODE = flags.DEFINE_integer(
    "gpus_per_node", 8, "slurm, skypilot: GPUs (JAX devices) per node.")
_SCRIPT = flags.DEFINE_string(
    "script", "", "--run: the script's file name (noise_scale.sbatch, noise_scale_gcloud.sh).")
_RUN = flags.DEFINE_bool("run", False, "Write the script and submit the first leg.")
_TIME = flags.DEFINE_string("time", "", "SLURM: each leg's time limit (sbatch --time), if any.")
_PROJECT = flags.DEFINE_string("project", "", "gcloud, xpk: the Cloud project.")
_ZONE = flags.DEFINE_string("zone", "", "gcloud, xpk: the zone of the TPU slices.")
_TPU_NAME = flags.DEFINE_string("tpu_name", "noise-scale", "gcloud: the TPU VM's name.")
_TPU_PREFIX = flags.DEFINE_string(
    "tpu_type_prefix", "v5litepod", "gcloud, xpk: the accelerator type's prefix (v5litepod, v4, ...); "
    "each leg's type is it and the leg's size, e.g. v5litepod-32.")
_TPU_VERSION = flags.DEFINE_string(
    "tpu_version", "", "gcloud: the TPU runtime (image) version; default: the prefix's usual one.")
_SPOT = flags.DEFINE_bool(
    "spot", False, "gcloud, skypilot: spot capacity (preempted legs are relaunched).")
_QUEUED = flags.DEFINE_bool("queued", False, "gcloud: ask for each slice as a queued resource.")
_CLUSTER = flags.DEFINE_string("cluster", "", "xpk: the GKE cluster the workloads run on.")
_WORKLOAD = flags.DEFINE_string("workload", "noise-scale", "xpk: the workloads' name prefix.")
_MAX_RESTARTS = flags.DEFINE_integer(
    "max_restarts", 50, "xpk: restarts of a leg's workload (preemptions it survives).")
_GPU = flags.DEFINE_string(
    "gpu", "", "skypilot: the GPU name (H100, A100-80GB, ...) for GPU nodes; default: TPU slices.")
_REPO = flags.DEFINE_string(
    "repo", "", "gcloud: the repository URL the workers clone (default: git remote origin).")


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
    command = main_arguments(spec, overrides, workdir)
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
    workdir = cli.require_workdir("the run the job trains")
    config = config_args.load()
    validation.validate_config(config)
    from noise_scale.schedule.rules import schedule_from_config

    plan = legs(config, schedule_from_config(config))
    arguments = main_arguments(config_args.spec, config_args.overrides, workdir)
    if _ENGINE.value == "slurm":
        script = _SCRIPT.value or "noise_scale.sbatch"
        text = slurm_script(config_args.spec, config_args.overrides, workdir, plan,
                            _GPUS_PER_NODE.value, script, _TIME.value)
        first = sbatch_line(plan[0], _GPUS_PER_NODE.value, script)
    else:
        text = DRIVERS[_ENGINE.value](arguments, workdir, plan)
        script = _SCRIPT.value or f"noise_scale_{_ENGINE.value}.sh"
        first = f"bash {script}"
    if not _RUN.value:
        print(text, end="")
        return
    with open(script, "w") as f:
        f.write(text)
    print(f"wrote {script}; {first}", flush=True)
    status = subprocess.run(shlex.split(first)).returncode
    if status and _ENGINE.value == "slurm":  # the scheduler's refusal: an I/O-class stop (74)
        raise OSError(f"{first!r} exited with status {status}; {script} is written, "
                      "submit it by hand once the scheduler accepts jobs")
    return status  # a driver's own status (0, 75 paused, 143 preempted, ...): absl exits with it


def gcloud_text(arguments: str, workdir: str, plan: list[Leg]) -> str:
    """The Cloud TPU driver for this clone's commit (``noise_scale.launch.gcloud``)."""
    from noise_scale.launch import gcloud as launch_gcloud

    prefix = _TPU_PREFIX.value
    launch_gcloud.tpu_kind(prefix)  # an unknown prefix is refused before git is asked
    if git("status", "--porcelain", "--untracked-files=no"):
        print("warning: this clone has uncommitted changes; the workers run the commit only.",
              file=sys.stderr, flush=True)
    return launch_gcloud.gcloud_script(
        arguments, workdir, plan, project=_PROJECT.value, zone=_ZONE.value,
        tpu_name=_TPU_NAME.value, prefix=prefix,
        version=_TPU_VERSION.value or launch_gcloud.RUNTIME_VERSIONS[prefix],
        repo=_REPO.value or git("remote", "get-url", "origin"), commit=git("rev-parse", "HEAD"),
        spot=_SPOT.value, queued=_QUEUED.value)


def xpk_text(arguments: str, workdir: str, plan: list[Leg]) -> str:
    """The GKE driver layering this clone into each workload (``noise_scale.launch.xpk``)."""
    from noise_scale.launch import gcloud as launch_gcloud
    from noise_scale.launch import xpk as launch_xpk

    launch_gcloud.tpu_kind(_TPU_PREFIX.value)
    return launch_xpk.xpk_script(
        arguments, workdir, plan, cluster=_CLUSTER.value, workload=_WORKLOAD.value,
        prefix=_TPU_PREFIX.value, script_dir=git("rev-parse", "--show-toplevel") or os.getcwd(),
        project=_PROJECT.value, zone=_ZONE.value, max_restarts=_MAX_RESTARTS.value)


def skypilot_text(arguments: str, workdir: str, plan: list[Leg]) -> str:
    """The managed-job driver syncing this clone to each leg (``noise_scale.launch.skypilot``)."""
    from noise_scale.launch import gcloud as launch_gcloud
    from noise_scale.launch import skypilot as launch_skypilot

    if not _GPU.value:
        launch_gcloud.tpu_kind(_TPU_PREFIX.value)
    return launch_skypilot.skypilot_script(
        arguments, workdir, plan, git("rev-parse", "--show-toplevel") or os.getcwd(),
        prefix=_TPU_PREFIX.value, gpu=_GPU.value, gpus_per_node=_GPUS_PER_NODE.value,
        spot=_SPOT.value)


DRIVERS = {"gcloud": gcloud_text, "xpk": xpk_text, "skypilot": skypilot_text}


def git(*args: str) -> str:
    """This clone's answer to ``git ARGS``, or '' where there is none (no git, no remote)."""
    try:
        r = subprocess.run(["git", *args], capture_output=True, text=True, timeout=30)
    except OSError:
        return ""
    return r.stdout.strip() if r.returncode == 0 else ""
