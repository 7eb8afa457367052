"""The fork runs of the critical-batch benchmarks: trained once, their checkpoints read back.

``critical_batch.py`` (the ground truth), ``critical_batch_reads.py`` (the probe re-read)
and ``critical_batch_one_step.py`` (the second rule) all start from the same fork run per
N and seed (``configs``: the measured ladder's reference with the probe measuring, B_simple
on and a checkpoint every 4 epochs kept), and the last two from its checkpoints at the
sweep's points of training (``run_at_forks``).
"""

from __future__ import annotations

import os


def configs(sweep, workdir: str, tiny: bool, seed: int = 0):
    """(fork run's config, the sweep's constant-ε config) for ``sweep``."""
    from noise_scale.configs import mnist1d_cosine

    def base(variant):
        c = mnist1d_cosine.get_config(variant)
        c.dataset_size = sweep.dataset_size
        c.seed = seed
        c.data_dir = os.path.join(workdir, "data") if tiny else ""
        return c

    ref = base("cosine_decay_lr")
    ref.probe.every_epochs = 4.0
    ref.measure_noise_scale = True
    ref.checkpoint_every_epochs = 4.0
    ref.keep_checkpoints = 100
    ref.log_every_steps = 1000
    if tiny:
        ref.schedule.total_epochs = max(sweep.fork_epochs) + 1
        ref.probe.every_epochs = ref.checkpoint_every_epochs = min(sweep.fork_epochs)
        ref.model = "mlp"
    runs = base("constant_lr")
    runs.schedule.total_epochs = ref.schedule.total_epochs
    runs.model = ref.model
    return ref, runs


def fork_dir(workdir: str, sweep, seed: int) -> str:
    """The fork run's workdir (seed 0's has no suffix: the committed results' name)."""
    return os.path.join(workdir, f"fork_run_n{sweep.dataset_size}"
                        + (f"_s{seed}" if seed else ""))


def fork_run(config, workdir: str) -> list[dict]:
    """The fork run's records (trained once; a finished workdir is read back)."""
    from noise_scale import records
    from noise_scale.train import loop

    done = records.read_metrics(workdir)
    if done and done[-1]["examples_seen"] >= config.schedule.total_epochs * config.dataset_size:
        return done
    return loop.train_and_evaluate(config, workdir)


def restore(run, workdir: str, examples: int):
    """The fork run's state at ``examples`` (its checkpoint, digests checked)."""
    from noise_scale.train import checkpoint as checkpoint_lib
    from noise_scale.train.run import init_state

    ckpt = checkpoint_lib.Checkpointer(workdir, {}, keep=100)
    try:
        if examples not in ckpt.steps():
            raise SystemExit(f"{workdir} has no checkpoint at examples_seen={examples} "
                             f"(it has {ckpt.steps()}); rerun the fork run.")
        return ckpt.read(examples, init_state(run))[0]
    finally:
        ckpt.close()


def run_at_forks(sweep, workdir: str, seed: int, tiny: bool, name: str, **probe):
    """(run, forks): a run set up as ``sweep``'s fork run (its workdir ``name``, with
    ``config.probe`` fields ``probe``) and (case name, examples seen, restored state) for
    each fork checkpoint: where the probe's re-reads and the one-step read start."""
    from noise_scale.train.run import setup

    config, _ = configs(sweep, workdir, tiny, seed)
    for k, v in probe.items():
        config.probe[k] = v
    run = setup(config, os.path.join(workdir, name))
    ref_dir = fork_dir(workdir, sweep, seed)
    forks = []
    for case, e in zip(sweep.names(), sweep.fork_epochs):
        fork = int(round(e * sweep.dataset_size))
        forks.append((case, fork, restore(run, ref_dir, fork)))
    return run, forks


def sweeps_with_fork_runs(args) -> tuple:
    """The sweeps ``args`` names (``--sizes``, ``--tiny``), each fork run of ``--seed``
    trained unless its workdir already holds a finished one: where the probe's re-reads
    and the one-step read start (after ``harness.use_repository``)."""
    import critical_batch

    sweeps = critical_batch.chosen_sweeps(args.sizes, args.tiny)
    for s in sweeps:
        config, _ = configs(s, args.workdir, args.tiny, args.seed)
        fork_run(config, fork_dir(args.workdir, s, args.seed))
    return sweeps
