"""MNIST-1D (Greydanus 2020), generated offline and cached.

``mnist1d.data.make_dataset`` synthesises the signals from templates with a
seed, no download. 50,000 samples with the package's 80/20 split give the
40,000 training / 10,000 test examples of ``configs/mnist1d.py``. Generation
takes ~10 s, so the arrays are cached as ``.npz`` (keyed by size and seed);
a second run loads them in milliseconds. A damaged cache (a file cut short, overwritten,
or holding other arrays) is generated again, with a warning, never a traceback.
"""

from __future__ import annotations

import logging
import os
import zipfile
import zlib

import numpy as np

from noise_scale.data import ArraySource, Dataset

DATA_SEED = 42  # the package's default: the canonical MNIST-1D signals


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "noise_scale")


def generate(num_train: int, seed: int = DATA_SEED) -> dict[str, np.ndarray]:
    """Fresh arrays: x (num_train, 40) float32, y int32, and a quarter as many test examples."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(round(num_train / args.train_split))
    args.seed = seed
    d = make_dataset(args)  # offline synthesis; never the package's download path
    return {
        "x": np.asarray(d["x"], np.float32),
        "y": np.asarray(d["y"], np.int32),
        "x_test": np.asarray(d["x_test"], np.float32),
        "y_test": np.asarray(d["y_test"], np.int32),
    }


def arrays(num_train: int, cache_dir: str = "", seed: int = DATA_SEED) -> dict[str, np.ndarray]:
    """Cached ``generate``: written atomically so a killed run never leaves half a file."""
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, f"mnist1d_train{num_train}_seed{seed}.npz")
    if os.path.exists(path):
        cached, damage = _read_cache(path, num_train)
        if cached is not None:
            return cached
        logging.warning("the MNIST-1D cache %s is %s; generating the data again (about 10 s) "
                        "and replacing it", path, damage)
    data = generate(num_train, seed)
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **data)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache directory only costs the regeneration next time
    return data


def _read_cache(path: str, num_train: int):
    """(arrays, None), or (None, what is wrong): the cache is derived data, so any damage
    (a truncated or overwritten file, a wrong or missing array) means generating it again."""
    try:
        with np.load(path) as f:
            data = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        return None, f"unreadable ({type(e).__name__}: {e})"
    shapes = {k: v.shape for k, v in data.items()}
    if (set(shapes) != {"x", "y", "x_test", "y_test"} or shapes["x"][0] != num_train
            or shapes["y"] != (num_train,) or shapes["y_test"] != shapes["x_test"][:1]
            or shapes["x"][1:] != shapes["x_test"][1:]):
        return None, f"not the arrays it should hold ({shapes})"
    return data, None


def load(config) -> Dataset:
    d = arrays(config.dataset_size, config.data_dir)
    return Dataset(
        train=ArraySource({"input": d["x"], "label": d["y"]}),
        eval=ArraySource({"input": d["x_test"], "label": d["y_test"]}),
        num_classes=10,
        input_shape=d["x"].shape[1:],
        name="mnist1d",
    )
