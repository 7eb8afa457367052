"""The Cloud TPU driver: its text for a 3-leg run, the input it refuses, and what it does
on 75, 143, a preemption and a failure, run against a fake ``gcloud`` (no cloud, no VM)."""

import os
import stat
import subprocess
import sys

import pytest

from noise_scale.errors import UsageError
from noise_scale.launch import gcloud as launch_gcloud
from noise_scale.launch.plan import Leg, main_arguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# small_config's B = 32, 160, 800, 4,000 under max_device_batch=25 over slices (8, 32, 128)
PLAN = [Leg(8, 0, 1, 2), Leg(32, 2, 2, 3), Leg(128, 3, 3, 0)]
ARGS = main_arguments("configs/mnist1d.py:increase_batch",
                      [("slices", "(8,32,128)"), ("max_device_batch", "25")], "gs://b/runs/ib")
OPTIONS = dict(project="proj", zone="us-west4-a", tpu_name="ns", prefix="v5litepod",
               version="v2-alpha-tpuv5-lite", repo="https://github.com/x/noise_scale.git",
               commit="abc123")

HEADER = """#!/bin/bash
# noise_scale on Cloud TPU VMs, written by python -m noise_scale.launch --engine=gcloud.
# One leg per slice; `bash THIS_SCRIPT [LEG]` runs from LEG (default 1) to the end:
#   leg 1: v5litepod-8 (1 host), stop_at_stage=2   # stages 0-1 on 8 devices
#   leg 2: v5litepod-32 (8 hosts), stop_at_stage=3   # stage 2 on 32 devices
#   leg 3: v5litepod-128 (32 hosts), stop_at_stage=0   # stage 3 on 128 devices
set -uo pipefail
PROJECT=proj ZONE=us-west4-a NAME=ns VERSION=v2-alpha-tpuv5-lite
TYPES=(v5litepod-8 v5litepod-32 v5litepod-128)
HOSTS=(1 8 32)
STOPS=(2 3 0)
LOGS=gs://b/runs/ib/logs
INSTALL=$(cat <<'NOISE_SCALE_EOF'
set -e
test -d noise_scale || git clone -q https://github.com/x/noise_scale.git noise_scale
cd noise_scale && git fetch -q origin && git checkout -q abc123
command -v python3.11 >/dev/null || { sudo apt-get -qq update && sudo apt-get -qq install -y python3.11-venv; }
test -x .venv/bin/python || python3.11 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[tpu]'
NOISE_SCALE_EOF
)
WORKER=$(cat <<'NOISE_SCALE_EOF'
cd ~/noise_scale || exit 1
mkdir -p ~/noise_scale_logs && log=~/noise_scale_logs/leg-$LEG-$(hostname).log
.venv/bin/python -m noise_scale.main --config=configs/mnist1d.py:increase_batch \
'--config.slices=(8,32,128)' --config.max_device_batch=25 --workdir=gs://b/runs/ib \
--config.stop_at_stage=$STOP >>"$log" 2>&1
"""

FAKE_GCLOUD = r"""#!/bin/bash
# gcloud compute tpus SUBCOMMAND VERB NAME ...: one VM in $FAKE/vm, scripted leg outcomes
printf "%q " "$@" >> "$FAKE/calls"; echo >> "$FAKE/calls"  # one line a call
case "$3 $4" in
  "tpu-vm describe") test -f "$FAKE/vm" && cat "$FAKE/vm" ;;
  "tpu-vm create") printf 'READY\t%s\n' "${6#--accelerator-type=}" > "$FAKE/vm" ;;
  "tpu-vm delete") rm "$FAKE/vm" ;;
  "tpu-vm ssh")
    case "$*" in *noise_scale.main*) ;; *) exit 0 ;; esac  # the install
    read -r status workers < <(head -n 1 "$FAKE/outcomes"); sed -i 1d "$FAKE/outcomes"
    if [ "$status" = preempt ]; then printf 'PREEMPTED\tx\n' > "$FAKE/vm"; exit 255; fi
    for _ in $(seq "$workers"); do echo "noise_scale-exit=$status"; done ;;
esac
"""


def script(workdir="gs://b/runs/ib", plan=PLAN, **options):
    args = main_arguments("configs/mnist1d.py:increase_batch",
                          [("slices", "(8,32,128)"), ("max_device_batch", "25")], workdir)
    return launch_gcloud.gcloud_script(args, workdir, plan, **{**OPTIONS, **options})


def test_the_script_names_each_legs_slice_and_pause():
    text = script()
    assert text.replace(" \\\n", " ").startswith(HEADER.replace(" \\\n", " ")), text[:2000]
    for branch in ("    0) echo \"done: logs in $LOGS\"; delete_vm; exit 0 ;;",
                   "    143) echo \"leg $leg preempted, checkpoint saved: relaunching it\" >&2 ;;",
                   '--accelerator-type="$1" --version="$VERSION"; }'):
        assert branch in text


def test_spot_and_queued_resources():
    assert 'create "$NAME" --accelerator-type="$1" --version="$VERSION" --spot; }' in script(
        spot=True)
    queued = script(spot=True, queued=True)
    assert 'queued-resources create "$NAME" --node-id="$NAME"' in queued
    assert '--runtime-version="$VERSION" --spot || return 1' in queued
    assert 'delete_vm() { tpu queued-resources delete "$NAME" --force --quiet; }' in queued


