"""Model registry: ``create_model(config, num_classes)`` by ``config.model`` (or import path).

Every model is a flax linen Module called as ``model.apply(variables, x, train=...)``
returning float32 logits; batch-norm models keep running statistics in the
``batch_stats`` collection and use ghost batch norm of ``config.ghost_batch_size``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from noise_scale.default_config import DTYPES
from noise_scale.default_config import MODELS as SHIPPED
from noise_scale.models.mnist1d import CNN1D, MLP
from noise_scale.models.resnet import ResNet50
from noise_scale.models.wide_resnet import WRN16_4


def _dtype(config):
    return DTYPES[config.dtype]


def _mlp(config, num_classes):
    return MLP(num_classes=num_classes, ghost_size=config.ghost_batch_size, dtype=_dtype(config))


def _cnn(config, num_classes):
    return CNN1D(num_classes=num_classes, channels=tuple(config.get("cnn_channels", (32, 64, 64))),
                 ghost_size=config.ghost_batch_size, dtype=_dtype(config))


def _resnet50(config, num_classes):
    return ResNet50(num_classes=num_classes, ghost_size=config.ghost_batch_size, dtype=_dtype(config))


def _wrn16_4(config, num_classes):
    return WRN16_4(num_classes=num_classes, ghost_size=config.ghost_batch_size, dtype=_dtype(config))


# The registry: the shipped names (``default_config.MODELS``, in its order) and any a user adds.
MODELS = dict(zip(SHIPPED, (_mlp, _cnn, _resnet50, _wrn16_4), strict=True))


class NormalizedInput:
    """A model whose input is uint8 pixels, normalised per channel inside the compiled step.

    Why here and not on the host: uint8 is a quarter of float32's host→device bytes,
    and ``(x − mean)/std`` is free on the accelerator but a sizeable share of a host
    core's work per image. It wraps ``init`` and ``apply`` only, so the parameters
    (and checkpoints) are exactly the wrapped model's.
    """

    def __init__(self, model, mean, std, dtype=np.float32):
        self.model, self.dtype = model, dtype
        self.mean = np.asarray(mean, np.float32)
        self.inv_std = 1.0 / np.asarray(std, np.float32)

    def _normalize(self, x):
        return ((x.astype(jnp.float32) - self.mean) * self.inv_std).astype(self.dtype)

    def init(self, rngs, x, *args, **kwargs):
        return self.model.init(rngs, self._normalize(x), *args, **kwargs)

    def apply(self, variables, x, *args, **kwargs):
        return self.model.apply(variables, self._normalize(x), *args, **kwargs)


def create_model(config, num_classes: int, normalization=None):
    """The model ``config.model`` names (validated with every field by ``noise_scale.config.validation``).

    An import path (``my_pkg.nets:Net``) names a flax module class, built as
    ``Net(num_classes=...)``, or a function ``(config, num_classes) -> module``.
    ``normalization``: the dataset's (mean, std) when it hands uint8 pixels.
    """
    model = _build(config, num_classes)
    if normalization is None:
        return model
    return NormalizedInput(model, *normalization, dtype=_dtype(config))


def _build(config, num_classes: int):
    from noise_scale.config.user_code import is_import_path, resolve

    if not is_import_path(config.model):
        return MODELS[config.model](config, num_classes)
    obj = resolve(config.model, "model", "a flax module class", "my_pkg.nets:Net")
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        return obj(num_classes=num_classes)
    return obj(config, num_classes)
