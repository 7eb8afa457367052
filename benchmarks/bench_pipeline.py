"""Host input pipeline: noise_scale's ImageNet source against a tf.data pipeline doing the same work.

One synthetic ImageNet-like split of JPEG images (ImageNet-like sizes, shorter side
300-500 px, ~0.7 bytes/pixel at quality 90, ~120 KiB each) is written twice, as the same
serialized TFDS examples (``{"image": JPEG bytes, "label"}``):

- an ArrayRecord file, read by ``noise_scale.data.tfds_data.ImageNetSource`` exactly as
  in training: ``get_batch(indices, positions, seed)`` reads each record through
  ``array_record``'s ``ArrayRecordDataSource`` and TFDS's ``deserialize_example_np``
  (what ``tfds.data_source`` does; it decodes with OpenCV if installed, else PIL),
  then the Inception crop (8-100 % of the area, aspect 3/4-4/3), resize, flip and
  per-channel normalisation, in its thread pool (``--workers``, 0 = the default
  min(64, 2·CPUs));
- a TFRecord file, read by tf.data as flax ``examples/imagenet`` reads TFDS's TFRecords:
  ``TFRecordDataset`` → parse → ``tf.io.decode_jpeg`` → ``sample_distorted_bounding_box``
  crop (same area/aspect ranges, 10 attempts) → ``tf.image.resize`` (bilinear,
  antialiased, as PIL's) → ``random_flip_left_right`` → normalise → cast → ``batch`` →
  ``prefetch``, ``num_parallel_calls=AUTOTUNE``; ``--tf_decode=fused`` uses
  ``tf.image.decode_and_crop_jpeg`` instead (flax's choice: decodes only the crop).

Ours reads a random permutation (random access is what the sampler needs); tf.data reads
the file in order. Both produce NumPy batches of (B, S, S, 3) ``--dtype`` images and int32
labels. After a warm-up pass the timed rounds alternate (ours, tf, tf, ours, ...); each tf.data
round starts a fresh iterator and discards one batch before timing, so neither side's
background threads run during the other's round. Reported: the median images/s of each
and the median per-round-pair ratio ours ÷ tf.data (goal ≥ 1.00).

Needs TensorFlow (only for this benchmark): ``pip install -e '.[bench]'`` (tensorflow-cpu).

  python benchmarks/bench_pipeline.py                        # 224², bfloat16, B = 128
  python benchmarks/bench_pipeline.py --batch_size=64 --batches=4 --rounds=8
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="batches per timed round")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds of each pipeline")
    p.add_argument("--num_images", type=int, default=512, help="images in the synthetic split")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--workers", type=int, default=0,
                   help="ours: decode threads (config.data_workers; 0 = min(64, 2·CPUs))")
    p.add_argument("--tf_decode", default="full", choices=["full", "fused"],
                   help="tf.data: tf.io.decode_jpeg then crop (full), or decode_and_crop_jpeg")
    p.add_argument("--data_dir", default="", help="where to write the files (default: a temp dir)")
    return p.parse_args()


def synthetic_jpegs(n: int, seed: int = 0):
    """ImageNet-like JPEGs: random size and aspect, colour fields plus texture and grain.

    About 0.7 bytes per pixel at quality 90, ~120 KiB an image: ImageNet's training
    JPEGs average ~110 KB at ~400x350.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        short = int(rng.integers(300, 501))
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        h, w = (short, int(short * aspect)) if aspect >= 1 else (int(short / aspect), short)
        base = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), np.float32)
        img += rng.normal(0, 40, (h, w, 1)).astype(np.float32)  # texture (luma)
        img += rng.normal(0, 10, img.shape).astype(np.float32)  # grain
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append((buf.getvalue(), h * w))
    return out


def main():
    args = parse()
    try:
        import tensorflow as tf
    except ImportError:
        print("bench_pipeline.py compares against tf.data and needs TensorFlow, which is not "
              "installed.\nInstall it (only for this benchmark) with:\n"
              "  pip install -e '.[bench]'      # or: pip install tensorflow-cpu",
              file=sys.stderr)
        sys.exit(2)
    if args.data_dir:
        os.makedirs(args.data_dir, exist_ok=True)
        bench(args, args.data_dir, tf)
    else:  # the two files take ~2 x 60 MiB at the defaults; removed afterwards
        with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as data_dir:
            bench(args, data_dir, tf)