@pytest.mark.parametrize("prefix, devices, kind, n", [
    ("v5litepod", 8, "v5litepod-8", 1), ("v5litepod", 16, "v5litepod-16", 4),
    ("v4", 4, "v4-8", 1), ("v4", 32, "v4-64", 8), ("v3", 32, "v3-32", 4)])
def test_the_accelerator_type_and_hosts_of_a_slice(prefix, devices, kind, n):
    assert launch_gcloud.accelerator_type(prefix, devices) == kind
    assert launch_gcloud.hosts(prefix, devices) == n


def test_a_local_workdir_is_refused_for_a_multi_host_slice_or_several_legs():
    with pytest.raises(UsageError, match=r"--workdir=/runs/ib .* leg 3 runs on 32 hosts"):
        script(workdir="/runs/ib")
    with pytest.raises(UsageError, match=r"--workdir=/runs/ib .* the run has 2 legs"):
        script(workdir="/runs/ib", plan=[Leg(4, 0, 0, 1), Leg(8, 1, 1, 0)])
    assert "NAME=ns" in script(workdir="/runs/ib", plan=[Leg(8, 0, 3, 0)])  # one VM, one leg


@pytest.mark.parametrize("missing", ["project", "zone", "repo"])
def test_a_missing_project_zone_or_repo_is_refused_naming_it(missing):
    with pytest.raises(UsageError, match=f"--engine=gcloud needs --{missing}"):
        script(**{missing: ""})


def run_driver(tmp_path, outcomes):
    (tmp_path / "gcloud").write_text(FAKE_GCLOUD)
    (tmp_path / "gcloud").chmod(stat.S_IRWXU)
    (tmp_path / "outcomes").write_text("".join(f"{o}\n" for o in outcomes))
    (tmp_path / "run.sh").write_text(script())
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE": str(tmp_path)}
    r = subprocess.run(["bash", str(tmp_path / "run.sh")], env=env, capture_output=True,
                       text=True, timeout=60)
    calls = (tmp_path / "calls").read_text().splitlines()
    return r, calls


def verbs(calls):
    """create TYPE / delete / run STOP, in order (describes and installs left out)."""
    out = []
    for call in calls:
        words = call.split()
        if words[3] == "create":
            out.append(f"create {words[5].split('=')[1]}")
        elif words[3] == "delete":
            out.append("delete")
        elif words[3] == "ssh" and "noise_scale.main" in call:
            out.append(f"run {call.split('STOP=')[1].split(';')[0]}")
    return out


def test_the_driver_pauses_grows_relaunches_and_finishes(tmp_path):
    r, calls = run_driver(tmp_path, ["75 1", "preempt", "143 8", "75 8", "0 32"])
    assert r.returncode == 0, r.stderr
    assert verbs(calls) == [
        "create v5litepod-8", "run 2", "delete",            # leg 1 pauses at stage 2
        "create v5litepod-32", "run 3",                     # leg 2: its VM is taken
        "delete", "create v5litepod-32", "run 3",           # recreated, resumed
        "run 3",                                            # 143 on a live VM: same VM again
        "delete", "create v5litepod-128", "run 0", "delete"]  # leg 3 finishes
    assert "leg 2 preempted" in r.stderr and "done: logs in gs://b/runs/ib/logs" in r.stdout
    installs = [c for c in calls if "ssh" in c and "git clone" in c]
    assert len(installs) == 5  # before every run, on every worker
    assert all("--worker=all" in c and "--project=proj --zone=us-west4-a" in c for c in installs)


def test_a_failure_or_a_missing_worker_stops_with_the_logs_and_keeps_the_vm(tmp_path):
    r, calls = run_driver(tmp_path, ["1 1"])
    assert r.returncode == 1 and verbs(calls) == ["create v5litepod-8", "run 2"]
    assert "leg 1 failed (exit 1): logs in gs://b/runs/ib/logs" in r.stderr
    r, calls = run_driver(tmp_path, ["75 1", "75 7"])  # one of 8 workers said nothing
    assert r.returncode == 1 and "statuses: 75, 7 of 8" in r.stderr, r.stderr


def test_the_launch_command_refuses_a_local_workdir_for_multi_host_with_exit_2():
    r = subprocess.run([sys.executable, "-m", "noise_scale.launch", "--engine=gcloud",
                        "--config=configs/mnist1d.py:increase_batch",
                        "--config.slices=(8,32,128)", "--config.max_device_batch=25",
                        "--config.dataset_size=4000", "--workdir=/tmp/x", "--project=p",
                        "--zone=z", "--repo=https://example.com/r.git"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--workdir=/tmp/x is on a VM's local disk" in r.stderr, r.stderr


def test_run_writes_the_script_runs_it_and_exits_with_its_status(tmp_path):
    """``--run`` end to end on a one-leg plan, gcloud faked: the worker's 0 is the exit."""
    (tmp_path / "gcloud").write_text(FAKE_GCLOUD)
    (tmp_path / "gcloud").chmod(stat.S_IRWXU)
    (tmp_path / "outcomes").write_text("0 1\n")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "noise_scale.launch", "--engine=gcloud", "--run",
                        f"--script={tmp_path}/run.sh", "--config=configs/mnist1d.py:increase_batch",
                        "--config.slices=(8,)", "--workdir=gs://b/r", "--project=p", "--zone=z",
                        "--repo=https://example.com/r.git"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "done: logs in gs://b/r/logs" in r.stdout, r.stderr
    assert "leg 1: v5litepod-8 (1 host), stop_at_stage=0" in (tmp_path / "run.sh").read_text()
