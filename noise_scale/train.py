"""The loop: stage by stage — compile, step, evaluate, log. No maths of its own.

Everything a run does is decided before its first compile (``setup``), so a
bad config, a batch that does not divide over the devices or a ghost batch
that does not fit fails in seconds with a message, not after an hour.

Clock: the position in the example stream (examples seen). The stage, the
batch size, ε and m, epochs, and when to evaluate all follow from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from noise_scale import metrics as metrics_lib
from noise_scale import optim, parallel, theory
from noise_scale.data import Dataset, Sampler, load_dataset
from noise_scale.models import create_model
from noise_scale.schedule import Schedule, StagePlan, schedule_from_config


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


class SetupError(ValueError):
    """The run cannot start as configured; the message names the field and the fix."""


@dataclasses.dataclass
class Run:
    """What ``setup`` validated and built; the loop only reads it."""

    config: object
    workdir: str
    schedule: Schedule
    plans: list[StagePlan]
    mesh: jax.sharding.Mesh
    dataset: Dataset
    model: object
    tx: object
    sampler: Sampler
    has_batch_stats: bool
    is_chief: bool


def check_ghost_batches(plans: list[StagePlan], ghost: int) -> list[str]:
    """Every stage's per-device micro-batch must split into ghost batches; returns warnings."""
    warnings = []
    for p in plans:
        micro = p.micro_batch
        if ghost and micro > ghost and micro % ghost:
            raise SetupError(
                f"stage {p.index} puts {micro} examples per device per micro-batch, not a multiple "
                f"of config.ghost_batch_size={ghost}. Choose a ghost batch size that divides it, "
                "or batch sizes (schedule.batch_multiple) that are multiples of devices × ghost size."
            )
        if ghost and micro < ghost:
            warnings.append(
                f"stage {p.index}: {micro} examples per device < ghost_batch_size {ghost}; "
                "batch norm uses all of them."
            )
    return warnings


def setup(config, workdir: str) -> Run:
    """Validate the config against the devices and the data; build model and optimizer."""
    try:
        schedule = schedule_from_config(config)
        mesh = parallel.make_mesh()
        plans = schedule.plan(mesh.size, config.max_device_batch)
        for w in check_ghost_batches(plans, config.ghost_batch_size):
            logging.warning(w)
        if config.eval_batch_size <= 0:
            raise SetupError(f"config.eval_batch_size must be > 0, got {config.eval_batch_size}.")
        if config.eval_every_epochs <= 0:
            raise SetupError(
                f"config.eval_every_epochs must be > 0, got {config.eval_every_epochs}."
            )
        if config.log_every_steps <= 0:
            raise SetupError(f"config.log_every_steps must be > 0, got {config.log_every_steps}.")
        model = create_model(config, 10)  # validates config.model / dtype before any data work
        tx = optim.create_optimizer(config, schedule)
    except ValueError as e:
        raise SetupError(str(e)) from None
    dataset = load_dataset(config)
    model = create_model(config, dataset.num_classes)
    try:
        sampler = Sampler(dataset.train, schedule, config.seed, jax.process_index(),
                          jax.process_count())
    except ValueError as e:
        raise SetupError(str(e)) from None
    return Run(config, workdir, schedule, plans, mesh, dataset, model, tx, sampler,
               has_batch_stats=config.ghost_batch_size > 0, is_chief=jax.process_index() == 0)


def init_state(run: Run) -> parallel.TrainState:
    sample = run.dataset.train.get_batch(np.arange(1), np.arange(1), run.config.seed)["input"]
    rng = jax.random.key(run.config.seed)
    return parallel.create_train_state(run.model, run.tx, rng, jnp.asarray(sample), run.mesh)


def evaluate(run: Run, state, eval_step) -> dict:
    """Loss and accuracy over the whole eval split, every example exactly once.

    Batches are padded to a fixed size (a multiple of the device count, so one
    compile) and the padding is masked out of every sum.
    """
    source, mesh = run.dataset.eval, run.mesh
    n, shards = len(source), mesh.size
    size = int(math.ceil(run.config.eval_batch_size / shards) * shards)
    per_process = size // jax.process_count()
    lo = jax.process_index() * per_process
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    pending = []
    for start in range(0, n, size):
        idx = np.arange(start, start + size)
        mask = idx < n
        idx = np.where(mask, idx, 0)[lo : lo + per_process]
        batch = source.get_batch(idx, idx, run.config.seed)
        batch["mask"] = mask[lo : lo + per_process]
        pending.append(eval_step(state, parallel.shard_batch(batch, mesh)))
    for sums in jax.device_get(pending):
        for k in totals:
            totals[k] += float(sums[k])
    count = int(round(totals["count"]))
    return {
        "test_loss": totals["loss"] / count,
        "test_accuracy": totals["correct"] / count,
        "test_examples": count,
    }


