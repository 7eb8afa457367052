"""The data-parallel step: 8 devices equal 1, accumulation equals the full batch, one compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noise_scale import optim, parallel
from noise_scale.models.mnist1d import CNN1D, MLP
from noise_scale.schedule import Schedule, Stage
from tests.helpers import optimizer_config


def schedule():
    # two stages with different ε and m but one batch size
    return Schedule(4096, (Stage(0, 1, 64, 0.1, 0.9), Stage(1, 2, 64, 0.02, 0.5)))


def batch(seed, n=64):
    rng = np.random.default_rng(seed)
    return {"input": rng.normal(size=(n, 40)).astype(np.float32),
            "label": rng.integers(0, 10, n).astype(np.int32)}


def run_steps(model, devices, steps=3, accumulation=1, has_bn=False, tx=None):
    mesh = parallel.make_mesh(jax.devices()[:devices])
    tx = tx or optim.create_optimizer(optimizer_config(weight_decay=1e-3), schedule())
    state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 40)), mesh)
    step = parallel.make_train_step(model, tx, mesh, batch_size=64, accumulation_steps=accumulation,
                                    has_batch_stats=has_bn)
    losses = []
    for i in range(steps):
        state, m = step(state, parallel.shard_batch(batch(i), mesh))
        losses.append(parallel.unpack_metrics(m)["loss"])
    return jax.device_get(state), losses


def max_diff(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize("has_bn", [False, True])
def test_eight_devices_equal_one(has_bn):
    assert jax.device_count() == 8  # tests/conftest.py: 8 host devices
    model = CNN1D(ghost_size=8 if has_bn else 0)
    one, l1 = run_steps(model, 1, has_bn=has_bn)
    eight, l8 = run_steps(model, 8, has_bn=has_bn)
    assert l1 == pytest.approx(l8, rel=1e-5)
    assert max_diff(one.params, eight.params) < 1e-6
    if has_bn:
        assert max_diff(one.batch_stats, eight.batch_stats) < 1e-6


def test_accumulation_equals_full_batch_without_batch_norm():
    full, lf = run_steps(MLP(), 8)
    accum, la = run_steps(MLP(), 8, accumulation=4)  # 8 per device → 4 micro-batches of 2
    assert lf == pytest.approx(la, rel=1e-5)
    assert max_diff(full.params, accum.params) < 1e-6


def test_accumulation_equals_full_batch_with_ghost_batch_norm():
    model = CNN1D(ghost_size=8)
    full, _ = run_steps(model, 2, has_bn=True)  # 32 per device: 4 ghost batches of 8
    accum, _ = run_steps(model, 2, accumulation=4, has_bn=True)  # 4 micro-batches of 8
    assert max_diff(full.params, accum.params) < 1e-5
    assert max_diff(full.batch_stats, accum.batch_stats) < 1e-6


def test_changing_lr_and_momentum_never_recompiles():
    mesh = parallel.make_mesh()
    tx = optim.create_optimizer(optimizer_config(), schedule())
    model = MLP(hidden=16)
    state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 40)), mesh)
    step = parallel.make_train_step(model, tx, mesh, batch_size=64)
    counter = parallel.CompileCounter()
    seen = []
    for i in range(128):  # 128 × 64 = 2 epochs of 4096: crosses the stage boundary
        b = parallel.shard_batch(batch(i), mesh)
        with counter:
            state, m = step(state, b)
        m = parallel.unpack_metrics(m)
        seen.append((round(m["learning_rate"], 6), round(m["momentum"], 6)))
    assert counter.count == 1
    assert seen[63] == (0.1, 0.9) and seen[64] == (0.02, 0.5)


def test_compile_counter_ignores_other_threads_and_windows():
    counter = parallel.CompileCounter()
    f = jax.jit(lambda x: x * 2)
    x5, x3 = jnp.ones(5), jnp.ones(3)
    f(x3)  # outside the window
    with counter:
        f(x5)
        f(x5)  # cached: no new compile
        f(x3)  # compiled before the window
    assert counter.count == 1
    import threading

    t = threading.Thread(target=lambda: f(jnp.ones(7)))
    with counter:
        t.start()
        t.join()
    assert counter.count == 1  # another thread's compile is not this window's


def test_eval_step_masks_padding():
    mesh = parallel.make_mesh()
    tx = optim.create_optimizer(optimizer_config(), schedule())
    model = MLP(hidden=16)
    state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 40)), mesh)
    ev = parallel.make_eval_step(model, mesh, False)
    b = batch(0, 16)
    b["mask"] = np.arange(16) < 11
    sums = jax.device_get(ev(state, parallel.shard_batch(b, mesh)))
    assert float(sums["count"]) == 11
    logits = model.apply({"params": state.params}, b["input"][:11])
    correct = float((np.argmax(logits, -1) == b["label"][:11]).sum())
    assert float(sums["correct"]) == correct


def test_batch_norm_averages_decay_per_example_not_per_update():
    """Runs at B and 5B that see the same examples keep the same weight on the statistics
    they started from: 0.9^(examples / B_ref), not 0.9^updates (which 5B would leave 5×
    fewer updates to decay)."""
    from noise_scale.models.layers import update_weight

    mesh = parallel.make_mesh(jax.devices()[:1])
    tx = optim.create_optimizer(optimizer_config(), Schedule(
        4096, (Stage(0, 1, 32, 1e-12, 0.0),)))  # ε ≈ 0: the parameters, so the inputs, stay put
    model = CNN1D(ghost_size=8)
    one = batch(0, 32)

    def running_mean(b, steps, weight):
        state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 40)), mesh)
        step = parallel.make_train_step(model, tx, mesh, batch_size=b, has_batch_stats=True,
                                        batch_stats_weight=weight)
        data = {k: np.concatenate([v] * (b // 32)) for k, v in one.items()}  # identical ghosts
        for _ in range(steps):
            state, _ = step(state, parallel.shard_batch(data, mesh))
        return jax.device_get(state.batch_stats)

    small = running_mean(32, 10, update_weight(32, 32))  # 320 examples in 10 updates
    large = running_mean(160, 2, update_weight(160, 32))  # the same 320 in 2 updates
    per_update = running_mean(160, 2, 1.0)  # the old rule: momentum 0.9 per update
    assert update_weight(32, 32) == 1.0 and update_weight(160, 32) == pytest.approx(
        (1 - 0.9 ** 5) / 0.1)
    assert max_diff(small, large) < 1e-5
    assert max_diff(small, per_update) > 1e-2  # what the per-example decay removes
