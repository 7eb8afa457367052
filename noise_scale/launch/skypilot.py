"""The SkyPilot driver: one managed-job task YAML per leg, and the script that launches them.

  python -m noise_scale.launch --engine=skypilot --config=configs/imagenet_resnet50.py:increase_batch \
      --config.slices='(8,32,128)' --config.max_device_batch=256 \
      --workdir=gs://BUCKET/runs/ib --spot > run.sh           # TPU slices (--tpu_type_prefix)
  ... --gpu=H100 --gpus_per_node=8 > run.sh                    # or GPU nodes
  bash run.sh        # from the first leg; `bash run.sh 2` starts at the second

Each leg is a task: ``resources.accelerators`` the leg's slice (``tpu-v5litepod-32``: one
SkyPilot node, a pod slice whose hosts JAX finds from the TPU metadata; or ``H100:8`` on
``num_nodes`` nodes, started with the project's explicit multi-host flags from
``SKYPILOT_NODE_IPS`` (first line: the head), ``SKYPILOT_NUM_NODES`` and
``SKYPILOT_NODE_RANK``), ``workdir`` this clone (SkyPilot syncs it to every node, leaving out
what ``.gitignore`` does, so local changes travel too), ``setup`` a Python 3.11 venv with the
pins, ``run`` the leg with its ``stop_at_stage``. The driver runs ``sky jobs launch`` per leg
and reads its exit status as SkyPilot's ``JobExitCode`` (0 succeeded, 100 failed, 101 not
finished, 102 not found, 103 cancelled: ``sky/exceptions.py``).

How the two stops fit managed jobs (``resources.job_recovery``, SkyPilot's docs):

- A preempted spot cluster is recovered by SkyPilot itself: the same task on a new cluster,
  resuming the workdir's newest checkpoint. When training itself exits 143 (SIGTERM reached
  it, checkpoint saved, the cluster still up), ``recover_on_exit_codes: [143]`` has SkyPilot
  restart it as well ("regardless of the max_restarts_on_errors limit"), so 143 never
  reaches the driver; ``max_restarts_on_errors: 0`` keeps a real failure from restarting.
- 75 (paused at the next leg's first stage) is turned into 0 by ``run`` so the job
  SUCCEEDS; the driver then launches the next leg. A leg whose stop stage is 0 ends the run.

Not checked offline (no cloud here): that ``sky jobs launch`` (streaming, without
``--detach-run``) exits with the job's ``JobExitCode``, that a multi-host TPU slice is one
node whose ``run`` starts on every host, and the TPU runtime SkyPilot picks.
"""

from __future__ import annotations

from noise_scale.errors import UsageError
from noise_scale.launch.gcloud import accelerator_type
from noise_scale.launch.plan import Leg, is_bucket

SETUP = """command -v python3.11 >/dev/null || { sudo apt-get -qq update && sudo apt-get -qq install -y python3.11-venv; }
test -x .venv/bin/python || python3.11 -m venv .venv
.venv/bin/pip install -q -c constraints.txt -e '.[EXTRA]'"""

MULTI_NODE = ('--coordinator_address="$(echo "$SKYPILOT_NODE_IPS" | head -n1):8476" '
              '--num_processes="$SKYPILOT_NUM_NODES" --process_id="$SKYPILOT_NODE_RANK" ')


def accelerators(leg: Leg, prefix: str, gpu: str, gpus_per_node: int) -> tuple[str, int]:
    """The leg's ``resources.accelerators`` and ``num_nodes``."""
    if not gpu:
        return f"tpu-{accelerator_type(prefix, leg.devices)}", 1
    if leg.devices > gpus_per_node and leg.devices % gpus_per_node:
        raise UsageError(f"a slice of {leg.devices} devices is not whole nodes of "
                         f"--gpus_per_node={gpus_per_node}; list slices that are (config.slices).")
    return f"{gpu}:{min(leg.devices, gpus_per_node)}", max(leg.devices // gpus_per_node, 1)


def task_yaml(number: int, leg: Leg, arguments: str, clone: str, *, prefix: str = "v5litepod",
              gpu: str = "", gpus_per_node: int = 8, spot: bool = False) -> str:
    """The managed-job task of leg ``number`` (see the module docstring)."""
    kind, nodes = accelerators(leg, prefix, gpu, gpus_per_node)
    flags = MULTI_NODE if nodes > 1 else ""
    indent = "\n  "
    return f"""# noise_scale leg {number}: {leg}, stop_at_stage={leg.stop}
name: noise-scale-leg{number}
resources:
  accelerators: {kind}
  use_spot: {"true" if spot else "false"}
  job_recovery:
    max_restarts_on_errors: 0
    recover_on_exit_codes: [143]
num_nodes: {nodes}
workdir: {clone}
setup: |
  {indent.join(SETUP.replace("EXTRA", "cuda" if gpu else "tpu").splitlines())}
run: |
  .venv/bin/python -m noise_scale.main {arguments} \\
    {flags}--config.stop_at_stage={leg.stop}
  status=$?
  if [ $status -eq 75 ]; then exit 0; fi  # paused on purpose: the driver starts the next leg
  exit $status
"""


def skypilot_script(arguments: str, workdir: str, plan: list[Leg], clone: str, **options) -> str:
    """The driver for every leg of ``plan``: each leg's task, then ``sky jobs launch``."""
    if not is_bucket(workdir):
        raise UsageError(f"--workdir={workdir} is on a cluster's disk, lost when a managed job "
                         "moves to a new cluster (preemption, the next leg): every node and "
                         "every leg must resume the same checkpoints. Use a bucket, e.g. "
                         "--workdir=gs://YOUR_BUCKET/runs/NAME.")
    tasks = "\n".join(f"{i}) cat <<'NOISE_SCALE_EOF'\n"
                      f"{task_yaml(i, leg, arguments, clone, **options)}NOISE_SCALE_EOF\n;;"
                      for i, leg in enumerate(plan, 1))
    return f"""#!/bin/bash
# noise_scale on SkyPilot managed jobs, written by python -m noise_scale.launch --engine=skypilot.
# One job per leg; `bash THIS_SCRIPT [LEG]` runs from LEG (default 1) to the end.
set -uo pipefail
STOPS=({" ".join(str(leg.stop) for leg in plan)})
task() {{
case $1 in
{tasks}
esac
}}
leg=${{1:-1}}
while [ "$leg" -le ${{#STOPS[@]}} ]; do
  yaml=$(mktemp --suffix=.yaml) && task "$leg" > "$yaml"
  sky jobs launch -y -n noise-scale-leg$leg "$yaml"
  status=$?
  rm -f "$yaml"
  case $status in
    0) [ "${{STOPS[leg - 1]}}" = 0 ] && {{ echo "done: the run finished"; exit 0; }}
       echo "leg $leg paused at stage ${{STOPS[leg - 1]}}: next, leg $((leg + 1))" >&2
       leg=$((leg + 1)) ;;
    *) echo "leg $leg did not succeed (sky exit $status: 100 failed, 103 cancelled); its" \\
         "logs: sky jobs logs (or sky jobs queue for its id). Relaunch it with:" \\
         "bash $0 $leg" >&2
       exit "$status" ;;
  esac
done
"""
