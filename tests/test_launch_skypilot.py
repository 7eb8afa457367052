"""The SkyPilot driver: each leg's task (golden text, read back as YAML), the input it
refuses, its ``run`` block against a fake ``python``, and the legs it launches against a
fake ``sky`` (no cloud)."""

import os
import stat
import subprocess

import pytest
import yaml

from noise_scale.errors import UsageError
from noise_scale.launch import skypilot as launch_skypilot
from noise_scale.launch.plan import Leg, main_arguments

PLAN = [Leg(8, 0, 1, 2), Leg(32, 2, 2, 3), Leg(128, 3, 3, 0)]
ARGS = main_arguments("configs/mnist1d.py:increase_batch", [("max_device_batch", "25")],
                      "gs://b/runs/ib")

GOLDEN_TPU_LEG_2 = """# noise_scale leg 2: stage 2 on 32 devices, stop_at_stage=3
name: noise-scale-leg2
resources:
  accelerators: tpu-v5litepod-32
  use_spot: true
  job_recovery:
    max_restarts_on_errors: 0
    recover_on_exit_codes: [143]
num_nodes: 1
workdir: /home/me/ns
setup: |
  command -v python3.11 >/dev/null || { sudo apt-get -qq update && sudo apt-get -qq install -y python3.11-venv; }
  test -x .venv/bin/python || python3.11 -m venv .venv
  .venv/bin/pip install -q -c constraints.txt -e '.[tpu]'
run: |
  .venv/bin/python -m noise_scale.main --config=configs/mnist1d.py:increase_batch --config.max_device_batch=25 --workdir=gs://b/runs/ib \\
    --config.stop_at_stage=3
  status=$?
  if [ $status -eq 75 ]; then exit 0; fi  # paused on purpose: the driver starts the next leg
  exit $status
"""


def test_a_tpu_leg_is_one_node_of_its_slice():
    text = launch_skypilot.task_yaml(2, PLAN[1], ARGS, "/home/me/ns", spot=True)
    assert text == GOLDEN_TPU_LEG_2
    task = yaml.safe_load(text)
    assert task["resources"]["job_recovery"] == {"max_restarts_on_errors": 0,
                                                 "recover_on_exit_codes": [143]}


def test_gpu_legs_are_whole_nodes_started_with_the_multi_host_flags():
    tasks = [yaml.safe_load(launch_skypilot.task_yaml(i, leg, ARGS, "/ns", gpu="H100"))
             for i, leg in enumerate(PLAN, 1)]
    assert [(t["resources"]["accelerators"], t["num_nodes"]) for t in tasks] == [
        ("H100:8", 1), ("H100:8", 4), ("H100:8", 16)]
    assert "--process_id" not in tasks[0]["run"]  # one node: no peers to find
    assert ('--num_processes="$SKYPILOT_NUM_NODES" --process_id="$SKYPILOT_NODE_RANK" '
            '--config.stop_at_stage=3') in tasks[1]["run"]
    assert "-e '.[cuda]'" in tasks[1]["setup"]
    with pytest.raises(UsageError, match="12 devices is not whole nodes of --gpus_per_node=8"):
        launch_skypilot.task_yaml(1, Leg(12, 0, 0, 0), ARGS, "/ns", gpu="H100")


def test_a_local_workdir_is_refused():
    with pytest.raises(UsageError, match="--workdir=/runs/ib is on a cluster's disk"):
        launch_skypilot.skypilot_script(ARGS, "/runs/ib", PLAN, "/ns")


def fake(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    (tmp_path / name).chmod(stat.S_IRWXU)


@pytest.mark.parametrize("status, exit_status", [(75, 0), (143, 143), (0, 0), (1, 1)])
def test_the_run_block_turns_a_pause_into_success(tmp_path, status, exit_status):
    run = yaml.safe_load(launch_skypilot.task_yaml(2, PLAN[1], ARGS, "/ns"))["run"]
    fake(tmp_path, "python", f"#!/bin/bash\nexit {status}\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    os.symlink(tmp_path / "python", tmp_path / ".venv" / "bin" / "python")
    r = subprocess.run(["bash", "-c", run], cwd=tmp_path, timeout=30)
    assert r.returncode == exit_status


FAKE_SKY = """#!/bin/bash
# sky jobs launch -y -n NAME YAML: record the task, answer the next scripted exit code
cat "$6" >> "$FAKE/tasks"
code=$(head -n 1 "$FAKE/codes"); sed -i 1d "$FAKE/codes"; exit "$code"
"""


def run_driver(tmp_path, codes, *args):
    fake(tmp_path, "sky", FAKE_SKY)
    (tmp_path / "codes").write_text("".join(f"{c}\n" for c in codes))
    (tmp_path / "run.sh").write_text(
        launch_skypilot.skypilot_script(ARGS, "gs://b/runs/ib", PLAN, "/ns", spot=True))
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE": str(tmp_path)}
    r = subprocess.run(["bash", str(tmp_path / "run.sh"), *args], env=env, capture_output=True,
                       text=True, timeout=60)
    tasks = [t for t in yaml.safe_load_all((tmp_path / "tasks").read_text().replace(
        "\n# noise_scale leg", "\n---\n# noise_scale leg"))]
    return r, [(t["name"], t["resources"]["accelerators"]) for t in tasks]


def test_the_driver_launches_each_leg_after_the_last_one_paused(tmp_path):
    r, launched = run_driver(tmp_path, [0, 0, 0])
    assert r.returncode == 0 and "done: the run finished" in r.stdout, r.stderr
    assert launched == [("noise-scale-leg1", "tpu-v5litepod-8"),
                        ("noise-scale-leg2", "tpu-v5litepod-32"),
                        ("noise-scale-leg3", "tpu-v5litepod-128")]


def test_the_driver_stops_at_a_failed_leg_and_says_how_to_relaunch_it(tmp_path):
    r, launched = run_driver(tmp_path, [100], "2")
    assert r.returncode == 100 and launched == [("noise-scale-leg2", "tpu-v5litepod-32")]
    assert "leg 2 did not succeed (sky exit 100" in r.stderr and "run.sh 2" in r.stderr
