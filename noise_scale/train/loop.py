"""The loop: for each remaining stage, compile its step, then step through its batches.

    for plan in loop.stages():                    # the schedule's walk; the cap and the
        step = compile ahead of time              #   probe re-plan here, in one place
               (one per batch size; a stage that only changes ε or m reuses it)
        for each batch of the stage:              # cut by the sampler at the plan's B
            state = step(state, batch)            # the clock advances by B
            log / evaluate / checkpoint when due

``Loop`` owns what changes while the run goes (the train state, the plan in force, which
the cap may hold and the probe grow: ``replan``; the clock, cadences, timers, records),
from the frozen ``Run``. With the device memory known, every remaining stage compiles at
start-up, checked against it (``precompile``); a run may stop at a stage boundary
(``config.stop_at_stage``) to move slice (``slices``); ``profiling`` traces its first steps.

The clock is examples seen, held once: the optimizer state's counter (``optim.clock``).
A run starts from it (0, or the restored checkpoint's), the checkpoint is numbered by it,
and every record and checkpoint asserts that the examples the loop dispatched equal it.
Updates, epochs, the stage and when to evaluate all follow from it.
"""

from __future__ import annotations

import collections
import copy
import logging
import time

import jax

from noise_scale import cap, gns, optim, parallel
from noise_scale import metrics as metrics_lib
from noise_scale import records as records_lib
from noise_scale.cluster import preemption, slices, workdir_lock
from noise_scale.config import validation
from noise_scale.data import Dataset, workers
from noise_scale.errors import Paused, Preempted, SetupError, TrainingDiverged
from noise_scale.schedule import Schedule, StagePlan
from noise_scale.schedule.rules import capped_schedule, schedule_from_config
from noise_scale.train import branching, compile_cache, identity, profiling
from noise_scale.train import checkpoint as checkpoint_lib
from noise_scale.train.counters import (
    Cadence,
    Clock,
    Timers,
    all_finite,
    check_clock,
    divergence_message,
    next_multiple,
)
from noise_scale.train.evaluation import evaluate
from noise_scale.train.run import Run, build, restore_or_init, write_run_files
from noise_scale.train.stage import compile_ahead, compile_step, stream

# Steps dispatched ahead of the host. Two keep a device busy while the host prepares the
# next batch; an unbounded queue of collective programs can deadlock XLA:CPU's all-reduce
# rendezvous when many virtual devices share few cores (seen with 8 devices on 2 cores).
MAX_STEPS_IN_FLIGHT = 2


def train_and_evaluate(config, workdir: str, dataset: Dataset | None = None) -> list[dict]:
    """Run the schedule to the end, resuming from the workdir's newest intact checkpoint.

    Returns every metric record of the run (also in metrics.jsonl). ``dataset``: data of
    your own (``train.setup``). The workdir is locked for the run (``workdir_lock``): a
    second run on it is refused.
    """
    validation.validate_config(config)  # bad input fails before the lock creates the workdir
    validation.validate_paths(config, workdir)
    with workdir_lock.hold(workdir):  # before the data: a busy workdir is refused in seconds
        return train(build(config, workdir, dataset))


def train(run: Run) -> list[dict]:
    """Walk the plan from the clock's position to the end: the loop in the module docstring."""
    fingerprint = checkpoint_lib.experiment_fingerprint(run.config, run.schedule)
    identity.check(run.workdir, fingerprint)  # another run's workdir: refused, nothing written
    compile_cache.enable(run.config, run.workdir, checkpoint_lib.fingerprint_digest(fingerprint))
    preemption.check_start_up()  # a signal while the data was built: stop before compiles
    try:
        ckpt = checkpoint_lib.Checkpointer(run.workdir, fingerprint, run.config.keep_checkpoints)
    except ValueError as e:
        raise SetupError(str(e)) from None
    loop = None
    try:
        loop = Loop(run, ckpt, *restore_or_init(run, ckpt))
        preemption.check_start_up()
        loop.start()
        preemption.check_start_up()
        with preemption.Signals(agreed=preemption.agreement_available()) as signals:
            for plan in loop.stages():
                loop.pause_if_asked(plan)
                loop.train_stage(plan, signals)
        loop.finish()
    finally:
        if loop is not None:
            loop.close()
        ckpt.close()
    return loop.records


