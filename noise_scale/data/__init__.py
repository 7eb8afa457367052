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
    # (mean, std) per channel when the sources hand uint8 pixels: the model normalises
    # them inside the compiled step (noise_scale.models.NormalizedInput). None: as is.
    normalization: tuple | None = None


def load_dataset(config) -> Dataset:
    """mnist1d; a loader of the user's by import path (``my_pkg.data:load``); else TFDS."""
    from noise_scale.config.user_code import is_import_path, resolve
    from noise_scale.errors import ConfigError

    if config.dataset == "mnist1d":
        from noise_scale.data import mnist1d

        return mnist1d.load(config)
    if is_import_path(config.dataset):
        load = resolve(config.dataset, "dataset", "a function load(config) -> Dataset",
                       "my_pkg.data:load")
        dataset = load(config)
        if not isinstance(dataset, Dataset):
            raise ConfigError(
                f"config.dataset={config.dataset!r} returned a {type(dataset).__name__}, not a "
                "noise_scale.data.Dataset. Fix: return Dataset(train=..., eval=..., "
                "num_classes=..., input_shape=...) from it.")
        return dataset
    from noise_scale.data import tfds_data

    return tfds_data.load(config)
