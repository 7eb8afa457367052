"""The xpk driver: its text for a 3-leg run, the input it refuses, and its container
command run by bash against a fake ``python3`` (75 becomes 0, SIGTERM reaches training)."""

import os
import signal
import stat
import subprocess
import time

import pytest

from noise_scale.errors import UsageError
from noise_scale.launch import xpk as launch_xpk
from noise_scale.launch.plan import Leg, main_arguments

PLAN = [Leg(8, 0, 1, 2), Leg(32, 2, 2, 3), Leg(128, 3, 3, 0)]


def script(workdir="gs://b/runs/ib", **options):
    args = main_arguments("configs/mnist1d.py:increase_batch",
                          [("slices", "(8,32,128)"), ("max_device_batch", "25")], workdir)
    return launch_xpk.xpk_script(args, workdir, PLAN, **{
        "cluster": "tpus", "workload": "ns", "prefix": "v5litepod", "script_dir": "/home/me/ns",
        "project": "proj", **options})


HEADER = """#!/bin/bash
# noise_scale on GKE with xpk, written by python -m noise_scale.launch --engine=xpk.
# One workload per leg; `bash THIS_SCRIPT [LEG]` runs from LEG (default 1) to the end:
#   leg 1: --tpu-type=v5litepod-8, stop_at_stage=2   # stages 0-1 on 8 devices
#   leg 2: --tpu-type=v5litepod-32, stop_at_stage=3   # stage 2 on 32 devices
#   leg 3: --tpu-type=v5litepod-128, stop_at_stage=0   # stage 3 on 128 devices
set -uo pipefail
TYPES=(v5litepod-8 v5litepod-32 v5litepod-128)
STOPS=(2 3 0)
"""


def test_the_script_names_each_legs_slice_pause_and_the_outcomes():
    text = script()
    assert text.startswith(HEADER)
    for line in ['xpk_() { xpk "$@" --cluster=tpus --project=proj; }',
                 '  xpk_ workload create --workload="$name" --tpu-type="${TYPES[i]}" '
                 '--num-slices=1 \\\n    --max-restarts=50 --base-docker-image=python:3.11 \\\n'
                 '    --script-dir=/home/me/ns --command="STOP=${STOPS[i]}; $COMMAND" || exit 1',
                 '  xpk_ workload list --wait-for-job-completion="$name"',
                 '    0) [ "${STOPS[i]}" = 0 ] && { echo "done: workload $name finished the run";',
                 "--config.max_device_batch=25 --workdir=gs://b/runs/ib "
                 "--config.stop_at_stage=$STOP & pid=$!;"]:
        assert line in text, line


def test_a_local_workdir_or_no_cluster_is_refused():
    with pytest.raises(UsageError, match="--workdir=/runs/ib is inside a pod"):
        script(workdir="/runs/ib")
    with pytest.raises(UsageError, match="--engine=xpk needs --cluster"):
        script(cluster="")


FAKE_PYTHON = """#!/bin/bash
trap 'echo got-TERM > "$OUT/term"; exit 143' TERM
touch "$OUT/started"
case $FAKE_STATUS in sleep) sleep 30 >/dev/null & wait ;; *) exit "$FAKE_STATUS" ;; esac
"""


def container(tmp_path, status):
    for name, text in (("python3", FAKE_PYTHON), ("pip", "#!/bin/bash\n")):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "OUT": str(tmp_path),
           "FAKE_STATUS": status}
    command = "STOP=2; " + launch_xpk.container_command("--workdir=gs://b/r")
    return subprocess.Popen(["bash", "-c", command], env=env, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("status, exit_status", [("75", 0), ("143", 143), ("0", 0), ("1", 1)])
def test_the_container_turns_a_pause_into_success_and_keeps_the_rest(tmp_path, status,
                                                                    exit_status):
    p = container(tmp_path, status)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == exit_status and f"noise_scale-exit={status}" in out


def test_the_container_passes_sigterm_on_to_training(tmp_path):
    p = container(tmp_path, "sleep")
    deadline = time.monotonic() + 20  # wait for its trap, not a guessed second (a loaded CI)
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 143 and (tmp_path / "term").read_text() == "got-TERM\n", out
