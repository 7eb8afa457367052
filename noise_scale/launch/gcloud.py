"""The Cloud TPU VM driver: a bash script that runs every leg of a growing run with gcloud.

  python -m noise_scale.launch --engine=gcloud --config=configs/imagenet_resnet50.py:increase_batch \
      --config.slices='(8,32,128)' --config.max_device_batch=256 \
      --workdir=gs://BUCKET/runs/ib --project=PROJECT --zone=us-west4-a --spot > run.sh
  bash run.sh        # from the first leg; `bash run.sh 2` starts at the second

Why a script, not a Python loop: it is the plan as text the user reads (and edits) before a
VM is paid for, and the golden tests read the same text. Per leg it (1) makes the TPU VM
``--tpu_name`` the leg's accelerator type (``--tpu_type_prefix`` and the leg's device
count: a v5litepod/v6e/v2/v3 type counts JAX devices, a v4/v5p type TensorCores, two per
device), replacing one of another size or one not READY (a preempted spot VM cannot be
restarted, only recreated); (2) on every worker clones ``--repo`` at this clone's commit
(so the commit must be pushed), creates a Python 3.11 venv (stock images ship 3.10) and
installs with ``constraints.txt`` (the README's old one-liner ran ``cd noise_scale`` where
nothing was cloned); (3) runs ``noise_scale.main`` on all workers, each logging to the VM's
``~/noise_scale_logs/leg-N-HOST.log``, copied to ``<workdir>/logs`` when it stops; (4) acts
on the status every worker printed: 0 done (the VM is deleted), 143 preempted with a
checkpoint (relaunch the leg; its VM is recreated if it was taken), 75 paused at the next
leg's first stage (delete the VM, create the next leg's larger one), anything else stop
and say where the logs are. Every leg resumes the one workdir, so it must be a bucket
(``gs://``) whenever a slice is multi-host or the run has more than one leg (a VM's disk
goes with the VM); otherwise exit 2 naming ``--workdir``.

The status is read from a marker line each worker prints (``noise_scale-exit=N``), not from
the exit status of ``gcloud ... ssh --worker=all``: gcloud's documentation does not say what
that command returns when workers disagree or one fails (nothing found by search says
either), and a preempted VM drops the ssh connection (255) with no marker. So: all workers'
markers agree on 0, 75 or 143 → that status; a VM that is no longer READY → 143 (recreate and
resume from the newest checkpoint); anything else → a failure.

Not checked offline (no gcloud, no TPU here): the runtime ``--version`` defaults per
prefix (``RUNTIME_VERSIONS``) and the hosts per slice (``TPU_KINDS``: 4 devices a host on a
multi-host v4/v5p/v5e/v6e slice, 8 on v2/v3), both from Cloud TPU's docs as remembered; that a preempted spot
VM's ``describe`` reports ``PREEMPTED`` and a queued resource's ``state.state`` ``ACTIVE``
once granted (``SUSPENDED``/``FAILED`` otherwise), that the images carry ``git`` and have
``python3.11-venv`` in their apt sources, and that a multi-host slice forms one JAX run
from its metadata (``noise_scale.cluster.distributed``). The driver must stay connected for the
whole leg (run it in tmux or on a small VM): a dropped ssh session on a READY VM is
reported as a failure, not relaunched, because the workers may still be training.
"""

from __future__ import annotations

import shlex

from noise_scale.errors import UsageError
from noise_scale.launch.plan import Leg, is_bucket

# per type prefix: (units of the type's number per JAX device, JAX devices per host of a
# multi-host slice, the largest single-host slice in JAX devices)
TPU_KINDS = {"v2": (1, 8, 8), "v3": (1, 8, 8), "v4": (2, 4, 4), "v5p": (2, 4, 4),
             "v5litepod": (1, 4, 8), "v6e": (1, 4, 8)}
RUNTIME_VERSIONS = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base",
                    "v4": "tpu-ubuntu2204-base", "v5p": "v2-alpha-tpuv5",
                    "v5litepod": "v2-alpha-tpuv5-lite", "v6e": "v2-alpha-tpuv6e"}


def tpu_kind(prefix: str) -> tuple[int, int, int]:
    if prefix not in TPU_KINDS:
        raise UsageError(f"--tpu_type_prefix={prefix} is not one the launch knows how to size: "
                         f"use one of {', '.join(TPU_KINDS)}.")
    return TPU_KINDS[prefix]


