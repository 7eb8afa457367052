"""The loop: for each remaining stage, compile its step, then step through its batches.

    for plan in the stages still to run:          # the schedule's walk
        step = compile ahead of time (one per batch size; a stage that only
               changes ε or m reuses it)
        for each batch of the stage:              # cut by the sampler at the plan's B
            state = step(state, batch)            # the clock advances by B
            log / evaluate / checkpoint when due

Where the device memory is known, every remaining stage is compiled at start-up
instead and checked against it (``precompile``); a run may stop on purpose at a
stage boundary (``config.stop_at_stage``) to move to a larger slice (``slices``), and
a measured cap may hold B at one (``cap``): what happens at a stage's start is in
``stage_start``. Its first steps may be traced with ``jax.profiler`` (``profiling``).

Everything a run does is decided before its first compile (``setup``): the
config is validated in one place (``validation``), the plan says every stage's
examples, updates, per-device batch and accumulation, and a bad input fails in
seconds with a message, not after an hour.

The clock is examples seen, held once: the optimizer state's counter
(``optim.clock``). A run starts from it (0, or the restored checkpoint's), the
checkpoint is numbered by it, and every record and checkpoint asserts that the
examples the loop dispatched equal it. Updates, epochs, the stage and when to
evaluate all follow from it.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import time

import jax
import jax.numpy as jnp

from noise_scale import (
    cap,
    compile_cache,
    gns,
    identity,
    optim,
    parallel,
    preemption,
    profiling,
    run_files,
    slices,
    validation,
    workdir_lock,
)
from noise_scale import checkpoint as checkpoint_lib
from noise_scale import metrics as metrics_lib
from noise_scale.data import Dataset, Sampler, checks, load_dataset, workers
from noise_scale.errors import Preempted, SetupError, TrainingDiverged
from noise_scale.evaluation import evaluate
from noise_scale.models import create_model
from noise_scale.models.layers import effective_ghost_size
from noise_scale.schedule import Schedule, StagePlan, schedule_from_config, to_dict
from noise_scale.schedule.rules import capped_schedule, extrapolation_note
from noise_scale.stage_start import compile_ahead, compile_step, maybe_decide, maybe_pause, stream

# Steps dispatched ahead of the host. Two keep a device busy while the host prepares the
# next batch; an unbounded queue of collective programs can deadlock XLA:CPU's all-reduce
# rendezvous when many virtual devices share few cores (seen with 8 devices on 2 cores).
MAX_STEPS_IN_FLIGHT = 2


@dataclasses.dataclass
class Run:
    """What ``setup`` validated and built; the loop reads it, and changes its plan only
    through ``install``."""

    config: object
    workdir: str
    schedule: Schedule
    plans: list[StagePlan]
    mesh: jax.sharding.Mesh
    dataset: Dataset
    model: object
    tx: object
    sampler: Sampler
    is_chief: bool

    @property
    def has_batch_stats(self) -> bool:
        return self.config.ghost_batch_size > 0


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


def setup(config, workdir: str, dataset: Dataset | None = None) -> Run:
    """Validate the config, the paths and the devices; load the data; build model and optimizer.

    ``dataset``: data of your own (``noise_scale.data.Dataset``) instead of
    ``load_dataset(config)``; ``config.dataset_size`` must equal its training split's size.
    """
    validation.validate_config(config)  # every field, before any data or compile work
    validation.validate_paths(config, workdir)
    return _build(config, workdir, dataset)


def _build(config, workdir: str, dataset: Dataset | None) -> Run:
    """``setup`` after validation: the plan, the mesh, the data, the model, the optimizer.

    The data and the model are checked on one batch of each split (``data.checks``)
    before anything is written: a user's mistake exits 2 naming it, not as divergence."""
    try:
        schedule = schedule_from_config(config)
        mesh = parallel.make_mesh()
        plans = schedule.plan(mesh.size, config.max_device_batch)
        slices.check_stop_at_stage(config, plans)
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
    except ValueError as e:
        raise SetupError(str(e)) from None
    if jax.process_index() == 0:
        for w in (check_ghost_batches(plans, config.ghost_batch_size)
                  + gns.unmeasured_stages(config, plans, mesh.size)):
            logging.warning(w)
        if extrapolation_note(config):
            logging.warning(extrapolation_note(config))
    return Run(config, workdir, schedule, plans, mesh, dataset, model, tx, sampler,
               is_chief=jax.process_index() == 0)


