"""Ghost batch norm: batch-norm statistics over fixed-size sub-batches.

The paper uses it in every run so that batch norm behaves the same whether B is
128 or 16,000: each replica splits its (micro-)batch into ghost batches of
``ghost_size`` examples and normalises each with its own statistics. Running
averages (for evaluation) take the mean over ghost batches; the train step
averages them over devices (``pmean``) so replicas stay identical.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class GhostBatchNorm(nn.Module):
    """BatchNorm over ghost batches of ``ghost_size`` examples along axis 0.

    A batch smaller than ``ghost_size`` is one ghost batch; a larger one must be
    a multiple of it (the engine checks every stage's micro-batch before it
    compiles anything).
    """

    ghost_size: int
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones

    @nn.compact
    def __call__(self, x, train: bool):
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        if not train:
            mean, var = ra_mean.value, ra_var.value
            y = (x.astype(jnp.float32) - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))
            return (y * scale + bias).astype(self.dtype)

        batch = x.shape[0]
        ghost = min(self.ghost_size, batch)
        if batch % ghost:
            raise ValueError(
                f"batch of {batch} examples per device does not split into ghost batches "
                f"of {self.ghost_size}; make the per-device (micro-)batch a multiple of "
                "config.ghost_batch_size."
            )
        xf = x.astype(jnp.float32).reshape(batch // ghost, ghost, *x.shape[1:])
        axes = tuple(range(1, xf.ndim - 1))
        mean = xf.mean(axis=axes, keepdims=True)
        var = jnp.square(xf - mean).mean(axis=axes, keepdims=True)
        y = ((xf - mean) * jnp.reciprocal(jnp.sqrt(var + self.epsilon))).reshape(x.shape)
        if not self.is_initializing():
            flat = tuple(range(mean.ndim - 1))
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean.mean(flat)
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var.mean(flat)
        return (y * scale + bias).astype(self.dtype)


def norm_layer(ghost_size: int, dtype=jnp.float32, **kwargs):
    """GhostBatchNorm when ghost_size > 0, else nothing (identity that ignores ``train``)."""
    if ghost_size > 0:
        return GhostBatchNorm(ghost_size=ghost_size, dtype=dtype, **kwargs)
    return lambda x, train: x
