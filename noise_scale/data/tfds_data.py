"""ImageNet (``imagenet2012``) and CIFAR-10 (``cifar10``) from TFDS ArrayRecord files.

``tfds.data_source`` gives random access by example index to a dataset that was
prepared with ``--file_format=array_record`` (locally or on a GCS bucket); no
TensorFlow is needed to read it (TFDS parses the records and decodes the images
with NumPy and OpenCV or PIL). The sources here implement
``noise_scale.data.sampler.Source``: ``get_batch(indices, positions, seed)``
reads, decodes and augments the examples in a pool of host threads (``PIL`` and
NumPy release the GIL for the heavy work) and returns ``{"input": (B, H, W, 3)
float32 or bfloat16, "label": (B,) int32}``. Augmentation is a pure function of
(seed, position) (see ``preprocess.uniforms``), so the batches do not depend on
the thread count, the process count or where a run was resumed.

CIFAR-10's decoded images (150 MB for the training split) are kept in memory
after their first read, so from the second epoch on a batch is a gather plus a
vectorised crop and flip. ImageNet is decoded on every read.

A dataset that is missing or was prepared in another format raises
``DatasetNotPreparedError`` (a ``ValueError``) that says how to prepare it.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np

from noise_scale.data import Dataset
from noise_scale.data import preprocess as pp
from noise_scale.default_config import DTYPES

SPLITS = {"imagenet2012": ("train", "validation"), "cifar10": ("train", "test")}
NUM_CLASSES = {"imagenet2012": 1000, "cifar10": 10}
SIZES = {"imagenet2012": (1_281_167, 50_000), "cifar10": (50_000, 10_000)}


class DatasetNotPreparedError(ValueError):
    """The TFDS dataset is not under ``config.data_dir`` as ArrayRecord files."""


def how_to_prepare(name: str, data_dir: str) -> str:
    where = data_dir or "~/tensorflow_datasets (the TFDS default; config.data_dir is empty)"
    target = data_dir or "~/tensorflow_datasets"
    local = "/path/to/tensorflow_datasets"
    if name == "imagenet2012":
        steps = (
            "ImageNet cannot be downloaded by TFDS. On a machine with ~400 GB of disk:\n"
            "  1. pip install tensorflow  (TFDS needs it to build the dataset, not to read it)\n"
            f"  2. put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (from "
            f"image-net.org) in {local}/downloads/manual/\n"
            f"  3. tfds build imagenet2012 --data_dir={local} --file_format=array_record\n"
            f"  4. gsutil -m cp -r {local}/imagenet2012 gs://YOUR_BUCKET/tensorflow_datasets/\n"
            "     (a bucket in the TPU VM's region) and run with "
            "--config.data_dir=gs://YOUR_BUCKET/tensorflow_datasets"
        )
    else:
        steps = (
            "  pip install tensorflow  (TFDS needs it to build the dataset, not to read it)\n"
            f"  tfds build {name} --data_dir={target} --file_format=array_record\n"
            f"and run with --config.data_dir={target}"
        )
    return (
        f"{name} is not prepared as ArrayRecord files under config.data_dir={where}. "
        f"Random access needs the ArrayRecord format; a TFRecord copy will not do.\n"
        f"{steps}\n(README: 'Preparing ImageNet and CIFAR-10'.)"
    )


def open_split(name: str, split: str, data_dir: str):
    """``tfds.data_source`` for one split, or ``DatasetNotPreparedError``."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
        n = len(source)
    except Exception as e:  # noqa: BLE001 - any failure to open means "not prepared"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        first = first.split(" Possible root causes")[0]  # TFDS's own advice does not apply
        raise DatasetNotPreparedError(
            f"{how_to_prepare(name, data_dir)}\n(TFDS said: {type(e).__name__}: {first})"
        ) from e
    if n == 0:
        raise DatasetNotPreparedError(f"{name}:{split} is empty. {how_to_prepare(name, data_dir)}")
    return source


def default_workers() -> int:
    return max(1, min(64, 2 * (os.cpu_count() or 1)))