def train_and_evaluate(config, workdir: str, dataset: Dataset | None = None) -> list[dict]:
    """Run the schedule to the end, resuming from the workdir's newest intact checkpoint.

    Returns every metric record of the run (also in metrics.jsonl). ``dataset``: see ``setup``.
    The workdir is locked for the run (``workdir_lock``): a second run on it is refused.
    """
    validation.validate_config(config)  # bad input fails before the lock creates the workdir
    validation.validate_paths(config, workdir)
    with workdir_lock.hold(workdir):  # before the data: a busy workdir is refused in seconds
        return train(_build(config, workdir, dataset))


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
    position = optim.clock(state.opt_state)
    if position != step:
        raise SetupError(
            f"the checkpoint numbered examples_seen={step:,} in {ckpt.directory} holds a state "
            f"whose clock reads {position:,}: it is damaged or was written by other code. Move "
            "that checkpoint away to resume from the previous one.")
    schedule = run.schedule
    stage = schedule.stage_index_at(min(position, schedule.total_examples - 1))
    logging.warning("resuming at examples_seen=%d (epoch %.3f, stage %d, update %d)", position,
                    position / schedule.dataset_size, stage, schedule.updates_at(position))
    return state, meta


def train(run: Run) -> list[dict]:
    """Walk the plan from the clock's position to the end: the loop in the module docstring."""
    config = run.config
    fingerprint = checkpoint_lib.experiment_fingerprint(config, run.schedule)
    identity.check(run.workdir, fingerprint)  # another run's workdir: refused, nothing written
    compile_cache.enable(config, run.workdir, checkpoint_lib.fingerprint_digest(fingerprint))
    try:
        ckpt = checkpoint_lib.Checkpointer(run.workdir, fingerprint, config.keep_checkpoints)
    except ValueError as e:
        raise SetupError(str(e)) from None
    loop = batches = None
    try:
        state, meta = restore_or_init(run, ckpt)
        decisions = list(meta.get("cap_decisions", []))
        if decisions:  # the measured cap's decisions so far, replayed: the plan it stopped with
            state = install(run, state, capped_schedule(config, decisions))
        slices.check_resume_ghost(meta, run.plans, config.ghost_batch_size,
                                  optim.clock(state.opt_state), run.mesh.size,
                                  config.allow_ghost_change)
        loop = Loop(run, ckpt, optim.clock(state.opt_state), meta)
        loop.cap_decisions = decisions
        loop.cap_reads = list(meta.get("cap_reads", [None] * len(decisions)))
        compile_ahead(loop, state)
        batches = stream(run, loop.position)
        with preemption.Signals(agreed=preemption.agreement_available()) as signals:
            for k in range(len(run.plans)):  # a fixed count: a decision re-plans from k on
                if run.plans[k].end_example <= loop.position:
                    continue
                decision = maybe_decide(loop, run.plans[k])
                if decision is not None and not decision.grow:  # held: B stays, ε steps
                    state = install(run, state, decision.schedule)
                    batches.close()  # batches prefetched at the old size
                    batches = stream(run, loop.position)
                plan = run.plans[k]
                maybe_pause(loop, plan, state)
                state = train_stage(loop, plan, state, batches, signals)
        if loop.records:  # the end (a pause or a stop raised above)
            loop.progress.summary(loop.records[-1])
    finally:
        if batches is not None:  # stop the prefetch thread now, not at interpreter exit
            batches.close()
        if loop is not None:
            loop.close()
        ckpt.close()
    return loop.records


def install(run: Run, state, schedule: Schedule):
    """The one place a run's plan changes (a measured cap's held boundary, or a resume
    replaying the decisions): the schedule, its stage plans, the sampler's cut and the
    optimizer's stage table together. The stage count and every batch size stay those
    validated before training (``cap``), so no compiled step is invalidated."""
    run.schedule = schedule
    run.plans = cap.plans(schedule, run.plans, run.mesh.size, run.config.max_device_batch)
    run.sampler.schedule = schedule
    return state.replace(opt_state=optim.with_schedule(state.opt_state, schedule))


