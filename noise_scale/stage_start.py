"""What happens at the start of a stage: its programs compiled, the measured cap's decision,
a pause on purpose, and the batch stream cut at the plan's sizes.

Split from ``train`` (the loop), which calls these between stages: each either leaves
the run as planned or changes it in one stated way (the cap decides, and the loop
installs the plan a held boundary makes; ``stop_at_stage`` checkpoints and stops).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from noise_scale import cap, gns, parallel, precompile, slices
from noise_scale.errors import Paused
from noise_scale.models.layers import update_weight
from noise_scale.schedule import StagePlan

if TYPE_CHECKING:
    from noise_scale.train import Loop, Run


def compile_step(run: Run, plan: StagePlan, state, batch):
    """(``parallel.StageStep``, state): ``plan``'s programs compiled ahead of time
    (``lower().compile()``), and the state placed for them.

    Lowered for the shapes and shardings of the stage's first batch. A compiled step
    rejects arguments placed differently, so the state goes onto its shardings first
    (a no-op unless it was restored elsewhere).
    """
    step = parallel.compile_stage_step(
        run.model, run.tx, run.mesh, state, batch, batch_size=plan.batch_size,
        accumulation_steps=plan.accumulation_steps,
        label_smoothing=run.config.label_smoothing, has_batch_stats=run.has_batch_stats,
        measure=gns.measure_for(run.config, plan, run.mesh.size),
        batch_stats_weight=batch_stats_weight(run.config, plan.batch_size))
    return step, step.place(state)


def batch_stats_weight(config, batch_size: int) -> float:
    """The batch-norm update's scale at ``batch_size`` (decay per example; ``layers``)."""
    return update_weight(batch_size,
                         config.batch_norm_batch_size or config.schedule.batch_size)


def stream(run: Run, position: int):
    """The sampler's batches from ``position``, prefetched and sharded onto the mesh."""
    return run.sampler.iterate(
        position, prefetch=run.config.prefetch,
        transform=lambda hb: (hb, parallel.shard_batch(hb.data, run.mesh)))


def maybe_decide(loop: Loop, plan: StagePlan) -> cap.Decision | None:
    """At the start of a stage, with a measured cap (``cap``): does B grow? The decision
    is noted in ``loop.cap_decisions``; a held one carries the new plan, which the loop
    installs (``train.install``). None where nothing is decided here."""
    run = loop.run
    if (not cap.enabled(run.config) or plan.index == 0 or loop.position != plan.start_example
            or len(loop.cap_decisions) >= plan.index):
        return None
    loop.flush()  # every step so far into the averages the cap reads
    d = cap.decide(run.config, loop.cap_decisions, loop.noise, plan.index)
    loop.cap_decisions.append(d is None or d.grow)
    loop.cap_reads.append(None if d is None else d.read())
    if d is not None:
        logging.warning("stage %d: B=%d %s (measured noise scale %.1f, its 95%% lower bound "
                        "%.1f; cap %g x %.1f = %.1f)", plan.index, d.batch_size,
                        "grows" if d.grow else "held: ε takes the step", d.measured, d.lower,
                        run.config.schedule.noise_cap, d.lower, d.cap)
    return d


def compile_ahead(loop: Loop, state) -> None:
    """Where device memory is known: every remaining stage compiled and checked now
    (``precompile``); the loop then reuses those steps. Else stages compile as they start."""
    run = loop.run
    limit = precompile.memory_limit(run.config, run.mesh.devices.flat[0])
    if limit is None:
        return
    t0 = time.perf_counter()
    with loop.counter:
        run.plans, steps = precompile.precompile(
            run, run.plans, loop.position,
            lambda plan, batch: compile_step(run, plan, state, batch)[0], limit)
    loop.steps.update(steps)
    loop.compile_seconds += time.perf_counter() - t0


def maybe_pause(loop: Loop, plan: StagePlan, state) -> None:
    """At the start of stage ``config.stop_at_stage``: checkpoint and stop on purpose."""
    k = loop.run.config.stop_at_stage  # 0: never (a run starts at stage 0 anyway)
    if not k or plan.index != k or loop.position != plan.start_example:
        return
    loop.save(state, wait=True)
    raise Paused(slices.pause_message(loop.run.config, plan, loop.run.mesh.size,
                                      loop.ckpt.directory, again=loop.steps_taken == 0),
                 loop.position, plan.index)
