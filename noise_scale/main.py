"""Train with a batch-size schedule.

  python -m noise_scale.main --config=configs/mnist1d.py:increase_batch --workdir=/tmp/run
  python -m noise_scale.main --config=configs/imagenet_resnet50.py:increase_batch \
      --workdir=gs://bucket/run --config.data_dir=gs://bucket/tfds
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from noise_scale import config_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, TensorBoard and checkpoints.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "Multi-process runs off Cloud TPU: process 0's HOST:PORT.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-process runs: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-process runs: this process's id.")
_INIT_TIMEOUT = flags.DEFINE_integer(
    "initialization_timeout", 300, "Seconds to wait for the other processes to join.")


def main(argv_and_config):
    config, _ = argv_and_config
    if not _WORKDIR.value:
        config_lib.fail("--workdir is required: the directory for metrics and checkpoints.")
    from noise_scale import distributed, train  # JAX; after flag errors have had their say

    logging.set_verbosity(logging.WARNING)
    try:  # before anything touches a device
        distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               _INIT_TIMEOUT.value)
    except distributed.DistributedError as e:
        config_lib.fail(str(e), code=2)
    try:
        train.train_and_evaluate(config, _WORKDIR.value)
    except train.SetupError as e:  # bad input: nothing was trained or overwritten
        config_lib.fail(str(e), code=2)
    except train.TrainingDiverged as e:
        config_lib.fail(str(e), code=1)
    except train.Preempted as e:  # checkpoint written; the conventional 128 + signal number
        print(str(e), file=sys.stderr)
        sys.exit(128 + e.signum)


if __name__ == "__main__":
    app.run(main, flags_parser=config_lib.flags_parser)