def train_stage(loop: Loop, plan: StagePlan, state, batches, signals):
    """One stage: compile (or reuse) its step, then every step of it from the clock on."""
    compiled = None
    dense_from = cap.dense_from(loop.run.config, loop.run.plans, plan)
    for position in plan.positions(loop.position):
        hb, batch = loop.input_wait.take(batches)
        if hb.position != position or hb.batch_size != plan.batch_size:
            raise RuntimeError(f"the sampler cut a batch at {hb.position} (B={hb.batch_size}) "
                               f"where the plan steps at {position} (B={plan.batch_size}).")
        if compiled is None:
            compiled, state = loop.step_for(plan, state, batch)
            loop.profile.start(plan.index, state)  # compiled: the trace holds steps only
        with loop.counter:
            state, step_metrics = compiled(state, batch, loop.updates,
                                           dense=position >= dense_from)
        loop.after_step(plan, step_metrics)
        loop.profile.after_step(state)
        loop.maybe_log(plan)
        loop.maybe_record(plan, state)
        stop = signals.stop_after(loop.steps_taken)  # the same step on every process
        if stop is not None:
            loop.save(state, wait=True)
            raise Preempted(stop, loop.position, loop.ckpt.directory,
                            elsewhere=signals.received is None)
        loop.maybe_checkpoint(plan, state)
    loop.profile.stop(state)  # a stage shorter than config.profile_steps
    return state