class Loop:
    """The run in motion: ``Run`` plus the state, the plan in force and what is counted.

    Parts: ``clock``, ``cadence``, ``timers``; the compiled steps and their counter; the
    measured noise scale's averages and window; the cap's decisions; the records and
    their writers. Only the loop's own methods change them.
    """

    def __init__(self, run: Run, ckpt, state, meta: dict):
        config = run.config
        self.run, self.ckpt, self.state = run, ckpt, state
        self.schedule, self.plans, self.sampler = run.schedule, list(run.plans), run.sampler
        # the measured cap's decisions so far, replayed: the plan the run stopped with
        self.cap_decisions: list[bool] = list(meta.get("cap_decisions", []))
        self.cap_reads: list[dict | None] = list(
            meta.get("cap_reads", [None] * len(self.cap_decisions)))
        if self.cap_decisions:
            self.install(capped_schedule(config, self.cap_decisions))
        self.prober = branching.Prober(run, meta) if branching.enabled(config) else None
        if self.prober and branching.measured(config) and self.prober.reads:  # replayed
            self.install(schedule_from_config(config, measured=self.prober.decided))
        examples_seen = optim.clock(state.opt_state)
        slices.check_resume_ghost(meta, self.plans, config.ghost_batch_size, examples_seen,
                                  run.mesh.size, config.allow_ghost_change)
        self.clock = Clock(examples_seen, self.schedule.updates_at(examples_seen))
        self.cadence = Cadence.at(config, examples_seen)
        self.timers = Timers(meta.get("wall_time", 0.0))
        # the measured noise scale's averages, fed by every fetched step (checkpointed)
        self.noise = gns.averages_for(config, meta.get("noise_averages"))
        self.window = metrics_lib.Window(meta.get("window", (0, 0.0, 0.0)), self.noise)
        self.compiles_before = meta.get("compiles", 0)
        self.cached_before = meta.get("compiles_cached", 0)
        self.counter = parallel.CompileCounter()
        self.steps: dict[tuple[int, int], object] = {}
        self.eval_step = parallel.make_eval_step(run.model, run.mesh, run.has_batch_stats)
        # Records past the resume point will be written again, identically; the file is cut
        # back to the checkpoint here (through a temporary file, so a crash loses nothing).
        on_disk = records_lib.read_metrics(run.workdir)
        self.records = [r for r in on_disk if r["examples_seen"] <= examples_seen]
        if run.is_chief and (note := records_lib.recomputed_note(on_disk, examples_seen)):
            logging.warning(note)  # records a kill lost before its next checkpoint
        if run.is_chief:  # the run's identity before its first record
            write_run_files(run, self.schedule, ckpt.fingerprint)
        self.writer = metrics_lib.MetricWriter(run.workdir, enabled=run.is_chief,
                                               records=self.records)
        self.progress = metrics_lib.Progress(self.schedule.total_examples,
                                             self.schedule.dataset_size, enabled=run.is_chief)
        self.progress.decodes = workers.uses_workers(run.dataset.train)
        self.in_flight: collections.deque = collections.deque()
        self.faults = preemption.FaultInjection()
        self.profile = profiling.StageTrace(config, run.workdir, enabled=run.is_chief)
        self.batches = None

    # -- the plan in force --------------------------------------------------------------

    def start(self) -> None:
        """Compile ahead where the memory is known, and open the batch stream."""
        self.plans, steps, seconds = compile_ahead(self.run, self.plans, self.clock.examples_seen,
                                                   self.state, self.counter)
        self.steps.update(steps)
        self.timers.compile_seconds += seconds
        self.batches = stream(self.run, self.sampler, self.clock.examples_seen)

    def stages(self):
        """The plans still to run, in order; a measured cap decides (and may re-plan) at
        each one's start, before it is handed out."""
        for k in range(len(self.plans)):  # a fixed count: a decision re-plans from k on
            if self.plans[k].end_example <= self.clock.examples_seen:
                continue
            self.decide_cap(self.plans[k])
            self.maybe_probe(self.plans[k])
            yield self.plans[k]

    def install(self, schedule: Schedule) -> None:
        """The one place the plan changes (a measured cap's held boundary, or a resume
        replaying the decisions): the schedule, its stage plans, the sampler's cut and the
        optimizer's stage table together. The stage count and every batch size stay those
        validated before training (``cap``), so no compiled step is invalidated."""
        self.schedule = schedule
        self.plans = cap.plans(schedule, self.plans, self.run.mesh.size,
                               self.run.config.max_device_batch)
        self.sampler = copy.copy(self.sampler)  # the same data and order, cut by the new plan
        self.sampler.schedule = schedule
        self.state = self.state.replace(
            opt_state=optim.with_schedule(self.state.opt_state, schedule))

    def decide_cap(self, plan: StagePlan) -> None:
        """At the start of a stage, with a measured cap (``cap``): does B grow? Noted in
        ``cap_decisions``; a held boundary re-plans (``replan``)."""
        config = self.run.config
        if (not cap.enabled(config) or plan.index == 0
                or self.clock.examples_seen != plan.start_example
                or len(self.cap_decisions) >= plan.index):
            return
        self.flush()  # every step so far into the averages the cap reads
        d = cap.decide(config, self.cap_decisions, self.noise, plan.index)
        self.cap_decisions.append(d is None or d.grow)
        self.cap_reads.append(None if d is None else d.read())
        if d is None:
            return
        logging.warning("stage %d: B=%d %s (measured noise scale %.1f, its 95%% lower bound "
                        "%.1f; cap %g x %.1f = %.1f)", plan.index, d.batch_size,
                        "grows" if d.grow else "held: ε takes the step", d.measured, d.lower,
                        config.schedule.noise_cap, d.lower, d.cap)
        if not d.grow:  # held: B stays, ε steps
            self.replan(d.schedule)

    def maybe_probe(self, plan: StagePlan) -> None:
        """A due probe (``branching``) reads the state; with rule 'measured' a larger B
        re-plans (its points are the stages' starts)."""
        if self.prober is None or not self.prober.due(self.clock.examples_seen):
            return
        reading, seconds = branching.timed(lambda: self.prober.probe(
            self.state, plan, self.schedule, self.sampler, self.eval_step,
            self.clock.examples_seen))
        self.timers.compile_seconds += seconds  # left out of the window's rates, as compiles
        self.progress.skip(seconds)
        if reading.chosen is not None and reading.chosen != plan.batch_size:
            self.replan(schedule_from_config(self.run.config, measured=self.prober.decided))

    def replan(self, schedule: Schedule) -> None:
        """``install`` mid-run: the stream is re-cut at the new plan (batches prefetched at
        the old size are dropped)."""
        self.install(schedule)
        self.batches.close()
        self.batches = stream(self.run, self.sampler, self.clock.examples_seen)

    def pause_if_asked(self, plan: StagePlan) -> None:
        """At the start of stage ``config.stop_at_stage``: checkpoint and stop on purpose."""
        k = self.run.config.stop_at_stage  # 0: never (a run starts at stage 0 anyway)
        if not k or plan.index != k or self.clock.examples_seen != plan.start_example:
            return
        self.save(wait=True)
        raise Paused(slices.pause_message(self.run.config, plan, self.run.mesh.size,
                                          self.ckpt.directory, again=self.clock.steps_taken == 0),
                     self.clock.examples_seen, plan.index)

    # -- one stage ----------------------------------------------------------------------

    def train_stage(self, plan: StagePlan, signals) -> None:
        """One stage: compile (or reuse) its step, then every step of it from the clock on."""
        compiled = None
        dense_from = cap.dense_from(self.run.config, self.plans, plan)
        for examples_seen in plan.positions(self.clock.examples_seen):
            self.maybe_probe(plan)  # due mid-stage only where B does not follow it
            hb, batch = self.timers.input_wait.take(self.batches)
            if hb.position != examples_seen or hb.batch_size != plan.batch_size:
                raise RuntimeError(
                    f"the sampler cut a batch at {hb.position} (B={hb.batch_size}) where the "
                    f"plan steps at {examples_seen} (B={plan.batch_size}).")
            if compiled is None:
                compiled = self.step_for(plan, batch)
                self.profile.start(plan.index, self.state)  # compiled: the trace holds steps
            with self.counter:
                self.state, step_metrics = compiled(self.state, batch, self.clock.updates,
                                                    dense=examples_seen >= dense_from)
            self.after_step(plan, step_metrics)
            self.profile.after_step(self.state)
            self.maybe_log(plan)
            self.maybe_record(plan)
            stop = signals.stop_after(self.clock.steps_taken)  # the same step on every process
            if stop is not None:
                self.save(wait=True)
                raise Preempted(stop, self.clock.examples_seen, self.ckpt.directory,
                                elsewhere=signals.received is None)
            self.maybe_checkpoint(plan)
        self.profile.stop(self.state)  # a stage shorter than config.profile_steps

    @property
    def compiles(self) -> int:
        return self.compiles_before + self.counter.count

    @property
    def compiles_cached(self) -> int:
        return self.cached_before + self.counter.cached

    @property
    def at_end(self) -> bool:
        return self.clock.examples_seen >= self.schedule.total_examples

    def step_for(self, plan: StagePlan, batch):
        """The compiled step of ``plan`` (one compile per batch size), the state placed for it."""
        key = (plan.batch_size, plan.accumulation_steps)
        if key in self.steps:  # compiled ahead, or by an earlier stage
            self.state = self.steps[key].place(self.state)
            return self.steps[key]
        t0 = time.perf_counter()
        with self.counter:
            self.steps[key], self.state = compile_step(self.run, plan, self.state, batch)
        self.timers.compile_seconds += time.perf_counter() - t0
        return self.steps[key]

    def after_step(self, plan: StagePlan, step_metrics) -> None:
        start = self.clock.examples_seen
        self.clock.advance(plan.batch_size)
        self.window.pending.append((plan.batch_size, step_metrics))
        self.in_flight.append(step_metrics)
        if len(self.in_flight) > MAX_STEPS_IN_FLIGHT:
            self.in_flight.popleft().block_until_ready()
        self.faults.after_step(start, self.clock.examples_seen)

    def flush(self) -> float | None:
        """Fetch the pending step metrics; a NaN/inf loss in any of them stops the run here."""
        loss = self.window.flush(parallel.unpack_metrics)
        if self.window.nonfinite is not None:
            raise TrainingDiverged(divergence_message(
                self.schedule, self.window.nonfinite, self.clock.updates,
                self.clock.examples_seen, self.ckpt.directory))
        return loss

    def eval_due(self) -> bool:
        return self.clock.examples_seen >= self.cadence.next_eval or self.at_end

    def maybe_log(self, plan: StagePlan) -> None:
        if self.clock.updates % self.run.config.log_every_steps == 0 or self.eval_due():
            loss = self.flush()
            self.progress.update(
                self.clock.examples_seen, stage=plan.index, num_stages=len(self.plans),
                batch_size=plan.batch_size, updates=self.clock.updates,
                total_updates=self.schedule.total_updates, loss=loss,
                input_wait=self.timers.input_wait.fraction("log"),
                noise_scale_measured=self.noise.noise_scale if self.noise else None)
            self.timers.input_wait.mark("log")

    def maybe_record(self, plan: StagePlan) -> None:
        """At each evaluation point: one record with the window's means and the eval split's."""
        if not self.eval_due():
            return
        self.flush()
        check_clock(self.state, self.clock.examples_seen)
        config, timers = self.run.config, self.timers
        seconds = time.perf_counter() - timers.window - timers.compile_seconds
        record = metrics_lib.train_record(
            plan, self.window, self.clock.examples_seen, self.clock.updates, self.compiles,
            seconds, dataset_size=self.schedule.dataset_size, devices=self.run.mesh.size,
            noise_model=self.schedule.noise_model)
        record.update(gns.record_fields(self.noise, self.window.raw_means,
                                        gns.measured_gradient(config)))
        record["input_wait_fraction"] = timers.input_wait.fraction("record",
                                                                   timers.compile_seconds)
        record.update(processes=jax.process_count(), per_device_batch=plan.per_device_batch,
                      compiles_cached=self.compiles_cached)
        if cap.enabled(config):
            record.update(cap.record_fields(self.cap_decisions, self.cap_reads))
        if self.prober is not None:
            record.update(self.prober.record_fields(self.clock.examples_seen))
        record.update(evaluate(self.run.dataset.eval, self.state, self.eval_step, self.run.mesh,
                               config.eval_batch_size, config.seed))
        record["wall_time"] = timers.wall_time
        self.records.append(record)
        self.writer.write(record)
        self.progress.evaluation(record, len(self.plans))
        self.window.restore((0, 0.0, 0.0))
        self.cadence.next_eval = next_multiple(self.clock.examples_seen, self.cadence.eval_every)
        timers.new_window()
        timers.input_wait.mark("record")

    def maybe_checkpoint(self, plan: StagePlan) -> None:
        """At the end, at a stage boundary, and on the epoch or minute cadence."""
        examples_seen = self.clock.examples_seen
        if self.at_end or examples_seen >= plan.end_example or self.cadence.checkpoint_due(
                examples_seen):
            self.save(wait=self.at_end)
            self.cadence.checkpointed(examples_seen)

    def save(self, wait: bool = False) -> None:
        """Flush, check the state is finite (never checkpoint a diverged run), save at the clock."""
        self.flush()
        if not all_finite(self.state.params):
            raise TrainingDiverged(
                f"parameters became NaN/inf by update {self.clock.updates} (epoch "
                f"{self.clock.examples_seen / self.schedule.dataset_size:.3f}); not "
                "checkpointing. The last good checkpoint is kept.")
        check_clock(self.state, self.clock.examples_seen)
        meta = {"window": self.window.state, "compiles": self.compiles,
                "compiles_cached": self.compiles_cached, "wall_time": self.timers.wall_time,
                # the slice it was trained on: a resume on another checks its ghost batches
                "devices": self.run.mesh.size, "processes": jax.process_count(),
                "ghost_sizes": slices.ghost_sizes(self.plans, self.run.config.ghost_batch_size)}
        if self.noise is not None:
            meta["noise_averages"] = self.noise.state
        if cap.enabled(self.run.config):  # replayed by a resume, never recomputed
            meta["cap_decisions"] = list(self.cap_decisions)
            meta["cap_reads"] = list(self.cap_reads)
        if self.prober is not None:
            meta.update(self.prober.meta())
        self.ckpt.save(self.state, self.clock.examples_seen, meta, wait=wait)

    def finish(self) -> None:
        if self.records:  # the end (a pause or a stop raised before this)
            self.progress.summary(self.records[-1])

    def close(self) -> None:
        """Stop the prefetch thread now (not at interpreter exit), an open trace, the writers."""
        if self.batches is not None:
            self.batches.close()
        self.profile.stop()  # a trace still open when the run stops (preempted, diverged)
        self.progress.done()
        self.writer.close()
