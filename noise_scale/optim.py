"""Optimizers whose learning rate and momentum follow the schedule, clocked by examples seen.

The optimizer state carries ``examples_seen``; each update reads ε and m off the
schedule at that position (warm-up included) and then advances it by the step's
batch size. Step counts never enter: when B grows by k, one update covers k
times more of the epoch, and a warm-up or decay defined in epochs stays put.

ε and m are traced values inside the compiled step (set through
``optax.inject_hyperparams``), so moving them never recompiles; only the batch
size, a shape, is static.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
MAX_EXAMPLES = 2**31 - 1  # examples_seen is int32 on device (x64 off): ~1,600 ImageNet epochs


class ScheduledState(NamedTuple):
    examples_seen: jax.Array  # int32 scalar: the clock
    inner: optax.OptState  # an inject_hyperparams state; hyperparams hold the ε and m in use


def schedule_hyperparams(schedule):
    """A jittable ``examples_seen -> (ε, m)`` equal to ``schedule.learning_rate_at`` / ``momentum_at``."""
    if schedule.total_examples > MAX_EXAMPLES:
        raise ValueError(
            f"the schedule covers {schedule.total_examples:,} examples, more than the int32 "
            f"clock holds ({MAX_EXAMPLES:,}); shorten schedule.total_epochs."
        )
    ends = jnp.asarray(np.array(schedule.stage_end_examples(), np.int32))
    lrs = jnp.asarray([s.learning_rate for s in schedule.stages], jnp.float32)
    moms = jnp.asarray([s.momentum for s in schedule.stages], jnp.float32)
    n, warm, lr0 = schedule.dataset_size, schedule.warmup_epochs, schedule.warmup_start_lr

    def hyper(examples_seen):
        # The stage is the number of stage ends already passed: one compare and a sum (a
        # searchsorted lowers to a loop, measurably slower on the per-step path).
        i = jnp.minimum(jnp.sum(ends <= examples_seen), len(schedule.stages) - 1)
        lr, m = lrs[i], moms[i]
        if warm > 0:
            epoch = examples_seen.astype(jnp.float32) / n
            lr = jnp.where(epoch < warm, lr0 + (lr - lr0) * epoch / warm, lr)
        return lr, m

    return hyper


def decay_mask(params):
    """L2 weight decay on weights only: kernels (ndim > 1), not batch-norm scales or biases."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


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
    if name == "adam":  # the schedule's m drives Adam's first-moment decay b1
        return lambda learning_rate, momentum: with_decay(
            optax.adam(learning_rate, b1=momentum, b2=config.adam_b2, eps=config.adam_eps)
        )
    raise ValueError(f"config.optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}.")


def create_optimizer(config, schedule) -> optax.GradientTransformationExtraArgs:
    """The schedule-driven optimizer; ``update(..., batch_size=B)`` advances the clock by B."""
    if config.optimizer == "sgd" and any(s.momentum for s in schedule.stages):
        raise ValueError(
            "config.optimizer='sgd' has no momentum but the schedule sets momentum "
            f"{schedule.stages[0].momentum:g}; set --config.schedule.momentum=0 (and multiply "
            "the learning rate by 1/(1−m) to keep g) or use optimizer 'momentum'."
        )
    if config.optimizer == "adam" and any(s.momentum <= 0 for s in schedule.stages):
        raise ValueError("config.optimizer='adam' uses the schedule's momentum as b1; it must be > 0.")
    hyper = schedule_hyperparams(schedule)
    first = schedule.stages[0]
    inner = optax.inject_hyperparams(_inner_factory(config))(
        learning_rate=jnp.float32(first.learning_rate), momentum=jnp.float32(first.momentum)
    )

    def init(params):
        return ScheduledState(jnp.zeros([], jnp.int32), inner.init(params))

    def update(updates, state, params=None, *, batch_size, **_):
        lr, m = hyper(state.examples_seen)
        hp = dict(state.inner.hyperparams, learning_rate=lr, momentum=m)
        inner_state = state.inner._replace(hyperparams=hp)
        updates, inner_state = inner.update(updates, inner_state, params)
        return updates, ScheduledState(state.examples_seen + batch_size, inner_state)

    return optax.GradientTransformationExtraArgs(init, update)


def current_hyperparams(opt_state) -> tuple[jax.Array, jax.Array]:
    """The (ε, m) the last update used."""
    hp = opt_state.inner.hyperparams
    return hp["learning_rate"], hp["momentum"]