class Loop:
    """What the loop counts and writes between stages: clock mirror, window, record, timers.

    ``position`` counts the examples dispatched to the devices; it starts from the
    state's clock and is checked against it at every record and checkpoint (reading
    the device clock on every step would stall the pipeline).
    """

    def __init__(self, run: Run, ckpt, position: int, meta: dict):
        config, schedule = run.config, run.schedule
        self.run, self.ckpt, self.position = run, ckpt, position
        self.updates = schedule.updates_at(position)
        self.steps_taken = 0  # by this launch: what the processes agree on a stop by
        # the measured noise scale's averages, fed by every fetched step (checkpointed)
        self.noise = gns.averages_for(config, meta.get("noise_averages"))
        self.window = metrics_lib.Window(meta.get("window", (0, 0.0, 0.0)), self.noise)
        self.compiles_before, self.wall_before = meta.get("compiles", 0), meta.get("wall_time", 0.0)
        self.cached_before = meta.get("compiles_cached", 0)
        self.cap_decisions: list[bool] = []  # the measured cap's, boundary by boundary
        self.cap_reads: list[dict | None] = []  # the evidence each decision read (cap.Decision)
        # Records past the resume point will be written again, identically; the file is cut
        # back to the checkpoint here (through a temporary file, so a crash loses nothing).
        self.records = [r for r in metrics_lib.read_metrics(run.workdir)
                        if r["examples_seen"] <= position]
        if run.is_chief:  # the run's identity before its first record
            _write_run_files(run, ckpt.fingerprint)
        self.writer = metrics_lib.MetricWriter(run.workdir, enabled=run.is_chief,
                                               records=self.records)
        n = schedule.dataset_size
        self.eval_every = int(round(config.eval_every_epochs * n))
        self.ckpt_every = int(round(config.checkpoint_every_epochs * n))
        self.next_eval = _next_multiple(position, self.eval_every)
        self.next_ckpt = _next_multiple(position, self.ckpt_every) if self.ckpt_every else None
        self.counter = parallel.CompileCounter()
        self.steps: dict[tuple[int, int], object] = {}
        self.eval_step = parallel.make_eval_step(run.model, run.mesh, run.has_batch_stats)
        self.progress = metrics_lib.Progress(schedule.total_examples, n, enabled=run.is_chief)
        self.progress.decodes = workers.uses_workers(run.dataset.train)
        self.in_flight: collections.deque = collections.deque()
        self.faults = preemption.FaultInjection()
        self.t_start = self.t_window = time.perf_counter()
        self.input_wait = metrics_lib.InputWait()
        self.t_ckpt, self.compile_seconds = time.time(), 0.0
        self.profile = profiling.StageTrace(config, run.workdir, enabled=run.is_chief)

    @property
    def compiles(self) -> int:
        return self.compiles_before + self.counter.count

    @property
    def compiles_cached(self) -> int:
        return self.cached_before + self.counter.cached

    @property
    def at_end(self) -> bool:
        return self.position >= self.run.schedule.total_examples

    def step_for(self, plan: StagePlan, state, batch):
        """The compiled step of ``plan`` (one compile per batch size), the state placed for it."""
        key = (plan.batch_size, plan.accumulation_steps)
        if key in self.steps:  # compiled ahead, or by an earlier stage
            return self.steps[key], self.steps[key].place(state)
        t0 = time.perf_counter()
        with self.counter:
            self.steps[key], state = compile_step(self.run, plan, state, batch)
        self.compile_seconds += time.perf_counter() - t0
        return self.steps[key], state

    def after_step(self, plan: StagePlan, step_metrics) -> None:
        start, self.position = self.position, self.position + plan.batch_size
        self.updates += 1
        self.steps_taken += 1
        self.window.pending.append((plan.batch_size, step_metrics))
        self.in_flight.append(step_metrics)
        if len(self.in_flight) > MAX_STEPS_IN_FLIGHT:
            self.in_flight.popleft().block_until_ready()
        self.faults.after_step(start, self.position)

    def flush(self) -> float | None:
        """Fetch the pending step metrics; a NaN/inf loss in any of them stops the run here."""
        loss = self.window.flush(parallel.unpack_metrics)
        if self.window.nonfinite is not None:
            raise TrainingDiverged(divergence_message(
                self.run.schedule, self.window.nonfinite, self.updates, self.position,
                self.ckpt.directory))
        return loss

    def maybe_log(self, plan: StagePlan) -> None:
        if (self.updates % self.run.config.log_every_steps == 0
                or self.position >= self.next_eval or self.at_end):
            loss = self.flush()
            self.progress.update(self.position, stage=plan.index,
                                 num_stages=len(self.run.plans), batch_size=plan.batch_size,
                                 updates=self.updates, total_updates=self.run.schedule.total_updates,
                                 loss=loss, input_wait=self.input_wait.fraction("log"),
                                 noise_scale_measured=self.noise.noise_scale if self.noise else None)
            self.input_wait.mark("log")

    def maybe_record(self, plan: StagePlan, state) -> None:
        """At each evaluation point: one record with the window's means and the eval split's."""
        if not (self.position >= self.next_eval or self.at_end):
            return
        self.flush()
        _check_clock(state, self.position)
        seconds = time.perf_counter() - self.t_window - self.compile_seconds
        record = metrics_lib.train_record(
            plan, self.window, self.position, self.updates, self.compiles, seconds,
            dataset_size=self.run.schedule.dataset_size, devices=self.run.mesh.size,
            noise_model=self.run.schedule.noise_model)
        record.update(gns.record_fields(self.noise, self.window.raw_means,
                                        gns.measured_gradient(self.run.config)))
        record["input_wait_fraction"] = self.input_wait.fraction("record", self.compile_seconds)
        record.update(processes=jax.process_count(), per_device_batch=plan.per_device_batch,
                      compiles_cached=self.compiles_cached)
        if cap.enabled(self.run.config):
            record.update(cap.record_fields(self.cap_decisions, self.cap_reads))
        record.update(evaluate(self.run.dataset.eval, state, self.eval_step, self.run.mesh,
                               self.run.config.eval_batch_size, self.run.config.seed))
        record["wall_time"] = self.wall_before + time.perf_counter() - self.t_start
        self.records.append(record)
        self.writer.write(record)
        self.progress.evaluation(record, len(self.run.plans))
        self.window.restore((0, 0.0, 0.0))
        self.next_eval = _next_multiple(self.position, self.eval_every)
        self.t_window, self.compile_seconds = time.perf_counter(), 0.0
        self.input_wait.mark("record")

    def maybe_checkpoint(self, plan: StagePlan, state) -> None:
        """At the end, at a stage boundary, and on the epoch or minute cadence."""
        minutes = self.run.config.checkpoint_every_minutes
        due = (self.next_ckpt is not None and self.position >= self.next_ckpt) or (
            minutes > 0 and time.time() - self.t_ckpt >= 60 * minutes)
        if self.at_end or self.position >= plan.end_example or due:
            self.save(state, wait=self.at_end)
            self.t_ckpt = time.time()
            if self.next_ckpt is not None:
                self.next_ckpt = _next_multiple(self.position, self.ckpt_every)

    def save(self, state, wait: bool = False) -> None:
        """Flush, check the state is finite (never checkpoint a diverged run), save at the clock."""
        self.flush()
        if not _all_finite(state.params):
            raise TrainingDiverged(
                f"parameters became NaN/inf by update {self.updates} (epoch "
                f"{self.position / self.run.schedule.dataset_size:.3f}); not checkpointing. The "
                "last good checkpoint is kept.")
        _check_clock(state, self.position)
        meta = {"window": self.window.state, "compiles": self.compiles,
                "compiles_cached": self.compiles_cached,
                "wall_time": self.wall_before + time.perf_counter() - self.t_start,
                # the slice it was trained on: a resume on another checks its ghost batches
                "devices": self.run.mesh.size, "processes": jax.process_count(),
                "ghost_sizes": slices.ghost_sizes(self.run.plans,
                                                  self.run.config.ghost_batch_size)}
        if self.noise is not None:
            meta["noise_averages"] = self.noise.state
        if cap.enabled(self.run.config):  # replayed by a resume, never recomputed
            meta["cap_decisions"] = list(self.cap_decisions)
            meta["cap_reads"] = list(self.cap_reads)
        self.ckpt.save(state, self.position, meta, wait=wait)

    def close(self) -> None:
        self.profile.stop()  # a trace still open when the run stops (preempted, diverged)
        self.progress.done()
        self.writer.close()


