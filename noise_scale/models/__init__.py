"""Model registry: ``create_model(config, num_classes)`` by ``config.model``.

Every model is a flax linen Module called as ``model.apply(variables, x, train=...)``
returning float32 logits; batch-norm models keep running statistics in the
``batch_stats`` collection and use ghost batch norm of ``config.ghost_batch_size``.
"""

from __future__ import annotations

import jax.numpy as jnp

from noise_scale.models.mnist1d import CNN1D, MLP

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _dtype(config):
    if config.dtype not in _DTYPES:
        raise ValueError(f"config.dtype must be one of {', '.join(_DTYPES)}, got {config.dtype!r}.")
    return _DTYPES[config.dtype]


def _mlp(config, num_classes):
    return MLP(num_classes=num_classes, ghost_size=config.ghost_batch_size, dtype=_dtype(config))


def _cnn(config, num_classes):
    return CNN1D(num_classes=num_classes, ghost_size=config.ghost_batch_size, dtype=_dtype(config))


MODELS = {"mlp": _mlp, "cnn": _cnn}


def create_model(config, num_classes: int):
    if config.model not in MODELS:
        raise ValueError(
            f"config.model must be one of {', '.join(sorted(MODELS))}, got {config.model!r}."
        )
    return MODELS[config.model](config, num_classes)