class _ThreadedSource:
    """Common parts: the TFDS source, a lazily started thread pool, chunked parallel map."""

    def __init__(self, source, *, train: bool, dtype: str = "float32", workers: int = 0):
        self.source, self.train = source, train
        self.dtype = DTYPES[dtype]
        self.workers = workers if workers > 0 else default_workers()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.source)

    def _map_chunks(self, fn, n: int, min_chunk: int = 1) -> None:
        """Call fn(lo, hi) over [0, n) in chunks on the pool (inline if one chunk)."""
        chunks = max(1, min(self.workers * 4, n // max(1, min_chunk)))
        bounds = np.linspace(0, n, chunks + 1).astype(int)
        spans = [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
        if len(spans) <= 1 or self.workers == 1:
            for lo, hi in spans:
                fn(lo, hi)
            return
        with self._pool_lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.workers, thread_name_prefix="noise_scale-data"
                )
        for f in [self._pool.submit(fn, lo, hi) for lo, hi in spans]:
            f.result()

    def _read(self, index) -> dict:
        return self.source[int(index)]

    def _check(self, indices, positions):
        indices = np.asarray(indices, np.int64).reshape(-1)
        if self.train:
            if positions is None:
                raise ValueError("a training batch needs the stream positions of its examples.")
            positions = np.asarray(positions, np.int64).reshape(-1)
            if positions.shape != indices.shape:
                raise ValueError(f"{len(indices)} indices but {len(positions)} positions.")
        return indices, positions

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


class ImageNetSource(_ThreadedSource):
    """ImageNet examples, decoded and cropped to ``image_size`` on every read."""

    def __init__(self, source, *, train: bool, image_size: int = 224, dtype: str = "float32",
                 workers: int = 0):
        super().__init__(source, train=train, dtype=dtype, workers=workers)
        self.image_size = image_size

    def get_batch(self, indices, positions=None, seed: int = 0) -> dict:
        indices, positions = self._check(indices, positions)
        n, s = len(indices), self.image_size
        out = np.empty((n, s, s, 3), self.dtype)
        labels = np.empty((n,), np.int32)
        u = pp.uniforms(seed, positions, pp.IMAGENET_UNIFORMS) if self.train else None

        def work(lo, hi):
            crops = np.empty((hi - lo, s, s, 3), np.uint8)
            for k in range(lo, hi):
                ex = self._read(indices[k])
                if self.train:
                    crops[k - lo] = pp.imagenet_train(ex["image"], u[k], s)
                else:
                    crops[k - lo] = pp.imagenet_eval(ex["image"], s)
                labels[k] = ex["label"]
            pp.normalize(crops, pp.IMAGENET_MEAN, pp.IMAGENET_STD, self.dtype, out=out[lo:hi])

        self._map_chunks(work, n)
        return {"input": out, "label": labels}


class Cifar10Source(_ThreadedSource):
    """CIFAR-10 examples; decoded images are cached in memory after their first read."""

    def __init__(self, source, *, train: bool, dtype: str = "float32", workers: int = 0):
        super().__init__(source, train=train, dtype=dtype, workers=workers)
        n = len(source)
        self._images = np.zeros((n, 32, 32, 3), np.uint8)
        self._labels = np.zeros((n,), np.int32)
        self._cached = np.zeros((n,), bool)

    def _fill(self, indices: np.ndarray) -> None:
        missing = np.unique(indices[~self._cached[indices]])
        if not len(missing):
            return

        def work(lo, hi):
            for i in missing[lo:hi]:
                ex = self._read(i)
                self._images[i] = pp.as_rgb(ex["image"])
                self._labels[i] = ex["label"]
                self._cached[i] = True  # after the image: a reader never sees a half row

        self._map_chunks(work, len(missing), min_chunk=64)

    def get_batch(self, indices, positions=None, seed: int = 0) -> dict:
        indices, positions = self._check(indices, positions)
        self._fill(indices)
        n = len(indices)
        out = np.empty((n, 32, 32, 3), self.dtype)
        u = pp.uniforms(seed, positions, pp.CIFAR_UNIFORMS) if self.train else None

        def work(lo, hi):
            images = self._images[indices[lo:hi]]
            if self.train:
                images = pp.pad_crop_flip(images, u[lo:hi])
            pp.normalize(images, pp.CIFAR10_MEAN, pp.CIFAR10_STD, self.dtype, out=out[lo:hi])

        self._map_chunks(work, n, min_chunk=512)
        return {"input": out, "label": self._labels[indices].copy()}


def load(config) -> Dataset:
    """Train and eval sources of ``config.dataset`` (cifar10 | imagenet2012) from config.data_dir."""
    name = config.dataset
    if name not in SPLITS:
        raise ValueError(f"tfds_data loads cifar10 or imagenet2012, not {name!r}.")
    size = int(config.get("image_size", 224 if name == "imagenet2012" else 32))
    workers = int(config.get("data_workers", 0))
    if name == "cifar10" and size != 32:
        raise ValueError(
            f"config.image_size={size}, but CIFAR-10 is trained at its native 32x32; "
            "set --config.image_size=32 (configs/cifar10_wrn16_4.py does)."
        )
    if name == "imagenet2012" and size < 32:
        raise ValueError(f"config.image_size={size} is too small for ResNet-50; use >= 32 (224).")
    train_split, eval_split = SPLITS[name]
    train_src = open_split(name, train_split, config.data_dir)
    eval_src = open_split(name, eval_split, config.data_dir)
    try:
        num_classes = int(train_src.dataset_info.features["label"].num_classes)
    except (AttributeError, KeyError, TypeError):
        num_classes = NUM_CLASSES[name]
    if name == "imagenet2012":
        kw = dict(image_size=size, dtype=config.dtype, workers=workers)
        train, eval_ = ImageNetSource(train_src, train=True, **kw), ImageNetSource(
            eval_src, train=False, **kw
        )
    else:
        kw = dict(dtype=config.dtype, workers=workers)
        train, eval_ = Cifar10Source(train_src, train=True, **kw), Cifar10Source(
            eval_src, train=False, **kw
        )
    return Dataset(train=train, eval=eval_, num_classes=num_classes,
                   input_shape=(size, size, 3), name=name)
