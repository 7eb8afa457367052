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

MOMENTUM = 0.9  # per update of ``batch_norm_batch_size`` examples (``update_weight``)


def update_weight(batch_size: int, reference_batch: int, momentum: float = MOMENTUM) -> float:
    """How much of a step's batch-norm update to keep so the averages decay per example.

    The module blends each step's statistics in with ``momentum`` per update, so at B
    = 32 the evaluated averages span ~320 examples and at B = 4,000 ~40,000: a larger
    batch would evaluate with smoother statistics, which confounds a comparison across
    batch sizes. Scaling the update by (1 − m^(B/B_ref)) / (1 − m) turns it into momentum
    m^(B/B_ref): the weight left on statistics from E examples ago is m^(E/B_ref) at any B.
    1.0 exactly (the module's own update) at B = B_ref.
    """
    if batch_size == reference_batch:
        return 1.0
    return (1.0 - momentum ** (batch_size / reference_batch)) / (1.0 - momentum)


class GhostBatchNorm(nn.Module):
    """BatchNorm over ghost batches of ``ghost_size`` examples along axis 0.

    Ghost batches never span devices. A per-device batch that ``ghost_size`` does
    not divide uses the largest divisor of it below ``ghost_size`` (400 examples
    with ghost size 128 → ghost batches of 100), and a batch smaller than
    ``ghost_size`` is one ghost batch; ``effective_ghost_size`` says which, and the
    engine reports it per stage before training.
    """

    ghost_size: int
    momentum: float = MOMENTUM
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
        ghost = effective_ghost_size(batch, self.ghost_size)
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


# He et al. initialisation, fan-out (as torchvision / Goyal et al.).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def conv(features: int, kernel: int, stride: int, name: str, dtype=jnp.float32) -> nn.Conv:
    """A square convolution without bias ('SAME' padding unless 1x1), He fan-out init."""
    return nn.Conv(features, (kernel, kernel), (stride, stride),
                   padding="SAME" if kernel > 1 else "VALID", use_bias=False, dtype=dtype,
                   kernel_init=conv_init, name=name)


def effective_ghost_size(batch: int, ghost_size: int) -> int:
    """The ghost batch actually used: the largest divisor of ``batch`` up to ``ghost_size``."""
    ghost = max(1, min(ghost_size, batch))
    while batch % ghost:
        ghost -= 1
    return ghost


def norm_layer(ghost_size: int, dtype=jnp.float32, **kwargs):
    """GhostBatchNorm when ghost_size > 0, else nothing (identity that ignores ``train``)."""
    if ghost_size > 0:
        return GhostBatchNorm(ghost_size=ghost_size, dtype=dtype, **kwargs)
    return lambda x, train: x
