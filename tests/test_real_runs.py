"""The real models on the real data path, end to end on 8 host devices.

``noise_scale.train.train_and_evaluate`` runs WRN-16-4 on ``cifar10`` and
ResNet-50 on ``imagenet2012`` exactly as a real run would (``load_dataset`` →
``tfds.data_source`` → the threaded sources → the sampler → the shard_map step →
evaluation → checkpoints → ``metrics.jsonl``), except that ``tfds.testing.mock_data``
stands in for the ArrayRecord files (random examples, every split the same size).
The configs are the repository's own (``configs/cifar10_wrn16_4.py``,
``configs/imagenet_resnet50.py``) shrunk to a two-stage schedule whose batch
doubles after the first epoch: two batch sizes, so exactly two train-step compiles.

Initialisation uses the ``rbg`` PRNG (its kernels compile several times faster on
CPU than threefry's; see tests/test_models_resnet.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from noise_scale import config_lib, train
from noise_scale import metrics as metrics_lib
from noise_scale.schedule import schedule_from_config
from tests.helpers import apply_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_MOCK = 32  # examples in every mocked split (train and eval alike)
EVAL_BATCH = 24  # not a divisor of N_MOCK: the last eval batch is padded and masked


@pytest.fixture(scope="module", autouse=True)
def rbg_prng():
    old = jax.config.jax_default_prng_impl
    jax.config.update("jax_default_prng_impl", "rbg")
    yield
    jax.config.update("jax_default_prng_impl", old)


def shrink(c, *, batch_size, max_batch_size=0, **overrides):
    """Two epochs over the mocked split; B doubles at epoch 1; tiny eval batches."""
    c.dataset_size = N_MOCK
    c.data_dir = ""
    c.eval_batch_size = EVAL_BATCH
    c.data_workers = 2
    c.prefetch = 2
    c.log_every_steps = 1
    c.ghost_batch_size = 2
    c.checkpoint_every_epochs = 0.0  # still saved at the stage boundary and at the end
    s = c.schedule
    s.batch_size, s.total_epochs, s.boundaries, s.factor = batch_size, 2.0, (1.0,), 2.0
    s.max_batch_size = max_batch_size
    return apply_overrides(c, overrides)


def wrn_config(**overrides):
    c = config_lib.load_config("cifar10_wrn16_4:increase_batch")
    return shrink(c, batch_size=16, **overrides)


def resnet_config(**overrides):
    c = config_lib.load_config("imagenet_resnet50:increase_batch")  # hybrid
    return shrink(c, batch_size=16, max_batch_size=32, image_size=32, dtype="bfloat16",
                  **{"schedule.learning_rate": 0.1, "schedule.warmup_epochs": 0.5,
                     "schedule.warmup_start_lr": 0.01, **overrides})


def run(config, workdir):
    with tfds.testing.mock_data(num_examples=N_MOCK):
        return train.train_and_evaluate(config, str(workdir))


def check_run(config, workdir, records, accumulation):
    """Two compiles, finite losses, every eval example once, batch sizes as scheduled."""
    schedule = schedule_from_config(config)
    assert schedule.batch_sizes() == [16, 32]
    assert len(records) == 2  # one record per epoch
    assert records[-1]["compiles"] == 2
    assert [r["compiles"] for r in records] == [1, 2]  # each batch size compiled when it came
    assert [r["batch_size"] for r in records] == [16, 32]
    assert [r["stage"] for r in records] == [0, 1]
    assert [r["accumulation_steps"] for r in records] == accumulation
    assert [r["updates"] for r in records] == np.cumsum(schedule.updates_per_stage()).tolist()
    assert [r["updates"] for r in records] == [2, 3]
    assert [r["examples_seen"] for r in records] == [N_MOCK, 2 * N_MOCK]
    for r in records:
        assert r["test_examples"] == N_MOCK  # every eval example exactly once, padding masked
        assert r["devices"] == 8
        for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy", "noise_scale"):
            assert np.isfinite(r[k]), (k, r)
        last_step = r["examples_seen"] - r["batch_size"]
        assert r["learning_rate"] == pytest.approx(schedule.learning_rate_at(last_step), rel=1e-6)
        assert r["momentum"] == pytest.approx(schedule.momentum_at(last_step), rel=1e-6)
    assert metrics_lib.read_metrics(str(workdir)) == records


# WRN-16-4 on CIFAR-10 ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrn_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("wrn")
    config = wrn_config()
    return config, workdir, run(config, workdir)


@pytest.mark.slow  # WRN-16-4 on CIFAR-10 shapes (~50 s); the MNIST-1D runs cover the loop
def test_wrn16_4_cifar10_two_stages(wrn_run):
    config, workdir, records = wrn_run
    assert config.model == "wrn16_4" and config.dataset == "cifar10"
    check_run(config, workdir, records, accumulation=[1, 1])


@pytest.mark.slow  # WRN-16-4 on CIFAR-10 shapes (~50 s); the MNIST-1D runs cover the loop
def test_wrn16_4_accumulates_to_the_same_update(wrn_run, tmp_path):
    """max_device_batch=2: stage 1's 4 examples per device become 2 micro-batches of 2.

    Ghost batches (2 examples) are the same either way and the averaged micro-batch
    gradient equals the full one, so the run matches the unaccumulated one.
    """
    _, _, plain = wrn_run
    config = wrn_config(max_device_batch=2)
    records = run(config, tmp_path)
    check_run(config, tmp_path, records, accumulation=[1, 2])
    for a, b in zip(records, plain):
        for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k


# ResNet-50 on ImageNet ---------------------------------------------------------------------


@pytest.mark.slow
def test_resnet50_imagenet_two_stages(tmp_path):
    config = resnet_config()
    assert config.model == "resnet50" and config.dataset == "imagenet2012"
    records = run(config, tmp_path)
    check_run(config, tmp_path, records, accumulation=[1, 1])
    assert [r["learning_rate"] for r in records] == pytest.approx([0.1, 0.1])  # after warm-up


# The entry point without the data ----------------------------------------------------------


def test_main_without_the_dataset_says_how_to_prepare_it(tmp_path):
    """Exit status 2 and the preparation steps, before anything compiles; no traceback.

    ghost_batch_size=16: the preset's 128 does not divide stage 2's 3,200 / 8 devices
    = 400 examples per device, which setup rejects before it looks for the data.
    """
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "noise_scale.main",
         "--config=configs/cifar10_wrn16_4.py:increase_batch",
         f"--workdir={tmp_path / 'run'}", f"--config.data_dir={data_dir}",
         "--config.ghost_batch_size=16"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert "cifar10 is not prepared" in out and f"config.data_dir={data_dir}" in out, out
    assert "tfds build cifar10" in out and "--file_format=array_record" in out, out
    assert list(data_dir.iterdir()) == []  # nothing downloaded
    assert not (tmp_path / "run" / "checkpoints").exists()