def divergence_message(schedule: Schedule, bad: metrics_lib.NonFinite, updates: int,
                       position: int, directory: str) -> str:
    """Where the loss first became non-finite: that update, its stage, B and epoch (the
    window is fetched at log steps, ``updates`` and ``position`` are the fetch's)."""
    update = updates - bad.steps_back + 1
    start = position - bad.examples_back  # examples seen before that update
    stage = schedule.stage_index_at(min(start, schedule.total_examples - 1))
    return (f"training loss became {bad.loss} at update {update:,} (stage {stage}, "
            f"B={schedule.stages[stage].batch_size:,}, examples_seen={start:,}, epoch "
            f"{start / schedule.dataset_size:.3f}), the first non-finite one; lower the "
            "learning rate or check the data. Checkpoints written before this point are kept "
            f"in {directory}.")


def _next_multiple(position: int, every: int) -> int:
    return (position // every + 1) * every


def _check_clock(state, position: int) -> None:
    clock = optim.clock(state.opt_state)
    if clock != position:
        raise RuntimeError(f"the optimizer's clock reads {clock:,} examples but the loop "
                           f"dispatched {position:,}: the run would log and save wrong positions.")


def _all_finite(tree) -> bool:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return bool(jax.device_get(jnp.all(jnp.stack(leaves)))) if leaves else True


def _write_run_files(run: Run, fingerprint: dict) -> None:
    """fingerprint.json, config.json and schedule.json: what this run is, next to what it
    measured (each written whole, never through a link: ``run_files``)."""
    run_files.workdir_path(run.workdir).mkdir(parents=True, exist_ok=True)
    identity.write(run.workdir, fingerprint)
    run_files.write_text(run_files.path(run.workdir, run_files.CONFIG),
                         run.config.to_json(indent=2))
    schedule = to_dict(run.schedule, run.mesh.size, run.config.max_device_batch,
                       tuple(run.config.slices))
    run_files.write_text(run_files.path(run.workdir, run_files.SCHEDULE),
                         json.dumps(schedule, indent=2))
