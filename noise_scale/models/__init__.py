"""Model registry: ``create_model(config, num_classes)`` by ``config.model`` (or import path).

Every model is a flax linen Module called as ``model.apply(variables, x, train=...)``
returning float32 logits; batch-norm models keep running statistics in the
``batch_stats`` collection and use ghost batch norm of ``config.ghost_batch_size``.
"""

from __future__ import annotations

import flax.linen as nn

from noise_scale.default_config import DTYPES
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


MODELS = {"mlp": _mlp, "cnn": _cnn, "resnet50": _resnet50, "wrn16_4": _wrn16_4}


def create_model(config, num_classes: int):
    """The model ``config.model`` names (validated with every field by ``noise_scale.validation``).

    An import path (``my_pkg.nets:Net``) names a flax module class, built as
    ``Net(num_classes=...)``, or a function ``(config, num_classes) -> module``.
    """
    from noise_scale.user_code import is_import_path, resolve

    if not is_import_path(config.model):
        return MODELS[config.model](config, num_classes)
    obj = resolve(config.model, "model", "a flax module class", "my_pkg.nets:Net")
    if isinstance(obj, type) and issubclass(obj, nn.Module):
        return obj(num_classes=num_classes)
    return obj(config, num_classes)
