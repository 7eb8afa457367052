"""Train with a batch-size schedule.

  python -m noise_scale.main --config=configs/mnist1d.py:increase_batch --workdir=/tmp/run
  python -m noise_scale.main --config=configs/imagenet_resnet50.py:increase_batch \
      --workdir=gs://bucket/run --config.data_dir=gs://bucket/tfds

The same run from Python: ``noise_scale.train.train_and_evaluate(config, workdir)``.
"""

from __future__ import annotations

from noise_scale import _python
from noise_scale.cluster import preemption

_python.require_supported()  # before absl, JAX and the pinned packages are imported
if __name__ == "__main__":  # Ctrl-C while they import: exit 130, not an ImportError
    preemption.start_up().__enter__()  # main() holds it on through start-up

from absl import flags, logging

from noise_scale import cli
from noise_scale.config import validation

_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "",
    "Multi-process runs where no engine is detected (Cloud TPU, GKE, SLURM, Open MPI and "
    "Kubernetes Indexed Jobs are): process 0's HOST:PORT.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-process runs: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-process runs: this process's id.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds to wait for the other processes to join.")


def main(argv_and_config):
    config, _ = argv_and_config
    with preemption.start_up():  # Ctrl-C before the first step: exit 130, never a crash
        workdir = cli.require_workdir("metrics and checkpoints")
        validation.validate_config(config)  # bad input fails here in milliseconds, before JAX
        validation.validate_paths(config, workdir)  # a gs:// workdir: its packages and bucket
        from noise_scale import train  # JAX; after flag errors have had their say
        from noise_scale.cluster import distributed

        logging.set_verbosity(logging.WARNING)
        preemption.check_start_up()
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               _INIT_TIMEOUT.value)  # before anything touches a device
        preemption.check_start_up()
        train.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    cli.run(main)
