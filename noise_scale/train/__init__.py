"""Training: ``train_and_evaluate(config, workdir)`` runs a schedule to its end, resuming.

    run.py     what a run is, built and checked once before any compile (``Run``, frozen)
    stage.py   what a stage needs before its first step: its compiled step, the batch stream
    loop.py    the loop, which owns everything that changes while it runs: the train state,
               the plan in force, the clock, the cadence, the timers and the records

The public names below are what README, the notebooks, the reproduction and user code use.
"""

from noise_scale.train.loop import MAX_STEPS_IN_FLIGHT, Loop, train, train_and_evaluate
from noise_scale.train.run import Run, check_ghost_batches, init_state, restore_or_init, setup

__all__ = ["MAX_STEPS_IN_FLIGHT", "Loop", "Run", "check_ghost_batches", "init_state",
           "restore_or_init", "setup", "train", "train_and_evaluate"]
