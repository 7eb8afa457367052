"""ResNet-50 v1.5 for ImageNet, with ghost batch norm (Goyal et al. 2017 initialisation).

v1.5 (as in flax ``examples/imagenet`` and torchvision) puts a bottleneck block's
stride in its 3x3 convolution rather than its first 1x1. With 1000 classes the
model has exactly 25,557,032 parameters (batch-norm running statistics, kept in
the ``batch_stats`` collection, not counted).

Goyal et al. ("Accurate, Large Minibatch SGD"): convolutions use He (fan-out)
initialisation, the classifier N(0, 0.01²), and the last batch-norm scale γ of
every residual block starts at 0, so each block starts as the identity and the
network trains like a shallower one early on, which lets large batches start
with a large learning rate. Batch norm is ``GhostBatchNorm`` throughout
(statistics over ``ghost_size`` examples, 32 in Goyal et al. and the paper).

Convolutions run in ``dtype`` (float32 or bfloat16); parameters are float32 and
the logits are float32 whatever ``dtype`` is. The network is fully
convolutional up to a global average pool, so it also runs at reduced image
sizes (32x32, 64x64) for tests and quick runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from noise_scale.models import layers
from noise_scale.models.layers import GhostBatchNorm


class BottleneckBlock(nn.Module):
    """1x1 → 3x3 (stride here: v1.5) → 1x1 (4x features), each followed by BN; ReLU after the sum."""

    features: int
    strides: int
    ghost_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = lambda f, k, s, name: layers.conv(f, k, s, name, self.dtype)
        norm = lambda name, **kw: GhostBatchNorm(self.ghost_size, dtype=self.dtype, name=name, **kw)

        y = nn.relu(norm("bn1")(conv(self.features, 1, 1, "conv1")(x), train))
        y = nn.relu(norm("bn2")(conv(self.features, 3, self.strides, "conv2")(y), train))
        y = conv(4 * self.features, 1, 1, "conv3")(y)
        # Goyal et al.: the block's last BN scale starts at zero (the block is the identity).
        y = norm("bn3", scale_init=nn.initializers.zeros)(y, train)

        residual = x
        if x.shape[-1] != 4 * self.features or self.strides != 1:
            residual = conv(4 * self.features, 1, self.strides, "proj_conv")(x)
            residual = norm("proj_bn")(residual, train)
        return nn.relu(y + residual)


class ResNet(nn.Module):
    """Bottleneck ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global average pool."""

    stage_sizes: Sequence[int]
    num_classes: int = 1000
    width: int = 64
    ghost_size: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        x = nn.Conv(self.width, (7, 7), (2, 2), padding=[(3, 3), (3, 3)], use_bias=False,
                    dtype=self.dtype, kernel_init=layers.conv_init, name="stem_conv")(x)
        x = GhostBatchNorm(self.ghost_size, dtype=self.dtype, name="stem_bn")(x, train)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
        for i, blocks in enumerate(self.stage_sizes):
            for j in range(blocks):
                x = BottleneckBlock(
                    features=self.width * 2**i,
                    strides=2 if i > 0 and j == 0 else 1,
                    ghost_size=self.ghost_size,
                    dtype=self.dtype,
                    name=f"stage{i + 1}_block{j + 1}",
                )(x, train)
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32,
                        kernel_init=nn.initializers.normal(0.01), name="head")(x)


def ResNet50(**kwargs) -> ResNet:  # noqa: N802 - a model constructor, named like the class
    """ResNet-50 v1.5: stages of 3, 4, 6, 3 bottleneck blocks; 25,557,032 parameters at 1000 classes."""
    return ResNet(stage_sizes=(3, 4, 6, 3), **kwargs)
