"""ResNet-50 v1.5 and WRN-16-4: parameter counts, shapes, Goyal zero-init, ghost batch norm, bf16.

Parameter counts at full size use ``jax.eval_shape`` (no compute); forward passes
run at 32x32 with tiny batches. Initialisation uses the ``rbg`` PRNG, whose
random-number kernels compile several times faster on CPU than threefry's.
"""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from noise_scale.models import create_model
from noise_scale.models.resnet import ResNet50
from noise_scale.models.wide_resnet import WRN16_4


def key(seed=0):
    return jax.random.key(seed, impl="rbg")


def n_params(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def init(model, shape):
    return jax.jit(lambda x: model.init(key(), x, train=False))(jnp.zeros(shape, jnp.float32))


def train_apply(model):
    return jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))


def eval_apply(model):
    return jax.jit(lambda v, x: model.apply(v, x, train=False))


def images(n, size=32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(n, size, size, 3)), jnp.float32)


@pytest.fixture(scope="module")
def resnet():
    model = ResNet50(num_classes=10, ghost_size=2)
    return model, init(model, (1, 32, 32, 3))


@pytest.fixture(scope="module")
def wrn():
    model = WRN16_4(num_classes=10, ghost_size=2)
    return model, init(model, (1, 32, 32, 3))


def test_resnet50_has_25_557_032_parameters_at_224():
    model = ResNet50(num_classes=1000)
    shapes = jax.eval_shape(
        lambda: model.init(key(), jnp.zeros((1, 224, 224, 3)), train=False)
    )
    assert n_params(shapes["params"]) == 25_557_032
    # 53 batch norms (stem, 3 per block, 4 projections), each with a running mean and var.
    assert set(shapes) == {"params", "batch_stats"}
    stats = jax.tree.leaves(shapes["batch_stats"])
    assert all(s.dtype == jnp.float32 for s in stats) and len(stats) == 2 * 53
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes["params"]))


def test_wrn16_4_has_2_748_890_parameters():
    model = WRN16_4(num_classes=10)
    shapes = jax.eval_shape(lambda: model.init(key(), jnp.zeros((1, 32, 32, 3)), train=False))
    assert n_params(shapes["params"]) == 2_748_890
    convs = [p for p in jax.tree.leaves(shapes["params"]) if p.ndim == 4]
    assert len(convs) == 1 + 2 * 3 * 2 + 3  # stem, 12 block convs, 3 shortcut projections
    assert sorted({c.shape[-1] for c in convs}) == [16, 64, 128, 256]


def test_resnet50_last_bn_scale_of_every_block_starts_at_zero(resnet):
    _, v = resnet
    params = flax.traverse_util.flatten_dict(v["params"], sep="/")
    last = {k: p for k, p in params.items() if k.endswith("bn3/scale")}
    assert len(last) == 16  # 3 + 4 + 6 + 3 blocks
    assert all(np.all(np.asarray(p) == 0) for p in last.values())
    other = [p for k, p in params.items() if k.endswith("scale") and not k.endswith("bn3/scale")]
    assert len(other) == 1 + 2 * 16 + 4 and all(np.all(np.asarray(p) == 1) for p in other)


@pytest.mark.slow  # a full ResNet-50 forward pass (~8 s); the WRN and MNIST-1D models run in the default tier
def test_resnet50_forward_at_32x32(resnet):
    model, v = resnet
    x = images(4)
    logits, updates = train_apply(model)(v, x)
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))
    # Running statistics moved towards the ghost-batch statistics.
    before = jax.tree.leaves(v["batch_stats"])
    after = jax.tree.leaves(updates["batch_stats"])
    assert any(not np.allclose(a, b) for a, b in zip(after, before))
    out = eval_apply(model)(v, x)
    assert out.shape == (4, 10) and out.dtype == jnp.float32


@pytest.mark.slow  # a second ResNet-50 forward pass in bfloat16 (~6 s)
def test_resnet50_bfloat16_returns_float32_logits(resnet):
    _, v = resnet
    model = ResNet50(num_classes=10, ghost_size=2, dtype=jnp.bfloat16)
    x = images(4)
    logits, _ = train_apply(model)(v, x)
    assert logits.dtype == jnp.float32 and logits.shape == (4, 10)
    assert np.all(np.isfinite(np.asarray(logits)))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(v["params"]))


def test_resnet_runs_at_64x64():
    model = ResNet50(num_classes=7, ghost_size=2)
    shapes = jax.eval_shape(
        lambda x: model.apply(
            model.init(key(), x, train=False), x, train=True, mutable=["batch_stats"]
        ),
        jnp.zeros((4, 64, 64, 3)),
    )
    assert shapes[0].shape == (4, 7) and shapes[0].dtype == jnp.float32


def test_wrn_forward_train_eval_and_bfloat16(wrn):
    model, v = wrn
    x = images(4)
    logits, updates = train_apply(model)(v, x)
    assert logits.shape == (4, 10) and logits.dtype == jnp.float32
    assert set(updates) == {"batch_stats"}
    out = eval_apply(model)(v, x)
    assert out.shape == (4, 10) and out.dtype == jnp.float32
    bf16, _ = train_apply(WRN16_4(num_classes=10, ghost_size=2, dtype=jnp.bfloat16))(v, x)
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(bf16), np.asarray(logits), atol=0.1, rtol=0.1)


def test_ghost_batches_are_normalised_independently(wrn):
    """Two ghost batches together give, per ghost, what each gives alone (train mode)."""
    model, v = wrn
    x = images(4, seed=1)
    apply = train_apply(model)
    both, upd_both = apply(v, x)
    first, upd_first = apply(v, x[:2])
    second, upd_second = apply(v, x[2:])
    np.testing.assert_allclose(np.asarray(both[:2]), np.asarray(first), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(both[2:]), np.asarray(second), rtol=1e-4, atol=1e-4)
    # ...and the running statistics take the mean over the ghosts.
    for b, f, s in zip(*(jax.tree.leaves(u["batch_stats"])
                         for u in (upd_both, upd_first, upd_second))):
        np.testing.assert_allclose(np.asarray(b), (np.asarray(f) + np.asarray(s)) / 2,
                                   rtol=1e-4, atol=1e-5)
    # Not trivially so: one ghost batch of 4 normalises differently.
    whole, _ = train_apply(WRN16_4(num_classes=10, ghost_size=4))(v, x)
    assert not np.allclose(np.asarray(whole[:2]), np.asarray(first), atol=1e-3)


def test_eval_mode_is_per_example(wrn):
    model, v = wrn
    x = images(4, seed=2)
    apply = eval_apply(model)
    np.testing.assert_allclose(np.asarray(apply(v, x)[:2]), np.asarray(apply(v, x[:2])),
                               rtol=1e-5, atol=1e-5)


def config(model, ghost=32, dtype="float32"):
    return ml_collections.ConfigDict({"model": model, "ghost_batch_size": ghost, "dtype": dtype})


@pytest.mark.parametrize("name,cls", [("resnet50", "ResNet"), ("wrn16_4", "WideResNet")])
def test_registered_in_models(name, cls):
    m = create_model(config(name, ghost=16, dtype="bfloat16"), num_classes=5)
    assert type(m).__name__ == cls
    assert m.num_classes == 5 and m.ghost_size == 16 and jnp.dtype(m.dtype) == jnp.bfloat16
