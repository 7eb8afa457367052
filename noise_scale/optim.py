"""Optimizers whose learning rate and momentum follow the schedule, clocked by examples seen.

The optimizer state carries ``examples_seen``; each update reads ε and m off the
schedule at that position (warm-up included) and then advances it by the step's
batch size. Step counts never enter: when B grows by k, one update covers k
times more of the epoch, and a warm-up or decay defined in epochs stays put.

ε and m are traced values inside the compiled step (set through
``optax.inject_hyperparams``), so moving them never recompiles; only the batch
size, a shape, is static. The stage table they are read from (each stage's end, ε
and m) is part of the optimizer state too, not a constant of the compiled program:
the measured cap (``schedule.rules.capped_schedule``) changes the remaining stages
on the host at a boundary (``with_schedule``), and the step keeps its compilation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from noise_scale import adaptive
from noise_scale.default_config import (
    MAX_EXAMPLES,  # examples_seen is int32 on the device
    OPTIMIZERS,  # noqa: F401 - the names, in one place
)
from noise_scale.errors import ConfigError
from noise_scale.schedule import hyperparams_at


class StageTable(NamedTuple):
    """Each stage's end (in examples), ε and m: the schedule as the compiled step reads it."""

    ends: jax.Array  # int32[stages]
    learning_rates: jax.Array  # float32[stages]
    momenta: jax.Array  # float32[stages]


class ScheduledState(NamedTuple):
    examples_seen: jax.Array  # int32 scalar: THE clock of a run (see ``clock``)
    inner: optax.OptState  # an inject_hyperparams state; hyperparams hold the ε and m in use
    table: StageTable  # the stages in force (replaced on the host by ``with_schedule``)


def stage_table(schedule) -> StageTable:
    """``schedule``'s stage table as host arrays (int32 ends: the clock's range is checked)."""
    assert schedule.end_example <= MAX_EXAMPLES, "a Schedule refuses a run past the clock"
    return StageTable(np.array(schedule.stage_end_examples(), np.int32),
                      np.array([s.learning_rate for s in schedule.stages], np.float32),
                      np.array([s.momentum for s in schedule.stages], np.float32))


def schedule_hyperparams(schedule):
    """A jittable ``(examples_seen, table) -> (ε, m)`` equal to ``schedule.learning_rate_at``
    / ``momentum_at`` (``table``: a ``StageTable``, by default ``schedule``'s own).

    ``hyperparams_at`` on traced values: the host's rule, composed once. What stays
    static is what a decision of the measured cap never changes: the stage count, the
    dataset size, the warm-up and the learning-rate shape.
    """
    own = stage_table(schedule)

    def hyper(examples_seen, table=None):
        table = [jnp.asarray(a) for a in (own if table is None else table)]
        return hyperparams_at(examples_seen, table, schedule, xp=jnp)

    return hyper


