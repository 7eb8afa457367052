"""One process of a multi-process test run (started by tests/test_multihost.py).

    python tests/multiprocess_worker.py WORKDIR DATA_DIR PORT PROCESS_ID INDEX_FILE [GHOST [LR
        [STOP_AT_STAGE]]]

Joins a 2-process JAX runtime on 127.0.0.1:PORT (CPU devices, gloo collectives), or,
with PORT ``detect``, the run its environment describes (faked SLURM or Open MPI
variables set by the test: no multi-host flags at all),
runs the small 4-stage MNIST-1D schedule of tests/helpers.py, and saves the
training-example indices this process read (in order) to INDEX_FILE.npy.
Exit status: 0 done, 143 preempted (SIGTERM, checkpoint written), 75 paused at
STOP_AT_STAGE (checkpoint written).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from noise_scale.cluster import distributed


def main():
    workdir, data_dir, port, pid, index_file = sys.argv[1:6]
    if port == "detect":
        assert distributed.initialize(timeout_seconds=120)
    else:
        distributed.initialize(f"127.0.0.1:{port}", 2, int(pid), timeout_seconds=120)

    from noise_scale import errors, train
    from noise_scale.data import ArraySource, Dataset
    from noise_scale.train import run as train_run
    from tests.helpers import small_config

    read = []

    class Recording(ArraySource):
        def get_batch(self, indices, positions=None, seed=0):
            # data.checks reads examples 0..k at positions 0..k before training: not a step
            # of the stream (a shuffled step is never the identity)
            check = np.array_equal(indices, positions)
            if len(positions) and positions[0] >= 0 and not check:
                read.append(np.asarray(indices).copy())
            return super().get_batch(indices, positions, seed)

    real = train_run.load_dataset

    def recording_dataset(config):
        d = real(config)
        return Dataset(Recording(d.train.arrays), d.eval, d.num_classes, d.input_shape, d.name)

    train_run.load_dataset = recording_dataset  # where train.setup looks it up
    config = small_config("increase_batch", data_dir)
    config.checkpoint_every_epochs = 0.5
    if len(sys.argv) > 6:
        config.ghost_batch_size = int(sys.argv[6])
    if len(sys.argv) > 7:
        config.schedule.learning_rate = float(sys.argv[7])
    if len(sys.argv) > 8:
        config.stop_at_stage = int(sys.argv[8])
    code = 0
    try:
        train.train_and_evaluate(config, workdir)
    except errors.Preempted as e:
        print(e, file=sys.stderr, flush=True)
        code = 128 + e.signum
    except errors.Paused:
        code = 75
    finally:
        np.save(index_file, np.concatenate(read) if read else np.zeros(0, np.int64))
    sys.exit(code)


if __name__ == "__main__":
    main()
