"""What the loop counts: its clock, the cadence of evaluations and checkpoints, its timers,
and the checks each record and checkpoint makes (the clock agrees, the state is finite,
the first non-finite update named)."""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from noise_scale import metrics as metrics_lib
from noise_scale import optim
from noise_scale.schedule import Schedule


@dataclasses.dataclass
class Clock:
    """Examples seen as the loop dispatched them (checked against the state's own clock
    at every record and checkpoint: reading the device clock each step would stall the
    pipeline), the updates they make, and the steps this launch took (what the
    processes agree a stop by)."""

    examples_seen: int
    updates: int
    steps_taken: int = 0

    def advance(self, batch_size: int) -> None:
        self.examples_seen += batch_size
        self.updates += 1
        self.steps_taken += 1


@dataclasses.dataclass
class Cadence:
    """When to evaluate and checkpoint next, in examples seen (and minutes of wall time)."""

    eval_every: int
    ckpt_every: int  # 0: on the minute cadence, stage boundaries and the end only
    next_eval: int
    next_ckpt: int | None
    minutes: float
    last_ckpt: float  # time.time() of the last checkpoint

    @classmethod
    def at(cls, config, examples_seen: int) -> Cadence:
        n = config.dataset_size
        eval_every = int(round(config.eval_every_epochs * n))
        ckpt_every = int(round(config.checkpoint_every_epochs * n))
        return cls(eval_every, ckpt_every, next_multiple(examples_seen, eval_every),
                   next_multiple(examples_seen, ckpt_every) if ckpt_every else None,
                   config.checkpoint_every_minutes, time.time())

    def checkpoint_due(self, examples_seen: int) -> bool:
        return (self.next_ckpt is not None and examples_seen >= self.next_ckpt) or (
            self.minutes > 0 and time.time() - self.last_ckpt >= 60 * self.minutes)

    def checkpointed(self, examples_seen: int) -> None:
        self.last_ckpt = time.time()
        if self.next_ckpt is not None:
            self.next_ckpt = next_multiple(examples_seen, self.ckpt_every)


@dataclasses.dataclass
class Timers:
    """Wall time (this launch's and the launches' before it), the record window's start
    and the compile seconds inside it (left out of the window's rates), input waits."""

    wall_before: float
    start: float = dataclasses.field(default_factory=time.perf_counter)
    window: float = dataclasses.field(default_factory=time.perf_counter)
    compile_seconds: float = 0.0
    input_wait: metrics_lib.InputWait = dataclasses.field(default_factory=metrics_lib.InputWait)

    @property
    def wall_time(self) -> float:
        return self.wall_before + time.perf_counter() - self.start

    def new_window(self) -> None:
        self.window, self.compile_seconds = time.perf_counter(), 0.0


def divergence_message(schedule: Schedule, bad: metrics_lib.NonFinite, updates: int,
                       examples_seen: int, directory: str) -> str:
    """Where the loss first became non-finite: that update, its stage, B and epoch (the
    window is fetched at log steps, ``updates`` and ``examples_seen`` are the fetch's)."""
    update = updates - bad.steps_back + 1
    start = examples_seen - bad.examples_back  # examples seen before that update
    stage = schedule.stage_index_at(min(start, schedule.total_examples - 1))
    return (f"training loss became {bad.loss} at update {update:,} (stage {stage}, "
            f"B={schedule.stages[stage].batch_size:,}, examples_seen={start:,}, epoch "
            f"{start / schedule.dataset_size:.3f}), the first non-finite one; lower the "
            "learning rate or check the data. Checkpoints written before this point are kept "
            f"in {directory}.")


def next_multiple(examples_seen: int, every: int) -> int:
    return (examples_seen // every + 1) * every


def check_clock(state, examples_seen: int) -> None:
    clock = optim.clock(state.opt_state)
    if clock != examples_seen:
        raise RuntimeError(f"the optimizer's clock reads {clock:,} examples but the loop "
                           f"dispatched {examples_seen:,}: the run would log and save wrong "
                           "positions.")


def all_finite(tree) -> bool:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return bool(jax.device_get(jnp.all(jnp.stack(leaves)))) if leaves else True
