"""Data: ``load_dataset(config)`` → train and eval sources plus what the model needs.

Every source yields dicts with ``input`` (float features / images) and ``label``
(int32), gathered by example index (see ``sampler.Source``).
"""

from __future__ import annotations

import dataclasses

from noise_scale.data.sampler import ArraySource, Sampler, Source  # noqa: F401


@dataclasses.dataclass
class Dataset:
    train: Source
    eval: Source
    num_classes: int
    input_shape: tuple[int, ...]  # one example's model input (after preprocessing)
    name: str = ""


def load_dataset(config) -> Dataset:
    if config.dataset == "mnist1d":
        from noise_scale.data import mnist1d

        return mnist1d.load(config)
    if config.dataset in ("cifar10", "imagenet2012"):
        from noise_scale.data import tfds_data

        return tfds_data.load(config)
    raise ValueError(
        f"config.dataset must be one of mnist1d, cifar10, imagenet2012; got {config.dataset!r}."
    )
