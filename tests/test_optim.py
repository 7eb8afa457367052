"""The schedule-driven optimizer: ε and m at examples seen, warm-up, weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from noise_scale import optim
from noise_scale.schedule import from_lr_steps, hyperparams_at
from tests.helpers import optimizer_config as config


def warm_schedule():
    return from_lr_steps(
        "hybrid", dataset_size=1000, total_epochs=6, batch_size=100, learning_rate=3.2,
        momentum=0.9, boundaries=(2, 4), factor=10, max_batch_size=500, warmup_epochs=3,
        warmup_start_lr=0.1)


def test_hyperparams_equal_the_schedule_at_every_position():
    s = warm_schedule()
    hyper = jax.jit(optim.schedule_hyperparams(s))
    for p in range(0, s.total_examples, 37):
        lr, m = hyper(jnp.int32(p))
        assert float(lr) == pytest.approx(s.learning_rate_at(p), rel=1e-6)
        assert float(m) == pytest.approx(s.momentum_at(p))


def test_host_and_device_compose_the_same_rule_at_boundaries_and_in_the_ramp():
    """``hyperparams_at`` on the host (float64) and in the compiled step (float32): the same
    stage on each side of every boundary, the same point of the warm-up ramp."""
    s = warm_schedule()
    hyper = jax.jit(optim.schedule_hyperparams(s))
    starts = [start for start, _, _ in s._walk[1:]]  # where stages 1 and 2 take over
    positions = [0, 1, 1500, 2999, 3000, 3001] + [p + d for p in starts for d in (-1, 0, 1)]
    for p in positions:
        lr, m = hyper(jnp.int32(p))
        host_lr, host_m = map(float, hyperparams_at(p, s.table, s))
        assert (float(lr), float(m)) == pytest.approx((host_lr, host_m), rel=1e-6), p
        assert host_lr == s.learning_rate_at(p) and host_m == s.momentum_at(p)
    # halfway up the ramp (epoch 1.5 of 3, stage 0): 0.1 + (3.2 − 0.1) · 1.5 / 3
    assert float(hyper(jnp.int32(1500))[0]) == pytest.approx(1.65, rel=1e-6)
    # the last example of stage 0 and the first of stage 1 read different stages' ε
    lr_before, lr_after = (s.stages[i].learning_rate for i in (0, 1))
    epoch = starts[0] / s.dataset_size
    ramp = [0.1 + (lr - 0.1) * e / 3 for lr, e in ((lr_before, epoch - 1e-3), (lr_after, epoch))]
    assert float(hyper(jnp.int32(starts[0]))[0]) == pytest.approx(ramp[1], rel=1e-6)
    assert float(hyper(jnp.int32(starts[0] - 1))[0]) == pytest.approx(ramp[0], rel=1e-6)


def test_update_advances_the_example_clock_by_the_batch():
    s = warm_schedule()
    tx = optim.create_optimizer(config("nesterov"), s)
    params = {"w": jnp.ones((3, 3))}
    state = tx.init(params)
    seen = []
    for b in (100, 100, 500, 500):
        _, state = tx.update(params, state, params, batch_size=b)
        seen.append(int(state.examples_seen))
    assert seen == [100, 200, 700, 1200]


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam"])
def test_matches_optax_with_the_same_hyperparams(name):
    """One step at position 0 equals the plain optax optimizer at ε0, m0."""
    s = from_lr_steps("decay_lr", dataset_size=1000, total_epochs=2, batch_size=10,
                               learning_rate=0.1, momentum=0.0 if name == "sgd" else 0.9,
                               boundaries=(1,), factor=10)
    c = config(name)
    c.schedule.batch_size = 10  # Adam's b2 and eps are the config's at B = B_ref
    tx = optim.create_optimizer(c, s)
    ref = {"sgd": optax.sgd(0.1), "momentum": optax.sgd(0.1, 0.9),
           "nesterov": optax.sgd(0.1, 0.9, nesterov=True), "adam": optax.adam(0.1, b1=0.9)}[name]
    params = {"w": jnp.arange(4.0)}
    grads = {"w": jnp.array([0.5, -1.0, 2.0, 0.0])}
    s1, s2 = tx.init(params), ref.init(params)
    for _ in range(3):
        u1, s1 = tx.update(grads, s1, params, batch_size=10)
        u2, s2 = ref.update(grads, s2, params)
        np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)


def test_weight_decay_skips_biases_and_norm_params():
    s = warm_schedule()
    tx = optim.create_optimizer(config("momentum", weight_decay=0.5), s)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2), "scale": jnp.ones(2)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    u, _ = tx.update(zeros, tx.init(params), params, batch_size=100)
    assert float(jnp.abs(u["kernel"]).sum()) > 0
    assert float(jnp.abs(u["bias"]).sum()) == 0 and float(jnp.abs(u["scale"]).sum()) == 0
