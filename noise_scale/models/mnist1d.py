"""Small models for MNIST-1D (40-sample signals, 10 classes), fast on two CPU cores."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from noise_scale.models.layers import norm_layer


class MLP(nn.Module):
    """Two hidden layers; ghost batch norm after each when ghost_size > 0."""

    num_classes: int = 10
    hidden: int = 256
    ghost_size: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1).astype(self.dtype)
        for _ in range(2):
            x = nn.Dense(self.hidden, dtype=self.dtype)(x)
            x = nn.relu(norm_layer(self.ghost_size, self.dtype)(x, train))
        return nn.Dense(self.num_classes, dtype=jnp.float32)(x)


class CNN1D(nn.Module):
    """Three conv/pool blocks (32, 64, 64 channels, width 5) and a 128-unit head.

    73k parameters at the default widths; configs/mnist1d.py uses (16, 32, 32), 29.8k,
    which reaches ~99.3 % test accuracy on MNIST-1D with 40k examples.
    """

    num_classes: int = 10
    channels: tuple[int, ...] = (32, 64, 64)
    ghost_size: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.astype(self.dtype)
        if x.ndim == 2:
            x = x[..., None]
        for c in self.channels:
            x = nn.Conv(c, (5,), padding="SAME", use_bias=self.ghost_size == 0, dtype=self.dtype)(x)
            x = nn.relu(norm_layer(self.ghost_size, self.dtype)(x, train))
            x = nn.max_pool(x, (2,), (2,))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(128, dtype=self.dtype)(x))
        return nn.Dense(self.num_classes, dtype=jnp.float32)(x)
