"""TFDS image-classification datasets (ImageNet, CIFAR-10, CIFAR-100, ...) from ArrayRecord files.

``tfds.data_source`` gives random access by example index to a dataset that was
prepared with ``--file_format=array_record`` (locally or on a GCS bucket); no
TensorFlow is needed to read it (TFDS parses the records and decodes the images
with NumPy and OpenCV or PIL). The sources here implement
``noise_scale.data.sampler.Source``: ``get_batch(indices, positions, seed)``
reads, decodes and augments the examples and returns ``{"input": (B, H, W, 3)
uint8, "label": (B,) int32}``: uint8 is a quarter of float32's host→device bytes,
and the per-channel normalisation (``Dataset.normalization``) runs inside the
compiled step (``noise_scale.models.NormalizedInput``). Augmentation is a pure
function of (seed, position) (see ``preprocess.uniforms``), so the batches do not
depend on the worker count, the process count or where a run was resumed.

Two kinds of dataset, told apart by the image feature's shape:
- *small* (one fixed size up to 64x64: CIFAR-10/100, SVHN, ...): decoded images
  are kept in memory after their first read (150 MB for CIFAR's training split),
  so a batch is a gather plus a vectorised pad-crop-flip, in threads;
- *large* (any other, e.g. ImageNet): the undecoded bytes are read
  (``tfds.decode.SkipDecoding``) and each example is decoded only as far as its
  random-resized crop needs (``preprocess.decode_crop_resize``). Training
  examples are decoded in worker processes (``noise_scale.data.workers``, grain);
  evaluation and single batches in host threads.

A dataset that is missing or was prepared in another format raises
``DatasetNotPreparedError`` (a ``ValueError``) that says how to prepare it. The
split evaluated on is a labelled one, checked at load (``eval_split``).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import threading

import numpy as np
from etils import epath

from noise_scale.data import Dataset, eval_split
from noise_scale.data import preprocess as pp
from noise_scale.errors import ConfigError, SetupError

# Per-channel pixel statistics (0-255) of the shipped datasets; others are computed.
KNOWN_STATS = {"imagenet2012": (pp.IMAGENET_MEAN, pp.IMAGENET_STD),
               "cifar10": (pp.CIFAR10_MEAN, pp.CIFAR10_STD)}
SMALL = 64  # fixed-size images up to this side train at their native size
STATS_SAMPLE = 5000  # examples the computed statistics are taken over (evenly spaced)


class DatasetNotPreparedError(SetupError):
    """The TFDS dataset is not under ``config.data_dir`` as ArrayRecord files: bad input
    (exit 2 with the preparation steps), not a bug."""


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
        f"Random access needs the ArrayRecord format. A copy built as TFRecord converts in "
        f"place, with TensorFlow installed: tfds convert_format --dataset_version_dir="
        f"{target}/{name}/VERSION --out_file_format=array_record (VERSION: the directory "
        f"under {name}/). To build it instead:\n"
        f"{steps}\n(README: 'Preparing ImageNet and CIFAR-10'.)"
    )


def open_split(name: str, split: str, data_dir: str, undecoded: bool = False):
    """``tfds.data_source`` for one split, or ``DatasetNotPreparedError``.

    ``undecoded``: images as their encoded bytes, for a decode that knows the crop.
    A source that cannot hand them over (``tfds.testing.mock_data`` without
    TensorFlow, which encodes its random images with it) is read decoded instead.
    """
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
        n = len(source)
        if undecoded and n:
            raw = tfds.data_source(name, split=split, data_dir=data_dir or None, download=False,
                                   decoders={"image": tfds.decode.SkipDecoding()})
            try:
                raw[0]
                source = raw
            except ImportError:
                pass
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
    """Worker processes (and evaluation threads) when ``config.data_workers`` is 0."""
    return max(1, os.cpu_count() or 1)


class _ThreadedSource:
    """Common parts: the TFDS source, a lazily started thread pool, chunked parallel map."""

    def __init__(self, source, *, train: bool, workers: int = 0):
        self.source, self.train = source, train
        self.workers = workers if workers > 0 else default_workers()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.source)

    def __getstate__(self):  # sent to worker processes: everything but the thread pool
        return {**self.__dict__, "_pool": None, "_pool_lock": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _pool_lock=threading.Lock())

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
    """Images of any size, decoded and cropped to ``image_size`` on every read (uint8).

    ``example`` is one example's work, a function of (index, position, seed): the
    worker processes call it (``noise_scale.data.workers``), ``get_batch`` calls it
    in threads.
    """

    def __init__(self, source, *, train: bool, image_size: int = 224, workers: int = 0):
        super().__init__(source, train=train, workers=workers)
        self.image_size = image_size

    def example(self, index: int, position: int, seed: int) -> tuple[np.ndarray, int]:
        ex = self._read(index)
        if self.train:
            u = pp.uniforms(seed, [position], pp.IMAGENET_UNIFORMS)[0]
            return pp.imagenet_train(ex["image"], u, self.image_size), int(ex["label"])
        return pp.imagenet_eval(ex["image"], self.image_size), int(ex["label"])

    def get_batch(self, indices, positions=None, seed: int = 0) -> dict:
        indices, positions = self._check(indices, positions)
        n, s = len(indices), self.image_size
        out = np.empty((n, s, s, 3), np.uint8)
        labels = np.empty((n,), np.int32)
        pos = positions if self.train else np.zeros(n, np.int64)

        def work(lo, hi):
            for k in range(lo, hi):
                out[k], labels[k] = self.example(indices[k], pos[k], seed)

        self._map_chunks(work, n)
        return {"input": out, "label": labels}


class SmallImageSource(_ThreadedSource):
    """Fixed-size images (CIFAR-10, ...); decoded images are cached in memory after a read."""

    def __init__(self, source, *, train: bool, shape=(32, 32, 3), workers: int = 0):
        super().__init__(source, train=train, workers=workers)
        n = len(source)
        self._images = np.zeros((n, *shape), np.uint8)
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
        images = self._images[indices]
        if self.train:
            images = pp.pad_crop_flip(images, pp.uniforms(seed, positions, pp.CIFAR_UNIFORMS))
        return {"input": images, "label": self._labels[indices].copy()}


def image_features(name: str, info) -> tuple[tuple, int]:
    """(image shape, number of classes) of a TFDS dataset, or a ConfigError saying what is missing."""
    features = getattr(info, "features", None) or {}
    image, label = (features[k] if k in features else None for k in ("image", "label"))
    if image is None or label is None or not hasattr(label, "num_classes"):
        raise ConfigError(
            f"config.dataset={name!r} is not an image-classification dataset: it needs an "
            f"'image' and a ClassLabel 'label' feature, and has {sorted(features)}. Fix: pick "
            "another TFDS dataset, or load it yourself (--config.dataset=my_pkg.data:load; "
            "README 'Your own model or dataset').")
    return tuple(image.shape), int(label.num_classes)


def channel_stats(config, name: str, train) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel pixel mean and std: given, known, cached beside the data, or computed.

    Computed over ``STATS_SAMPLE`` evenly spaced training examples as the model sees
    them before augmentation (a small image whole, a large one's evaluation crop),
    then written to ``<data_dir>/<name>/noise_scale_channel_stats.json`` so that the
    next run (and every other host) reads them. A read-only data_dir only warns.
    """
    if tuple(config.get("image_mean", ())):
        return (np.asarray(config.image_mean, np.float32), np.asarray(config.image_std, np.float32))
    if name in KNOWN_STATS:
        return KNOWN_STATS[name]
    root = epath.Path(config.data_dir or os.path.expanduser("~/tensorflow_datasets"))
    path = root / name.split(":")[0] / "noise_scale_channel_stats.json"
    if path.exists():
        cached = json.loads(path.read_text())
        return np.asarray(cached["mean"], np.float32), np.asarray(cached["std"], np.float32)
    idx = np.unique(np.linspace(0, len(train) - 1, min(len(train), STATS_SAMPLE)).astype(int))
    if isinstance(train, ImageNetSource):
        pixels = ImageNetSource(train.source, train=False, image_size=train.image_size,
                                workers=train.workers).get_batch(idx)["input"]
    else:
        train._fill(idx)
        pixels = train._images[idx]
    pixels = pixels.reshape(-1, 3).astype(np.float64)
    mean, std = pixels.mean(0).astype(np.float32), pixels.std(0).astype(np.float32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist(),
                                    "examples": len(idx)}))
    except OSError as e:
        logging.warning("could not cache the channel statistics in %s (%s)", path, e)
    return mean, std


