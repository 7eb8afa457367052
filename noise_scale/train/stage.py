"""What a stage needs before its first step: its compiled step and the batch stream.

Pure functions of what ``setup`` built (``Run``) and the plan in force; the loop
(``train.loop``) calls them and keeps what they return. None reads or writes the loop.
"""

from __future__ import annotations

import time

from noise_scale import gns, parallel
from noise_scale.models.layers import update_weight
from noise_scale.schedule import StagePlan
from noise_scale.train import precompile


def compile_step(run, plan: StagePlan, state, batch):
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


def stream(run, sampler, examples_seen: int):
    """``sampler``'s batches from ``examples_seen`` on, prefetched and sharded onto the mesh."""
    return sampler.iterate(
        examples_seen, prefetch=run.config.prefetch,
        transform=lambda hb: (hb, parallel.shard_batch(hb.data, run.mesh)))


def compile_ahead(run, plans, examples_seen: int, state, counter):
    """Where device memory is known: every remaining stage compiled and checked now
    (``precompile``), returning (plans, {(B, accumulation): step}, seconds); the loop
    then reuses those steps. Else (plans, {}, 0.0): stages compile as they start."""
    limit = precompile.memory_limit(run.config, run.mesh.devices.flat[0])
    if limit is None:
        return list(plans), {}, 0.0
    t0 = time.perf_counter()
    with counter:
        plans, steps = precompile.precompile(
            run, list(plans), examples_seen,
            lambda plan, batch: compile_step(run, plan, state, batch)[0], limit)
    return plans, steps, time.perf_counter() - t0
