"""The GKE driver: a bash script that runs every leg of a growing run as an xpk workload.

  python -m noise_scale.launch --engine=xpk --config=configs/imagenet_resnet50.py:increase_batch \
      --config.slices='(8,32,128)' --config.max_device_batch=256 \
      --workdir=gs://BUCKET/runs/ib --cluster=CLUSTER --project=PROJECT --zone=ZONE > run.sh
  bash run.sh        # from the first leg; `bash run.sh 2` starts at the second

Per leg: ``xpk workload create --workload NAME-LEG-TIME --tpu-type TYPE --num-slices 1
--max-restarts N --base-docker-image python:3.11 --script-dir CLONE --command ...`` (the
flags of xpk's docs/usage/workloads.md and docs/usage/docker.md: the default flow layers
``--script-dir`` into ``/app`` of the base image, whose default, ``python:3.10``, is too old
for the pinned packages), then ``xpk workload list --wait-for-job-completion NAME`` for the
outcome, whose documented exit codes are 0 (finished, successful), 125 (finished, not
successful), 124 (timeout) and 1 (other failure). Those cannot tell 75 from 143, so:

- 143 (preempted or evicted, checkpoint saved) is left to xpk: a workload whose pods fail
  is restarted as a whole, ``--max-restarts`` times (xpk's docs recommend a large number for
  exactly this), and each restart resumes the workdir's newest checkpoint.
- 75 (paused at the next leg's first stage) is turned into 0 inside the container, so it is
  not "failed" and not restarted; the driver then starts the next leg's workload. A leg
  whose stop stage is 0 ends the run, so 0 there means done.
- Any other failure is restarted like a preemption until the restarts are spent (xpk's
  documented flags give no per-exit-code policy): a usage error (2) stops again within
  seconds each time, a diverged run (1) after its compile. Then, or with restarts spent: the driver stops and says where the logs are (each
  pod's output, in Cloud Logging / ``kubectl logs``; xpk prints the link), and how to
  relaunch the leg (``bash run.sh LEG``: a new workload name, the same workdir).

xpk's container wraps ``--command`` in ``bash -c`` and forwards SIGTERM to it (read in xpk's
``workload.py`` template): ``noise_scale.main`` runs as a child here, so the command forwards
SIGTERM to it in turn; the command is one line because xpk pastes it into a YAML block.
Not checked offline (no cluster here): that xpk's template still looks so, its
``terminationGracePeriodSeconds`` (30 s in its golden files: a checkpoint must be saved in
that time), the workload name rules (lower case, hyphens; a length limit), and that the
pods of a multi-host slice form one JAX run from GKE's variables. The repository's
``.dockerignore`` keeps ``.venv``, ``.git`` and local runs out of the image. TPU slices only; xpk's GPU flags (``--device-type``, ``--num-nodes``) are not used.
"""

from __future__ import annotations

import shlex

from noise_scale.errors import UsageError
from noise_scale.launch.gcloud import accelerator_type
from noise_scale.launch.plan import Leg, is_bucket


def container_command(arguments: str) -> str:
    """The leg's command in its pod (``$STOP`` is set before it), one line: install, train
    with SIGTERM passed on, and 75 turned into 0 (see the module docstring)."""
    return ("pip install -q -c constraints.txt -e '.[tpu]' || exit 1; "
            f"python3 -m noise_scale.main {arguments} --config.stop_at_stage=$STOP & pid=$!; "
            "trap 'kill -TERM $pid' TERM; wait $pid; s=$?; "
            "while kill -0 $pid 2>/dev/null; do wait $pid; s=$?; done; "
            "echo noise_scale-exit=$s; if [ $s -eq 75 ]; then exit 0; fi; exit $s")


def xpk_script(arguments: str, workdir: str, plan: list[Leg], *, cluster: str, workload: str,
               prefix: str, script_dir: str, project: str = "", zone: str = "",
               max_restarts: int = 50) -> str:
    """The driver for every leg of ``plan`` (see the module docstring)."""
    if not cluster:
        raise UsageError("--engine=xpk needs --cluster: the GKE cluster (made by `xpk cluster "
                         "create`) the workloads run on.")
    if not is_bucket(workdir):
        raise UsageError(f"--workdir={workdir} is inside a pod, lost when it stops: every pod "
                         "and every leg must resume the same checkpoints. Use a bucket, e.g. "
                         "--workdir=gs://YOUR_BUCKET/runs/NAME.")
    types = [accelerator_type(prefix, leg.devices) for leg in plan]
    legs_text = "\n".join(f"#   leg {i}: --tpu-type={t}, stop_at_stage={leg.stop}   # {leg}"
                          for i, (t, leg) in enumerate(zip(types, plan), 1))
    where = "".join(f" --{k}={shlex.quote(v)}" for k, v in (("project", project), ("zone", zone))
                    if v)
    return f"""#!/bin/bash
# noise_scale on GKE with xpk, written by python -m noise_scale.launch --engine=xpk.
# One workload per leg; `bash THIS_SCRIPT [LEG]` runs from LEG (default 1) to the end:
{legs_text}
set -uo pipefail
TYPES=({" ".join(types)})
STOPS=({" ".join(str(leg.stop) for leg in plan)})
COMMAND=$(cat <<'NOISE_SCALE_EOF'
{container_command(arguments)}
NOISE_SCALE_EOF
)
xpk_() {{ xpk "$@" --cluster={shlex.quote(cluster)}{where}; }}
leg=${{1:-1}}
while [ "$leg" -le ${{#TYPES[@]}} ]; do
  i=$((leg - 1))
  name={shlex.quote(workload)}-$leg-$(date +%s)
  xpk_ workload create --workload="$name" --tpu-type="${{TYPES[i]}}" --num-slices=1 \\
    --max-restarts={max_restarts} --base-docker-image=python:3.11 \\
    --script-dir={shlex.quote(script_dir)} --command="STOP=${{STOPS[i]}}; $COMMAND" || exit 1
  xpk_ workload list --wait-for-job-completion="$name"
  status=$?
  case $status in
    0) [ "${{STOPS[i]}}" = 0 ] && {{ echo "done: workload $name finished the run"; exit 0; }}
       echo "leg $leg paused at stage ${{STOPS[i]}}: next, leg $((leg + 1))" >&2
       leg=$((leg + 1)) ;;
    *) echo "leg $leg: workload $name did not finish (xpk exit $status: 125 failed, its" \\
         "restarts spent or a non-preemption error); its pods' logs are in Cloud Logging" \\
         "(kubectl logs). Relaunch it with: bash $0 $leg" >&2
       exit "$status" ;;
  esac
done
"""