def _eval_source(config, info, num_classes: int, undecoded: bool = False):
    """The TFDS source of the split evaluated on: a labelled one (``eval_split.choose``)."""
    _, source = eval_split.choose(
        config.dataset, info, config.get("eval_split", ""), num_classes,
        lambda split: open_split(config.dataset, split, config.data_dir, undecoded))
    return source


def load(config) -> Dataset:
    """Train and eval sources of the TFDS dataset ``config.dataset`` from config.data_dir."""
    name = config.dataset
    train_src = open_split(name, "train", config.data_dir)
    info = train_src.dataset_info
    shape, num_classes = image_features(name, info)
    workers = int(config.get("data_workers", 0))
    small = None not in shape[:2] and max(shape[:2]) <= SMALL
    if small:
        size = shape[0]
        if int(config.image_size) != size or shape[0] != shape[1]:
            raise ConfigError(
                f"config.image_size={config.image_size}, but {name} is trained at its native "
                f"{shape[0]}x{shape[1]}; set --config.image_size={size}.")
        kw = dict(shape=(*shape[:2], 3), workers=workers)
        train = SmallImageSource(train_src, train=True, **kw)
        eval_ = SmallImageSource(_eval_source(config, info, num_classes), train=False, **kw)
    else:
        size = int(config.image_size)
        if size < 32:
            raise ConfigError(f"config.image_size={size} is too small; use >= 32 (224).")
        kw = dict(image_size=size, workers=workers)
        train = ImageNetSource(open_split(name, "train", config.data_dir, undecoded=True),
                               train=True, **kw)
        eval_ = ImageNetSource(_eval_source(config, info, num_classes, undecoded=True),
                               train=False, **kw)
    return Dataset(train=train, eval=eval_, num_classes=num_classes,
                   input_shape=(size, size, 3), name=name,
                   normalization=channel_stats(config, name, train))