def bench(args, data_dir: str, tf):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import ml_dtypes
    import numpy as np
    import tensorflow_datasets as tfds
    from array_record.python import array_record_data_source, array_record_module

    from noise_scale.data import preprocess as pp
    from noise_scale.data import tfds_data

    tf.config.set_visible_devices([], "GPU")
    try:
        import cv2  # noqa: F401

        decoder = "OpenCV"
    except ImportError:
        decoder = "PIL (OpenCV not installed)"

    # ---- the data, twice ----------------------------------------------------------------
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=1000),
    })
    t0 = time.perf_counter()
    jpegs = synthetic_jpegs(args.num_images)
    records = [features.serialize_example({"image": io.BytesIO(j), "label": i % 1000})
               for i, (j, _) in enumerate(jpegs)]
    ar_path = os.path.join(data_dir, "synthetic-train.array_record-00000-of-00001")
    tfr_path = os.path.join(data_dir, "synthetic-train.tfrecord-00000-of-00001")
    writer = array_record_module.ArrayRecordWriter(ar_path, "group_size:1")  # as TFDS writes
    for r in records:
        writer.write(r)
    writer.close()
    with tf.io.TFRecordWriter(tfr_path) as w:
        for r in records:
            w.write(r)
    kb = np.mean([len(j) for j, _ in jpegs]) / 1024
    px = np.mean([p for _, p in jpegs])
    print(f"{args.num_images} JPEGs, mean {kb:.0f} KiB, {px / 1e3:.0f} kpixel "
          f"({np.mean([len(j) for j, _ in jpegs]) / px:.2f} B/pixel); written in "
          f"{time.perf_counter() - t0:.1f}s to {data_dir}")

    # ---- ours ---------------------------------------------------------------------------
    class ArrayRecordSource:
        """What tfds.data_source returns, minus the builder: records → TFDS deserialisation."""

        def __init__(self, path):
            self._records = array_record_data_source.ArrayRecordDataSource([path])

        def __len__(self):
            return len(self._records)

        def __getitem__(self, i):
            return features.deserialize_example_np(self._records[i])

    source = tfds_data.ImageNetSource(ArrayRecordSource(ar_path), train=True,
                                      image_size=args.image_size, dtype=args.dtype,
                                      workers=args.workers)
    n, b = args.num_images, args.batch_size
    order = np.random.default_rng(0).permutation(n)
    position = [0]

    def ours_batch():
        pos = np.arange(position[0], position[0] + b)
        position[0] += b
        return source.get_batch(order[pos % n], pos, seed=0)

    # ---- tf.data ------------------------------------------------------------------------
    s = args.image_size
    mean, std = tf.constant(pp.IMAGENET_MEAN), tf.constant(pp.IMAGENET_STD)
    tf_dtype = tf.bfloat16 if args.dtype == "bfloat16" else tf.float32
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}

    def tf_preprocess(serialized):
        ex = tf.io.parse_single_example(serialized, spec)
        shape = tf.io.extract_jpeg_shape(ex["image"])
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            shape, tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), min_object_covered=0.0,
            aspect_ratio_range=pp.CROP_RATIO, area_range=pp.CROP_SCALE,
            max_attempts=pp.CROP_ATTEMPTS, use_image_if_no_bounding_boxes=True)
        if args.tf_decode == "fused":
            y, x, _ = tf.unstack(begin)
            h, w, _ = tf.unstack(size)
            img = tf.image.decode_and_crop_jpeg(ex["image"], tf.stack([y, x, h, w]), channels=3)
        else:
            img = tf.slice(tf.io.decode_jpeg(ex["image"], channels=3), begin, size)
        img = tf.image.resize(img, [s, s], method="bilinear", antialias=True)
        img = tf.image.random_flip_left_right(img)
        img = tf.cast((img - mean) / std, tf_dtype)
        return img, tf.cast(ex["label"], tf.int32)

    auto = tf.data.AUTOTUNE
    ds = (tf.data.TFRecordDataset(tfr_path).repeat()
          .map(tf_preprocess, num_parallel_calls=auto)
          .batch(b, drop_remainder=True).prefetch(auto))

    # ---- check, warm up, time -----------------------------------------------------------
    a = ours_batch()
    it = ds.as_numpy_iterator()
    t_img, t_lab = next(it)
    want = ml_dtypes.bfloat16 if args.dtype == "bfloat16" else np.float32
    assert a["input"].shape == t_img.shape == (b, s, s, 3), (a["input"].shape, t_img.shape)
    assert a["input"].dtype == want and t_img.dtype == want, (a["input"].dtype, t_img.dtype)
    assert a["label"].dtype == np.int32 and t_lab.dtype == np.int32
    for _ in range(max(1, n // b)):  # one pass of each: page cache, thread pools, autotune
        ours_batch()
        next(it)
    del it
    print(f"ours: {source.workers} threads, decode by TFDS with {decoder}; tf.data: AUTOTUNE "
          f"({args.tf_decode} decode); {b} x {s}x{s} {args.dtype} per batch, "
          f"{args.batches} batches per round")

    def ours_round():
        t0 = time.perf_counter()
        for _ in range(args.batches):
            ours_batch()
        return args.batches * b / (time.perf_counter() - t0)

    def tf_round():
        it = ds.as_numpy_iterator()
        next(it)  # the fresh iterator's start-up, untimed
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        rate = args.batches * b / (time.perf_counter() - t0)
        del it
        return rate

    rounds = {"ours": ours_round, "tf.data": tf_round}
    rates = {"ours": [], "tf.data": []}
    ratios = []
    for r in range(args.rounds):
        this = {}
        for name in (("ours", "tf.data") if r % 2 == 0 else ("tf.data", "ours")):
            this[name] = rounds[name]()
            rates[name].append(this[name])
        ratios.append(this["ours"] / this["tf.data"])
        print(f"round {r + 1}: ours {this['ours']:7.1f} img/s   tf.data {this['tf.data']:7.1f} "
              f"img/s   ratio {ratios[-1]:.3f}")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"median images/s: ours {med['ours']:.1f}, tf.data {med['tf.data']:.1f}; ratio "
          f"ours/tf.data: median of rounds {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f}); goal >= 1.00")
    source.close()


if __name__ == "__main__":
    main()
