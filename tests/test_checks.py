"""A user's dataset and model checked on one batch of each split, before training.

Each case was a traceback after the workdir was written, a "divergence", or a silent
wrong run before ``noise_scale.data.checks``; here each is a ConfigError naming it.
"""

import flax.linen as nn
import numpy as np
import pytest

from noise_scale.data import ArraySource, Dataset, checks
from noise_scale.errors import ConfigError
from tests.helpers import small_config

CONFIG = small_config(**{"dataset": "user_blobs:load", "model": "user_blobs:Net",
                         "schedule.batch_size": 16, "eval_batch_size": 50})


def blobs(n=64, classes=3, labels=None, **arrays):
    x = np.random.default_rng(0).normal(size=(n, 12)).astype(np.float32)
    y = np.arange(n, dtype=np.int32) % classes if labels is None else labels
    return ArraySource({"input": x, "label": y, **arrays})


def dataset(train=None, eval=None, num_classes=3, input_shape=(12,)):
    return Dataset(train=blobs() if train is None else train,
                   eval=blobs(20) if eval is None else eval, num_classes=num_classes,
                   input_shape=input_shape)


class Net(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(self.num_classes)(x)


def test_a_good_dataset_and_model_pass_and_the_first_training_batch_is_returned():
    data = dataset()
    first = checks.check_dataset(data, CONFIG)
    assert first["input"].shape == (16, 12) and list(first["label"][:4]) == [0, 1, 2, 0]
    checks.check_model(Net(3), first["input"], 3, CONFIG)


@pytest.mark.parametrize("data,needles", [
    (dataset(num_classes=0), ["num_classes=0", "integer >= 2"]),
    (dataset(num_classes=1), ["num_classes=1"]),
    (dataset(train=blobs(labels=np.full(64, -1, np.int32))),
     ["training split's first 16 examples include label -1", "classes 0-2"]),
    (dataset(eval=blobs(20, labels=np.full(20, 3, np.int32))),
     ["evaluation split's first 20 examples include label 3"]),
    (dataset(train=blobs(labels=np.zeros(64, np.float32))), ["dtype float32", "int32"]),
    (dataset(train=blobs(labels=np.eye(3, dtype=np.int32)[np.arange(64) % 3])),
     ["labels of shape (16, 3)", "not one-hot"]),
    (dataset(input_shape=(40,)), ["inputs of shape (16, 12)", "(16, 40)"]),
    (dataset(input_shape=()), ["input_shape=()"]),
    (dataset(eval=ArraySource({"input": np.zeros((0, 12), np.float32),
                               "label": np.zeros((0,), np.int32)})),
     ["empty evaluation split"]),
    (dataset(train=ArraySource({"input": np.zeros((64, 12), np.float32),
                                "y": np.zeros((64,), np.int32)})), ["no 'label'"]),
])
def test_a_bad_dataset_is_refused_naming_the_problem(data, needles):
    with pytest.raises(ConfigError) as info:
        checks.check_dataset(data, CONFIG)
    message = str(info.value)
    assert message.startswith("config.dataset='user_blobs:load'") and "Fix:" in message
    for needle in needles:
        assert needle in message, message


def test_a_model_with_the_wrong_number_of_logits_is_refused_not_called_divergence():
    first = checks.check_dataset(dataset(), CONFIG)
    with pytest.raises(ConfigError, match=r"outputs of shape \(2, 10\) .* \(2, 3\)"):
        checks.check_model(Net(10), first["input"], 3, CONFIG)


def test_a_model_that_cannot_take_the_input_is_refused():
    class Conv(nn.Module):  # wants images (H, W, C); gets vectors of 12
        num_classes: int

        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(self.num_classes)(nn.Conv(4, (3, 3))(x).mean((1, 2)))

    first = checks.check_dataset(dataset(), CONFIG)
    with pytest.raises(ConfigError, match=r"cannot take .* input of shape \(2, 12\)"):
        checks.check_model(Conv(3), first["input"], 3, CONFIG)
