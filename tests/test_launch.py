"""The SLURM job that runs a config leg by leg: golden text, and the legs it is cut into;
the launch command's refusals for every engine."""

import os
import shlex
import subprocess
import sys

import pytest

from noise_scale import config_lib
from noise_scale.errors import UsageError
from noise_scale.launch import command as launch
from noise_scale.schedule.rules import schedule_from_config
from tests.helpers import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# small_config's B = 32, 160, 800, 4,000; under max_device_batch=25 the smallest slices
# without accumulation are 8 (4 and 20 per device), 32 (25) and 160 (25).
OVERRIDES = [("slices", "(8,32,160)"), ("max_device_batch", "25"), ("stop_at_stage", "1")]

GOLDEN = """#!/bin/bash
# noise_scale on SLURM, written by python -m noise_scale.launch --engine=slurm.
# One leg per slice; submit the first, each paused leg prints the next:
#   sbatch --nodes=1 --ntasks-per-node=8 --gres=gpu:8 ns.sbatch 2   # stages 0-1 on 8 devices
#   sbatch --nodes=4 --ntasks-per-node=8 --gres=gpu:8 ns.sbatch 3   # stage 2 on 32 devices
#   sbatch --nodes=20 --ntasks-per-node=8 --gres=gpu:8 ns.sbatch 0   # stage 3 on 160 devices
#SBATCH --job-name=noise_scale
#SBATCH --requeue
#SBATCH --signal=TERM@120
#SBATCH --open-mode=append
#SBATCH --output=/shared/runs/ib/logs/%x-%j.log
#SBATCH --time=24:00:00
set -uo pipefail
STOP=${1:-0}
cd "$SLURM_SUBMIT_DIR"  # a clone of noise_scale on the shared file system
test -x .venv/bin/python || { python3 -m venv .venv && \\
  .venv/bin/pip install -q -c constraints.txt -e '.[cuda]'; } || exit 1
mkdir -p /shared/runs/ib/logs
srun --output=/shared/runs/ib/logs/%x-%j-%t.log .venv/bin/python -m noise_scale.main \\
  --config=configs/mnist1d.py:increase_batch '--config.slices=(8,32,160)' \
--config.max_device_batch=25 --workdir=/shared/runs/ib --config.stop_at_stage="$STOP"
status=$?
case $status in
  143) scontrol requeue "$SLURM_JOB_ID" ;;  # preempted, checkpoint saved: resume as it was
  75) case $STOP in  # paused at a stage boundary on purpose
    2) echo "paused: next leg: sbatch --nodes=4 --ntasks-per-node=8 --gres=gpu:8 ns.sbatch 3" ;;
    3) echo "paused: next leg: sbatch --nodes=20 --ntasks-per-node=8 --gres=gpu:8 ns.sbatch 0" ;;
  esac ;;
esac
exit $status
"""


def plan(**overrides):
    config = small_config("increase_batch", **{"slices": (8, 32, 160), "max_device_batch": 25,
                                               **overrides})
    return launch.legs(config, schedule_from_config(config))


def test_the_stages_are_cut_into_legs_by_the_slice_they_want():
    assert plan() == [launch.Leg(8, 0, 1, 2), launch.Leg(32, 2, 2, 3), launch.Leg(160, 3, 3, 0)]
    # with no per-device limit the smallest slice runs everything: one leg, never paused
    assert plan(max_device_batch=0) == [launch.Leg(8, 0, 3, 0)]


def test_the_slurm_script_is_the_golden_one():
    text = launch.slurm_script("configs/mnist1d.py:increase_batch", OVERRIDES,
                               "/shared/runs/ib", plan(), 8, "ns.sbatch", "24:00:00")
    assert text == GOLDEN


def test_the_script_starts_main_with_the_config_it_was_written_for():
    """The srun line, read back as main reads its argv: the same config, no fixed pause."""
    text = launch.slurm_script("configs/mnist1d.py:increase_batch", OVERRIDES,
                               "/shared/runs/ib", plan())
    argv = shlex.split(text.split(".venv/bin/python -m noise_scale.main \\\n")[1].split("\n")[0])
    spec, overrides, rest = config_lib.split_config_args(argv)
    assert spec == "configs/mnist1d.py:increase_batch" and rest == ["--workdir=/shared/runs/ib"]
    assert overrides == [*OVERRIDES[:2], ("stop_at_stage", "$STOP")]


def test_a_slice_that_is_not_whole_nodes_is_refused():
    with pytest.raises(UsageError, match="12 devices is not whole nodes of --gpus_per_node=8"):
        launch.sbatch_line(launch.Leg(12, 0, 0, 0), 8, "ns.sbatch")


def test_a_config_without_slices_is_refused_with_the_fix():
    config = small_config("increase_batch")
    with pytest.raises(UsageError, match=r"--config.slices='\(8,32,128\)'"):
        launch.legs(config, schedule_from_config(config))


@pytest.mark.parametrize("flags, message", [
    (["--engine=xpk"], "--engine=xpk needs --cluster"),
    (["--engine=skypilot", "--workdir=/tmp/x"], "--workdir=/tmp/x is on a cluster's disk"),
    (["--engine=gcloud", "--tpu_type_prefix=v9"], "--tpu_type_prefix=v9 is not one"),
    (["--engine=gcloud", "--repo=https://example.com/r.git", "--zone=z"],
     "--engine=gcloud needs --project")])
def test_each_engine_refuses_bad_input_with_exit_2_naming_the_flag(flags, message):
    r = subprocess.run([sys.executable, "-m", "noise_scale.launch",
                        "--config=configs/mnist1d.py:increase_batch", "--config.slices=(8,32)",
                        "--workdir=gs://b/r", *flags],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr, r.stderr
