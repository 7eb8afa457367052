"""What a run is, built and checked once before any compile: ``setup`` → ``Run``.

Everything a run does is decided before its first compile: the config is validated in
one place (``validation``), the plan says every stage's examples, updates, per-device
batch and accumulation, and the data and the model are checked on one batch of each
split (``data.checks``). A bad input fails in seconds with a message, not after an hour.
``Run`` is frozen: what changes while the run goes (the state, a re-planned schedule,
the clock) is the loop's (``train.loop``).
"""

from __future__ import annotations

import dataclasses
import json
import logging

import jax
import jax.numpy as jnp

from noise_scale import gns, optim, parallel, run_files
from noise_scale.cluster import slices
from noise_scale.config import validation
from noise_scale.data import Dataset, Sampler, checks, load_dataset
from noise_scale.errors import SetupError
from noise_scale.models import create_model
from noise_scale.models.layers import effective_ghost_size
from noise_scale.schedule import Schedule, StagePlan, schedule_from_config, to_dict
from noise_scale.schedule.rules import extrapolation_note
from noise_scale.train import branching, identity, profiling
from noise_scale.train import checkpoint as checkpoint_lib


@dataclasses.dataclass(frozen=True)
class Run:
    """What ``setup`` validated and built. The schedule and plans are the validated ones:
    a measured cap's held boundary re-plans inside the loop, never here."""

    config: object
    workdir: str
    schedule: Schedule
    plans: tuple[StagePlan, ...]
    mesh: jax.sharding.Mesh
    dataset: Dataset
    model: object
    tx: object
    sampler: Sampler
    is_chief: bool

    @property
    def has_batch_stats(self) -> bool:
        return self.config.ghost_batch_size > 0


def check_ghost_batches(plans, ghost: int) -> list[str]:
    """Where a stage's per-device micro-batch cannot use ghost batches of ``ghost``: warnings.

    Ghost batches never span devices, so e.g. B = 3,200 on 8 devices (400 each) with
    ghost size 128 normalises over ghost batches of 100 (the largest divisor of 400 up
    to 128). Said once per stage before training, never silently.
    """
    warnings = []
    for p in plans:
        micro = p.micro_batch
        used = effective_ghost_size(micro, ghost) if ghost else 0
        if ghost and used != ghost:
            why = (f"fewer than config.ghost_batch_size={ghost}" if micro < ghost
                   else f"not a multiple of config.ghost_batch_size={ghost}")
            warnings.append(
                f"stage {p.index}: {micro} examples per device per micro-batch, {why}; batch "
                f"norm uses ghost batches of {used}. For exactly {ghost}, use batch sizes that "
                f"are multiples of devices x {ghost} (schedule.batch_multiple).")
    return warnings


def setup(config, workdir: str, dataset: Dataset | None = None) -> Run:
    """Validate the config, the paths and the devices; load the data; build model and optimizer.

    ``dataset``: data of your own (``noise_scale.data.Dataset``) instead of
    ``load_dataset(config)``; ``config.dataset_size`` must equal its training split's size.
    """
    validation.validate_config(config)  # every field, before any data or compile work
    validation.validate_paths(config, workdir)
    return build(config, workdir, dataset)


def build(config, workdir: str, dataset: Dataset | None) -> Run:
    """``setup`` after validation: the plan, the mesh, the data, the model, the optimizer.

    The data and the model are checked on one batch of each split (``data.checks``)
    before anything is written: a user's mistake exits 2 naming it, not as divergence.
    Each check raises its own ``UsageError`` kind; nothing here converts a ValueError,
    so a bug that raises one keeps its traceback (exit 70)."""
    schedule = schedule_from_config(config)
    mesh = parallel.make_mesh()
    plans = schedule.plan(mesh.size, config.max_device_batch)
    slices.check_stop_at_stage(config, plans)
    branching.check(config, schedule, mesh.size)
    profiling.check_stages(config, len(plans))
    slices.check_ghost_on_slices(config, schedule, mesh.size)
    tx = optim.create_optimizer(config, schedule)
    if dataset is None:  # a missing or unprepared dataset says how to prepare it
        dataset = load_dataset(config)
    sampler = Sampler(dataset.train, schedule, config.seed, jax.process_index(),
                      jax.process_count())
    first = checks.check_dataset(dataset, config)  # one batch of each split, and the
    model = create_model(config, dataset.num_classes, dataset.normalization)
    checks.check_model(model, first["input"], dataset.num_classes, config)  # logits
    if jax.process_index() == 0:
        for w in (check_ghost_batches(plans, config.ghost_batch_size)
                  + gns.unmeasured_stages(config, plans, mesh.size)):
            logging.warning(w)
        if extrapolation_note(config):
            logging.warning(extrapolation_note(config))
    return Run(config, workdir, schedule, tuple(plans), mesh, dataset, model, tx, sampler,
               is_chief=jax.process_index() == 0)


def init_state(run: Run) -> parallel.TrainState:
    """Fresh parameters: initialisation needs the input's shape only, never its values."""
    sample = jnp.zeros((1, *run.dataset.input_shape), jnp.float32)
    return parallel.create_train_state(run.model, run.tx, jax.random.key(run.config.seed),
                                       sample, run.mesh)


def restore_or_init(run: Run, ckpt: checkpoint_lib.Checkpointer):
    """(state, meta): the newest intact checkpoint's, or a fresh state at examples seen 0."""
    state = init_state(run)
    try:
        restored = ckpt.restore_latest(state)
    except (checkpoint_lib.CheckpointMismatch, checkpoint_lib.NoIntactCheckpoint) as e:
        raise SetupError(str(e)) from None
    if restored is None:
        return state, {}
    state, meta, step = restored
    examples_seen = optim.clock(state.opt_state)
    if examples_seen != step:
        raise SetupError(
            f"the checkpoint numbered examples_seen={step:,} in {ckpt.directory} holds a state "
            f"whose clock reads {examples_seen:,}: it is damaged or was written by other code. "
            "Move that checkpoint away to resume from the previous one.")
    schedule = run.schedule
    stage = schedule.stage_index_at(min(examples_seen, schedule.total_examples - 1))
    logging.warning("resuming at examples_seen=%d (epoch %.3f, stage %d, update %d)",
                    examples_seen, examples_seen / schedule.dataset_size, stage,
                    schedule.updates_at(examples_seen))
    return state, meta


def write_run_files(run: Run, schedule: Schedule, fingerprint: dict) -> None:
    """fingerprint.json, config.json and schedule.json (the plan in force): what this run
    is, next to what it measured (each written whole, never through a link: ``run_files``)."""
    run_files.workdir_path(run.workdir).mkdir(parents=True, exist_ok=True)
    identity.write(run.workdir, fingerprint)
    run_files.write_text(run_files.path(run.workdir, run_files.CONFIG),
                         run.config.to_json(indent=2))
    table = to_dict(schedule, run.mesh.size, run.config.max_device_batch,
                    tuple(run.config.slices))
    run_files.write_text(run_files.path(run.workdir, run_files.SCHEDULE),
                         json.dumps(table, indent=2))
