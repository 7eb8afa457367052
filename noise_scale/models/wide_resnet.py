"""Wide ResNet 16-4 for CIFAR-10 (Zagoruyko & Komodakis 2016), with ghost batch norm.

Pre-activation basic blocks (BN → ReLU → 3x3 conv, twice), depth 16 = 6·2 + 4:
a 3x3 stem of 16 channels, three groups of 2 blocks with 16·k = 64, 128, 256
channels (k = 4; strides 1, 2, 2), then BN → ReLU → global average pool → a
linear classifier. Where a block changes width or resolution its shortcut is a
1x1 convolution of the pre-activated input, as in the authors' code. No
dropout (the paper's CIFAR-10 runs, and Smith et al.'s, use none). Convolutions
have no bias (each is followed by batch norm).

With 10 classes the model has exactly 2,748,890 parameters (batch-norm running
statistics, in the ``batch_stats`` collection, not counted); the WRN paper
rounds it to 2.7 M. Compute in ``dtype``, parameters and logits float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from noise_scale.models import layers
from noise_scale.models.layers import GhostBatchNorm


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus the shortcut."""

    features: int
    strides: int
    ghost_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = lambda f, k, s, name: layers.conv(f, k, s, name, self.dtype)
        norm = lambda name: GhostBatchNorm(self.ghost_size, dtype=self.dtype, name=name)

        pre = nn.relu(norm("bn1")(x, train))
        y = conv(self.features, 3, self.strides, "conv1")(pre)
        y = nn.relu(norm("bn2")(y, train))
        y = conv(self.features, 3, 1, "conv2")(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = conv(self.features, 1, self.strides, "shortcut_conv")(pre)
        return x + y


class WideResNet(nn.Module):
    """WRN-depth-k: (depth − 4)/6 blocks per group, widths 16, 16k, 32k, 64k."""

    depth: int = 16
    widen_factor: int = 4
    num_classes: int = 10
    ghost_size: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if (self.depth - 4) % 6:
            raise ValueError(f"wide ResNet depth must be 6n + 4, got {self.depth}.")
        blocks = (self.depth - 4) // 6
        x = x.astype(self.dtype)
        x = nn.Conv(16, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                    kernel_init=layers.conv_init, name="stem_conv")(x)
        for g, width in enumerate((16, 32, 64)):
            for b in range(blocks):
                x = WideBasicBlock(
                    features=width * self.widen_factor,
                    strides=2 if g > 0 and b == 0 else 1,
                    ghost_size=self.ghost_size,
                    dtype=self.dtype,
                    name=f"group{g + 1}_block{b + 1}",
                )(x, train)
        x = nn.relu(GhostBatchNorm(self.ghost_size, dtype=self.dtype, name="final_bn")(x, train))
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        return nn.Dense(self.num_classes, dtype=jnp.float32, name="head")(x)


def WRN16_4(**kwargs) -> WideResNet:  # noqa: N802 - a model constructor, named like the class
    """Wide ResNet 16-4: 2 blocks per group, widths 16/64/128/256; 2,748,890 parameters at 10 classes."""
    return WideResNet(depth=16, widen_factor=4, **kwargs)
