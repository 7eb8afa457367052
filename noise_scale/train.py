"""The loop: stage by stage — compile, step, evaluate, log. No maths of its own.

Everything a run does is decided before its first compile (``setup``), so a
bad config, a batch that does not divide over the devices or a ghost batch
that does not fit fails in seconds with a message, not after an hour.

Clock: the position in the example stream (examples seen). The stage, the
batch size, ε and m, epochs, and when to evaluate all follow from it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from noise_scale import checkpoint as checkpoint_lib
from noise_scale import metrics as metrics_lib
from noise_scale import optim, parallel, theory
from noise_scale.data import Dataset, Sampler, load_dataset
from noise_scale.models import create_model
from noise_scale.models.layers import effective_ghost_size
from noise_scale.schedule import Schedule, StagePlan, schedule_from_config

# Steps dispatched ahead of the host. Two keep a device busy while the host prepares the
# next batch; an unbounded queue of collective programs can deadlock XLA:CPU's all-reduce
# rendezvous when many virtual devices share few cores (seen with 8 devices on 2 cores).
MAX_STEPS_IN_FLIGHT = 2


from noise_scale.errors import Preempted, SetupError, TrainingDiverged  # noqa: E402


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


def setup(config, workdir: str) -> Run:
    """Validate the config against the devices and the data; build model and optimizer."""
    try:
        schedule = schedule_from_config(config)
        mesh = parallel.make_mesh()
        plans = schedule.plan(mesh.size, config.max_device_batch)
        ghost_warnings = check_ghost_batches(plans, config.ghost_batch_size)
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
    try:
        dataset = load_dataset(config)  # a missing or unprepared dataset says how to prepare it
        model = create_model(config, dataset.num_classes)
        sampler = Sampler(dataset.train, schedule, config.seed, jax.process_index(),
                          jax.process_count())
    except ValueError as e:
        raise SetupError(str(e)) from None
    if jax.process_index() == 0:
        for w in ghost_warnings:
            logging.warning(w)
    return Run(config, workdir, schedule, plans, mesh, dataset, model, tx, sampler,
               has_batch_stats=config.ghost_batch_size > 0, is_chief=jax.process_index() == 0)


def init_state(run: Run) -> parallel.TrainState:
    # position -1: a read outside the example stream, only for the input's shape
    sample = run.dataset.train.get_batch(np.arange(1), np.array([-1]), run.config.seed)["input"]
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
            m = parallel.unpack_metrics(m)
            self.examples += b
            self.loss_sum += b * m["loss"]
            self.acc_sum += b * m["accuracy"]
            self.last = m
        self.pending = []
        return self.last["loss"]


def train_and_evaluate(config, workdir: str) -> list[dict]:
    """Run the schedule to the end, resuming from the workdir's newest intact checkpoint.

    Returns every metric record of the run (also in metrics.jsonl).
    """
    run = setup(config, workdir)
    return train(run)


class _Signals:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step (main thread only)."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _fault_injection_position() -> int:
    """Tests set NOISE_SCALE_SIGTERM_AT=<examples> to deliver a real SIGTERM at that point."""
    return int(os.environ.get("NOISE_SCALE_SIGTERM_AT", "-1"))


def _all_finite(tree) -> bool:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return bool(jax.device_get(jnp.all(jnp.stack(leaves)))) if leaves else True


def train(run: Run) -> list[dict]:
    config, schedule, mesh = run.config, run.schedule, run.mesh
    n = schedule.dataset_size
    try:
        ckpt = checkpoint_lib.Checkpointer(
            run.workdir, checkpoint_lib.experiment_fingerprint(config, schedule),
            config.keep_checkpoints)
    except ValueError as e:
        raise SetupError(str(e)) from None
    state = init_state(run)
    window = _Window()
    position, updates, compiles_before, wall_before = 0, 0, 0, 0.0
    try:
        restored = ckpt.restore_latest(state)
    except (checkpoint_lib.CheckpointMismatch, checkpoint_lib.NoIntactCheckpoint) as e:
        ckpt.close()
        raise SetupError(str(e)) from None
    if restored is not None:
        state, meta = restored
        position, updates = meta["examples_seen"], meta["updates"]
        window.examples, window.loss_sum, window.acc_sum = meta["window"]
        compiles_before, wall_before = meta["compiles"], meta["wall_time"]
        logging.warning("resuming at examples_seen=%d (epoch %.3f, stage %d, update %d)",
                        position, position / n, schedule.stage_index_at(position)
                        if position < schedule.total_examples else len(schedule.stages) - 1,
                        updates)
    # Records past the resume point will be written again, identically; the file is cut
    # back to the checkpoint here (through a temporary file, so a crash loses nothing).
    records = [r for r in metrics_lib.read_metrics(run.workdir) if r["examples_seen"] <= position]
    writer = metrics_lib.MetricWriter(run.workdir, enabled=run.is_chief, records=records)
    if run.is_chief:
        _write_run_files(run)

    total_updates = sum(p.updates for p in run.plans)
    eval_every = int(round(config.eval_every_epochs * n))
    ckpt_every = int(round(config.checkpoint_every_epochs * n)) if config.checkpoint_every_epochs > 0 else 0
    next_eval = (position // eval_every + 1) * eval_every
    next_ckpt = (position // ckpt_every + 1) * ckpt_every if ckpt_every else None
    fault_at = _fault_injection_position()

    steps: dict[int, object] = {}
    in_flight: collections.deque = collections.deque()
    eval_step = parallel.make_eval_step(run.model, mesh, run.has_batch_stats)
    counter = parallel.CompileCounter()
    progress = metrics_lib.Progress(schedule.total_examples, n, enabled=run.is_chief)
    t_start = time.perf_counter()
    t_window, compile_window, t_ckpt = time.perf_counter(), 0.0, time.time()

    def meta():
        return {"examples_seen": position, "updates": updates,
                "window": [window.examples, window.loss_sum, window.acc_sum],
                "compiles": compiles_before + counter.count,
                "wall_time": wall_before + time.perf_counter() - t_start}

    def save(wait=False):
        """Flush, check the state is finite (never checkpoint a diverged run), save."""
        check_loss(window.flush())
        if not _all_finite(state.params):
            raise TrainingDiverged(
                f"parameters became NaN/inf by update {updates} (epoch {position / n:.3f}); "
                "not checkpointing. The last good checkpoint is kept.")
        ckpt.save(state, meta(), wait=wait)

    def check_loss(loss):
        if loss is not None and not math.isfinite(loss):
            stage = schedule.stage_index_at(max(position - 1, 0))
            raise TrainingDiverged(
                f"training loss became {loss} at update {updates} (stage {stage}, "
                f"B={schedule.stages[stage].batch_size}, epoch {position / n:.3f}); lower the "
                "learning rate or check the data. Checkpoints written before this point are kept "
                f"in {ckpt.directory}.")

    batches = run.sampler.iterate(
        position, prefetch=config.prefetch,
        transform=lambda hb: (hb, parallel.shard_batch(hb.data, mesh)),
    )
    try:
        with _Signals() as signals:
            for hb, batch in batches:
                stage = schedule.stage_index_at(hb.position)
                plan = run.plans[stage]
                b = hb.batch_size
                if b not in steps:
                    steps[b] = parallel.make_train_step(
                        run.model, run.tx, mesh, batch_size=b,
                        accumulation_steps=plan.accumulation_steps,
                        label_smoothing=config.label_smoothing,
                        has_batch_stats=run.has_batch_stats,
                    )
                t0, c0 = time.perf_counter(), counter.count
                with counter:
                    state, step_metrics = steps[b](state, batch)
                if counter.count > c0:
                    compile_window += time.perf_counter() - t0
                position, updates = hb.position + b, updates + 1
                window.pending.append((b, step_metrics))
                in_flight.append(step_metrics)
                if len(in_flight) > MAX_STEPS_IN_FLIGHT:
                    in_flight.popleft().block_until_ready()
                if fault_at >= 0 and hb.position < fault_at <= position:
                    os.kill(os.getpid(), signal.SIGTERM)

                at_end = position >= schedule.total_examples
                if updates % config.log_every_steps == 0 or position >= next_eval or at_end:
                    loss = window.flush()
                    check_loss(loss)
                    progress.update(position, stage=stage, num_stages=len(schedule.stages),
                                    batch_size=b, updates=updates, total_updates=total_updates,
                                    loss=loss)
                if position >= next_eval or at_end:
                    window.flush()
                    train_seconds = time.perf_counter() - t_window - compile_window
                    record = _record(run, window, position, updates, stage, b,
                                     compiles_before + counter.count, train_seconds)
                    record.update(evaluate(run, state, eval_step))
                    record["wall_time"] = wall_before + time.perf_counter() - t_start
                    records.append(record)
                    writer.write(record)
                    window.reset()
                    next_eval = (position // eval_every + 1) * eval_every
                    t_window, compile_window = time.perf_counter(), 0.0

                new_stage = not at_end and schedule.stage_index_at(position) != stage
                due = (next_ckpt is not None and position >= next_ckpt) or (
                    config.checkpoint_every_minutes > 0
                    and time.time() - t_ckpt >= 60 * config.checkpoint_every_minutes)
                if signals.received is not None:
                    save(wait=True)
                    raise Preempted(signals.received, position, ckpt.directory)
                if at_end or new_stage or due:
                    save(wait=at_end)
                    t_ckpt = time.time()
                    if next_ckpt is not None:
                        next_ckpt = (position // ckpt_every + 1) * ckpt_every
    finally:
        progress.done()
        writer.close()
        ckpt.close()
    return records


def _record(run, window, position, updates, stage, batch_size, compiles, train_seconds) -> dict:
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
        "compiles": compiles,
        "devices": run.mesh.size,
    }


def _write_run_files(run: Run) -> None:
    """config.json and schedule.json: what this run is, next to what it measured."""
    d = epath.Path(run.workdir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(run.config.to_json(indent=2))
    schedule = run.schedule.to_dict(run.mesh.size, run.config.max_device_batch)
    (d / "schedule.json").write_text(json.dumps(schedule, indent=2))
