"""Memory before hours: compile every remaining stage's step at start-up and check it fits.

The batch grows ×5–×10 at a boundary, so a stage whose step does not fit in device
memory used to fail hours into a run. When the per-device memory is known (the
device's own report, e.g. ``bytes_limit`` on TPU and GPU, or
``config.device_memory_bytes``), every distinct (B, accumulation) still to run is
lowered and compiled ahead of time for the shapes of its batches and XLA's
``memory_analysis()`` is compared with it: a stage that cannot fit fails before the
first step, naming the stage and the fix. Where ``config.max_device_batch`` is unset
the accumulation is chosen here instead: the fewest micro-batches (still whole ghost
batches) whose step fits. The compiled steps are the ones the loop then runs.

Without a known limit (host CPU devices) nothing is compiled ahead: stages compile
as they start, as before.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from noise_scale import memory, parallel
from noise_scale.cluster import preemption
from noise_scale.errors import SetupError
from noise_scale.schedule import StagePlan


def memory_limit(config, device=None) -> int | None:
    """Bytes one step may use per device: the override as given, else ``memory.HEADROOM`` ×
    the device's memory, else None (unknown: no check)."""
    if config.device_memory_bytes:
        return config.device_memory_bytes
    total = memory.device_memory(device)
    return int(memory.HEADROOM * total) if total else None


def abstract_batch(dataset, mesh, batch_size: int, seed: int) -> dict:
    """The shapes, dtypes and shardings of a global training batch of ``batch_size``.

    One example is read to learn the per-example shapes and dtypes the sampler yields.
    """
    one = dataset.train.get_batch(np.arange(1), np.zeros(1, np.int64), seed)
    sharding = NamedSharding(mesh, P(parallel.AXIS))
    return {k: jax.ShapeDtypeStruct((batch_size, *np.shape(v)[1:]), np.asarray(v).dtype,
                                    sharding=sharding) for k, v in one.items()}


def accumulation_choices(plan: StagePlan, ghost: int) -> list[int]:
    """Accumulation steps to try, fewest first: those splitting the per-device batch into
    equal micro-batches that are still whole ghost batches (so batch norm is unchanged)."""
    per = plan.per_device_batch
    more = [a for a in range(plan.accumulation_steps + 1, per + 1)
            if per % a == 0 and (not ghost or (per // a) % ghost == 0)]
    return [plan.accumulation_steps, *more]


def precompile(run, plans: list[StagePlan], examples_seen: int, compile_fn, limit: int):
    """Compile every stage from ``examples_seen`` on; returns (plans, {(B, accumulation): step}).

    ``compile_fn(plan, abstract_batch)`` compiles a plan's step. A stage that does not fit
    in ``limit`` bytes raises SetupError before any step has run.
    """
    steps, sizes, chosen = {}, {}, []
    auto = not run.config.max_device_batch
    for plan in plans:
        if plan.end_example <= examples_seen:
            chosen.append(plan)
            continue
        tries = accumulation_choices(plan, run.config.ghost_batch_size) if auto else [
            plan.accumulation_steps]
        for accum in tries:
            p = dataclasses.replace(plan, accumulation_steps=accum)
            key = (p.batch_size, accum)
            if key not in steps:
                batch = abstract_batch(run.dataset, run.mesh, p.batch_size, run.config.seed)
                preemption.check_start_up()  # Ctrl-C between two compiles stops here
                steps[key] = compile_fn(p, batch)
                sizes[key] = memory.StepMemory.of(steps[key]).total_bytes
            if sizes[key] <= limit:
                break
        else:
            raise SetupError(too_big(plan, p, sizes[key], limit, run.mesh.size, auto))
        if accum != plan.accumulation_steps:
            logging.warning("stage %d: %d accumulation steps of %d examples per device fit "
                            "in %.3g GiB (%.3g GiB needed)", p.index, accum, p.micro_batch,
                            limit / memory.GiB, sizes[key] / memory.GiB)
        chosen.append(p)
    return chosen, {k: v for k, v in steps.items() if k in {
        (p.batch_size, p.accumulation_steps) for p in chosen}}


def too_big(plan: StagePlan, last: StagePlan, needed: int, limit: int, devices: int,
            auto: bool) -> str:
    tried = (f"even in {last.accumulation_steps} micro-batches of {last.micro_batch}"
             if auto and last.accumulation_steps > 1 else
             f"with {last.accumulation_steps} micro-batch(es) of {last.micro_batch}")
    return (
        f"stage {plan.index} (B={plan.batch_size:,}, from examples_seen="
        f"{plan.start_example:,}) does not fit in device memory on {devices} devices: its "
        f"step needs {needed / memory.GiB:.3g} GiB per device {tried} examples, and "
        f"{limit / memory.GiB:.3g} GiB are available. Found at start-up, before any step. "
        f"Fix: set --config.max_device_batch to a smaller micro-batch (e.g. "
        f"{max(1, last.micro_batch // 2)}; it accumulates gradients), or run this stage on "
        "more devices (stop before it with --config.stop_at_stage and move to a larger "
        "slice).")