def accelerator_type(prefix: str, devices: int) -> str:
    """The Cloud TPU type of a slice of ``devices`` JAX devices, e.g. v5litepod-32, v4-64."""
    return f"{prefix}-{devices * tpu_kind(prefix)[0]}"


def hosts(prefix: str, devices: int) -> int:
    """The VMs (workers) of that slice: each runs one ``noise_scale.main`` process."""
    _, per_host, single = tpu_kind(prefix)
    return 1 if devices <= single else -(-devices // per_host)


def check_workdir(workdir: str, prefix: str, plan: list[Leg]) -> None:
    """A workdir on a VM's disk is refused where it would be lost or split between hosts."""
    if is_bucket(workdir):
        return
    sizes = [hosts(prefix, leg.devices) for leg in plan]
    if max(sizes) > 1 or len(plan) > 1:
        why = (f"leg {sizes.index(max(sizes)) + 1} runs on {max(sizes)} hosts, each with its "
               "own disk" if max(sizes) > 1 else
               f"the run has {len(plan)} legs and each deletes the VM (and its disk) before the next")
        raise UsageError(f"--workdir={workdir} is on a VM's local disk, but {why}: every host and "
                         "every leg must resume the same checkpoints. Use a bucket, e.g. "
                         "--workdir=gs://YOUR_BUCKET/runs/NAME.")


def vm_functions(spot: bool, queued: bool) -> str:
    """The script's ``create_vm`` and ``delete_vm``: a TPU VM, or a queued resource."""
    spot_flag = " --spot" if spot else ""
    if not queued:
        return f"""create_vm() {{ tpu tpu-vm create "$NAME" --accelerator-type="$1" --version="$VERSION"{spot_flag}; }}
delete_vm() {{ tpu tpu-vm delete "$NAME" --quiet; }}"""
    return f"""create_vm() {{  # a queued resource: wait until the slice is granted
  tpu queued-resources create "$NAME" --node-id="$NAME" --accelerator-type="$1" \\
    --runtime-version="$VERSION"{spot_flag} || return 1
  while :; do
    case $(tpu queued-resources describe "$NAME" --format='value(state.state)') in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED) return 1 ;;
    esac
    sleep 60
  done
}}
delete_vm() {{ tpu queued-resources delete "$NAME" --force --quiet; }}"""


def install_command(repo: str, commit: str) -> str:
    """What every worker runs before a leg: this commit, a Python 3.11 venv, the pins."""
    return f"""set -e
test -d noise_scale || git clone -q {shlex.quote(repo)} noise_scale
cd noise_scale && git fetch -q origin && git checkout -q {commit}
command -v python3.11 >/dev/null || {{ sudo apt-get -qq update && sudo apt-get -qq install -y python3.11-venv; }}
test -x .venv/bin/python || python3.11 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[tpu]'"""


def worker_command(arguments: str, logs: str) -> str:
    """What every worker runs for a leg (``$LEG``, ``$STOP`` set before it): train, log,
    copy the log into the workdir, print the marker the driver reads."""
    copy = ("import sys; from etils import epath; log = epath.Path(sys.argv[1]); "
            "d = epath.Path(sys.argv[2]); d.mkdir(parents=True, exist_ok=True); "
            "(d / log.name).write_text(log.read_text())")
    return f"""cd ~/noise_scale || exit 1
mkdir -p ~/noise_scale_logs && log=~/noise_scale_logs/leg-$LEG-$(hostname).log
.venv/bin/python -m noise_scale.main {arguments} --config.stop_at_stage=$STOP >>"$log" 2>&1
status=$?
.venv/bin/python -c {shlex.quote(copy)} "$log" {shlex.quote(logs)}
echo "noise_scale-exit=$status"
exit $status"""


def gcloud_script(arguments: str, workdir: str, plan: list[Leg], *, project: str, zone: str,
                  tpu_name: str, prefix: str, version: str, repo: str, commit: str,
                  spot: bool = False, queued: bool = False) -> str:
    """The driver for every leg of ``plan`` (see the module docstring)."""
    for flag, value in (("--project", project), ("--zone", zone), ("--repo", repo)):
        if not value:
            raise UsageError(f"--engine=gcloud needs {flag}: the Cloud project and zone the TPU "
                             "VMs are created in, and the repository URL the workers clone "
                             "(default: this clone's `git remote get-url origin`).")
    if not commit:
        raise UsageError("--engine=gcloud installs the commit it is launched from on every "
                         "worker: run it in a git clone of noise_scale (with that commit pushed "
                         "to --repo).")
    check_workdir(workdir, prefix, plan)
    types = [accelerator_type(prefix, leg.devices) for leg in plan]
    sizes = [hosts(prefix, leg.devices) for leg in plan]
    legs_text = "\n".join(
        f"#   leg {i}: {t} ({n} host{'s' * (n > 1)}), stop_at_stage={leg.stop}   # {leg}"
        for i, (t, n, leg) in enumerate(zip(types, sizes, plan), 1))
    logs = f"{workdir}/logs"
    return f"""#!/bin/bash
# noise_scale on Cloud TPU VMs, written by python -m noise_scale.launch --engine=gcloud.
# One leg per slice; `bash THIS_SCRIPT [LEG]` runs from LEG (default 1) to the end:
{legs_text}
set -uo pipefail
PROJECT={shlex.quote(project)} ZONE={shlex.quote(zone)} NAME={shlex.quote(tpu_name)} VERSION={shlex.quote(version)}
TYPES=({" ".join(types)})
HOSTS=({" ".join(map(str, sizes))})
STOPS=({" ".join(str(leg.stop) for leg in plan)})
LOGS={shlex.quote(logs)}
INSTALL=$(cat <<'NOISE_SCALE_EOF'
{install_command(repo, commit)}
NOISE_SCALE_EOF
)
WORKER=$(cat <<'NOISE_SCALE_EOF'
{worker_command(arguments, logs)}
NOISE_SCALE_EOF
)
tpu() {{ gcloud compute tpus "$@" --project="$PROJECT" --zone="$ZONE"; }}
{vm_functions(spot, queued)}
vm_state() {{ tpu tpu-vm describe "$NAME" --format='value(state,acceleratorType)' 2>/dev/null; }}
ensure_vm() {{  # $1: the leg's type; a VM of another size, or not READY (preempted), is replaced
  local state type
  read -r state type <<<"$(vm_state)"
  [ "$state" = READY ] && [ "$type" = "$1" ] && return 0
  [ -n "$state" ] && {{ echo "replacing $NAME ($state $type) by a $1" >&2; delete_vm; }}
  create_vm "$1"
}}
run_leg() {{  # $1 leg, $2 stop, $3 hosts: the status every worker printed (see launch_gcloud)
  local out statuses count state
  out=$(mktemp)
  tpu tpu-vm ssh "$NAME" --worker=all --command="LEG=$1 STOP=$2; $WORKER" 2>&1 | tee "$out"
  statuses=$(grep -o 'noise_scale-exit=[0-9]*' "$out" | cut -d= -f2 | sort -u)
  count=$(grep -o 'noise_scale-exit=[0-9]*' "$out" | wc -l)
  rm -f "$out"
  read -r state _ <<<"$(vm_state)"
  [ "$state" = READY ] || return 143  # taken while it ran: resume on a new VM
  case $statuses in 0|75|143) [ "$count" -eq "$3" ] && return "$statuses" ;; esac
  echo "workers disagree or did not all report (statuses: ${{statuses:-none}}, $count of $3)" >&2
  return 1
}}
leg=${{1:-1}}
while [ "$leg" -le ${{#TYPES[@]}} ]; do
  i=$((leg - 1))
  ensure_vm "${{TYPES[i]}}" && tpu tpu-vm ssh "$NAME" --worker=all --command="$INSTALL" || {{
    echo "leg $leg: could not create $NAME (${{TYPES[i]}}) or install on it" >&2; exit 1; }}
  run_leg "$leg" "${{STOPS[i]}}" "${{HOSTS[i]}}"
  status=$?
  case $status in
    0) echo "done: logs in $LOGS"; delete_vm; exit 0 ;;
    143) echo "leg $leg preempted, checkpoint saved: relaunching it" >&2 ;;
    75) echo "leg $leg paused at stage ${{STOPS[i]}}: next, leg $((leg + 1))" >&2; delete_vm
        leg=$((leg + 1)) ;;
    *) echo "leg $leg failed (exit $status): logs in $LOGS and ~/noise_scale_logs on $NAME" \\
         "(tpu-vm ssh $NAME --worker=all); the VM is kept until you delete it" >&2
       exit "$status" ;;
  esac
done
"""