def decay_mask(params):
    """L2 weight decay on weights only: kernels (ndim > 1), not batch-norm scales or biases."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def l2_coefficient(config) -> float:
    """λ of the L2 term the optimizer adds to the gradient (coupled decay: SGD, momentum,
    Nesterov, Adam; on ``decay_mask``'s leaves), so that the step follows the objective
    data loss + λ/2·|w|². 0 for AdamW, whose decoupled decay is no term of the gradient."""
    return 0.0 if config.optimizer == "adamw" else float(config.weight_decay)


def _inner_factory(config):
    name, wd = config.optimizer, config.weight_decay

    def with_decay(opt):
        return optax.chain(optax.add_decayed_weights(wd, decay_mask), opt) if wd else opt

    if name == "sgd":
        return lambda learning_rate, momentum: with_decay(optax.sgd(learning_rate))
    if name in ("momentum", "nesterov"):
        return lambda learning_rate, momentum: with_decay(
            optax.sgd(learning_rate, momentum=momentum, nesterov=name == "nesterov")
        )
    # Adam and AdamW: the schedule's m drives b1; b2, eps and (adamw) λ are the values at
    # the step's batch size (``adaptive.per_batch``, bound per compiled step).
    if name == "adam":  # coupled L2, as the paper's Adam (weight_decay here is config's)
        return lambda learning_rate, momentum, b2, eps, weight_decay: with_decay(
            optax.adam(learning_rate, b1=momentum, b2=b2, eps=eps))
    if name == "adamw":  # decoupled decay, on kernels only (decay_mask)
        return lambda learning_rate, momentum, b2, eps, weight_decay: optax.adamw(
            learning_rate, b1=momentum, b2=b2, eps=eps, weight_decay=weight_decay,
            mask=decay_mask)
    raise ConfigError(f"config.optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}.")


def _inner_for_batch(config, factory):
    """B -> the inject_hyperparams optimizer for steps of B examples.

    ε and m are injected (traced, read off the schedule); Adam's b2, eps and λ at B
    (``adaptive.per_batch``) are Python floats bound per batch size, exactly as a plain
    ``optax.adam(b2=...)`` takes them (a float32 b2 would move Adam's bias correction
    1 − b2^t by ~1e-5). The state holds only ε and m either way, so every batch size
    reads and writes the same state.
    """
    adaptive_run = adaptive.is_adaptive(config)

    def inner(batch_size, learning_rate=0.0, momentum=0.0):
        static = adaptive.per_batch(config, batch_size) if adaptive_run else {}
        return optax.inject_hyperparams(
            lambda learning_rate, momentum: factory(learning_rate, momentum, **static))(
                learning_rate=jnp.float32(learning_rate), momentum=jnp.float32(momentum))

    return inner


def create_optimizer(config, schedule) -> optax.GradientTransformationExtraArgs:
    """The schedule-driven optimizer; ``update(..., batch_size=B)`` advances the clock by B."""
    hyper = schedule_hyperparams(schedule)
    first = schedule.stages[0]
    inner_for = _inner_for_batch(config, _inner_factory(config))
    inner = inner_for(first.batch_size, first.learning_rate, first.momentum)

    def init(params):
        table = StageTable(*(jnp.asarray(a) for a in stage_table(schedule)))
        return ScheduledState(jnp.zeros([], jnp.int32), inner.init(params), table)

    def update(updates, state, params=None, *, batch_size, **_):
        lr, m = hyper(state.examples_seen, state.table)
        hp = dict(state.inner.hyperparams, learning_rate=lr, momentum=m)
        inner_state = state.inner._replace(hyperparams=hp)
        updates, inner_state = inner_for(batch_size).update(updates, inner_state, params)
        return updates, ScheduledState(state.examples_seen + batch_size, inner_state, state.table)

    return optax.GradientTransformationExtraArgs(init, update)


def with_schedule(opt_state, schedule) -> ScheduledState:
    """``opt_state`` reading its ε and m from ``schedule`` from now on (same stage count):
    set on the host, placed as the old table is, so the compiled step is reused."""
    new = stage_table(schedule)
    if new.ends.shape != opt_state.table.ends.shape:
        raise ValueError(f"the new schedule has {len(new.ends)} stages, the compiled step's "
                         f"table {opt_state.table.ends.shape[0]}.")
    put = lambda old, a: jax.make_array_from_callback(  # noqa: E731 - every process alike
        a.shape, old.sharding, lambda index: a[index])
    return opt_state._replace(table=StageTable(*map(put, opt_state.table, new)))


def clock(opt_state) -> int:
    """Examples seen: the one clock of a run. The loop, the checkpoint and a resume read it here."""
    return int(jax.device_get(opt_state.examples_seen))


def current_hyperparams(opt_state) -> tuple[jax.Array, jax.Array]:
    """The (ε, m) the last update used."""
    hp = opt_state.inner.hyperparams
    return hp["learning_rate"], hp["momentum"]