class _Window:
    """Host-side sums of the step metrics since the last record (fetched every log step)."""

    def __init__(self):
        self.pending: list[tuple[int, dict]] = []
        self.reset()

    def reset(self):
        self.examples = 0
        self.loss_sum = 0.0
        self.acc_sum = 0.0
        self.last: dict = {}

    def flush(self) -> float | None:
        """Fetch pending device metrics; returns the last step's loss."""
        if not self.pending:
            return None
        fetched = jax.device_get([m for _, m in self.pending])
        for (b, _), m in zip(self.pending, fetched):
            self.examples += b
            self.loss_sum += b * float(m["loss"])
            self.acc_sum += b * float(m["accuracy"])
            self.last = m
        self.pending = []
        return float(self.last["loss"])


def train_and_evaluate(config, workdir: str) -> list[dict]:
    """Run the schedule to the end; returns the metric records (also in metrics.jsonl)."""
    run = setup(config, workdir)
    return train(run)


def train(run: Run) -> list[dict]:
    config, schedule, mesh = run.config, run.schedule, run.mesh
    n = schedule.dataset_size
    writer = metrics_lib.MetricWriter(run.workdir, enabled=run.is_chief)
    if run.is_chief:
        _write_run_files(run)
    state = init_state(run)
    position, updates = 0, 0
    total_updates = sum(p.updates for p in run.plans)
    eval_every = int(round(config.eval_every_epochs * n))
    next_eval = (position // eval_every + 1) * eval_every

    steps: dict[int, object] = {}
    eval_step = parallel.make_eval_step(run.model, mesh, run.has_batch_stats)
    counter = parallel.CompileCounter()
    progress = metrics_lib.Progress(schedule.total_examples, n, enabled=run.is_chief)
    window = _Window()
    records: list[dict] = []
    t_start = time.perf_counter()
    t_window, compile_window = time.perf_counter(), 0.0

    batches = run.sampler.iterate(
        position, prefetch=config.prefetch,
        transform=lambda hb: (hb, parallel.shard_batch(hb.data, mesh)),
    )
    try:
        for hb, batch in batches:
            stage = schedule.stage_index_at(hb.position)
            plan = run.plans[stage]
            b = hb.batch_size
            if b not in steps:
                steps[b] = parallel.make_train_step(
                    run.model, run.tx, mesh, batch_size=b,
                    accumulation_steps=plan.accumulation_steps,
                    label_smoothing=config.label_smoothing, has_batch_stats=run.has_batch_stats,
                )
            t0, c0 = time.perf_counter(), counter.count
            with counter:
                state, step_metrics = steps[b](state, batch)
            if counter.count > c0:
                compile_window += time.perf_counter() - t0
            position, updates = hb.position + b, updates + 1
            window.pending.append((b, step_metrics))

            at_end = position >= schedule.total_examples
            if updates % config.log_every_steps == 0 or position >= next_eval or at_end:
                loss = window.flush()
                if not math.isfinite(loss):
                    raise TrainingDiverged(
                        f"training loss became {loss} at update {updates} (stage {stage}, "
                        f"B={b}, epoch {position / n:.3f}); lower the learning rate or check "
                        "the data. Checkpoints written before this point are kept."
                    )
                progress.update(position, stage=stage, num_stages=len(schedule.stages),
                                batch_size=b, updates=updates, total_updates=total_updates,
                                loss=loss)
            if position >= next_eval or at_end:
                train_seconds = time.perf_counter() - t_window - compile_window
                record = _record(run, window, position, updates, stage, b, counter,
                                 train_seconds)
                record.update(evaluate(run, state, eval_step))
                record["wall_time"] = time.perf_counter() - t_start
                records.append(record)
                writer.write(record)
                window.reset()
                next_eval = (position // eval_every + 1) * eval_every
                t_window, compile_window = time.perf_counter(), 0.0
    finally:
        progress.done()
        writer.close()
    return records


def _record(run, window, position, updates, stage, batch_size, counter, train_seconds) -> dict:
    n = run.schedule.dataset_size
    lr, m = float(window.last["learning_rate"]), float(window.last["momentum"])
    plan = run.plans[stage]
    return {
        "epoch": position / n,
        "examples_seen": position,
        "updates": updates,
        "stage": stage,
        "batch_size": batch_size,
        "accumulation_steps": plan.accumulation_steps,
        "learning_rate": lr,
        "momentum": m,
        "noise_scale": theory.noise_scale(lr, batch_size, n, m),
        "train_loss": window.loss_sum / window.examples,
        "train_accuracy": window.acc_sum / window.examples,
        "examples_per_second": window.examples / max(train_seconds, 1e-9),
        "compiles": counter.count,
        "compile_seconds": counter.seconds,
        "devices": run.mesh.size,
    }


def _write_run_files(run: Run) -> None:
    os.makedirs(run.workdir, exist_ok=True)
    with open(os.path.join(run.workdir, "config.json"), "w") as f:
        f.write(run.config.to_json(indent=2))
    with open(os.path.join(run.workdir, "schedule.json"), "w") as f:
        json.dump(run.schedule.to_dict(run.mesh.size, run.config.max_device_batch), f, indent=2)
