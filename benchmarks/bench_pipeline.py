"""Host input pipeline: noise_scale's ImageNet source against a tf.data pipeline doing the same work.

One synthetic ImageNet-like split of JPEG images (ImageNet-like sizes, shorter side
300-500 px, ~0.7 bytes/pixel at quality 90, ~120 KiB each) is written twice, as the same
serialized TFDS examples (``{"image": JPEG bytes, "label"}``):

- an ArrayRecord file, read as in training: the sampler's stream of (index, position)
  pairs, each example read through ``array_record``'s ``ArrayRecordDataSource`` and TFDS's
  ``deserialize_example_np`` as undecoded JPEG bytes (``SkipDecoding``), decoded only as
  far as the crop needs (PIL ``draft``), Inception crop (8-100 % of the area, aspect
  3/4-4/3), resize and flip, uint8, in grain worker processes (``--workers``, 0 = one per
  CPU; ``--sweep=1,2,4`` for images/s against the worker count);
- a TFRecord file, read by tf.data as flax ``examples/imagenet`` reads TFDS's TFRecords:
  ``TFRecordDataset`` → parse → ``tf.io.decode_jpeg`` → ``sample_distorted_bounding_box``
  crop (same area/aspect ranges, 10 attempts) → ``tf.image.resize`` (bilinear,
  antialiased, as PIL's) → ``random_flip_left_right`` → normalise → cast → ``batch`` →
  ``prefetch``, ``num_parallel_calls=AUTOTUNE``; ``--tf_decode=fused`` uses
  ``tf.image.decode_and_crop_jpeg`` instead (flax's choice: decodes only the crop).

Ours reads a random permutation (random access is what the sampler needs); tf.data reads
the file in order. Both produce NumPy batches of (B, S, S, 3) ``--dtype`` images and int32
labels. After a warm-up pass the timed rounds alternate (ours, tf, tf, ours, ...); each
round of either side starts a fresh stream (ours: new worker processes; tf.data: a new
iterator), discards one batch before timing and stops after, so neither side's
background workers run during the other's round. Reported: the median images/s of each
and the median per-round-pair ratio ours ÷ tf.data (goal ≥ 1.10 on a quiet machine,
≥ 0.90 under ``--load``).

Our side reads an ArrayRecord file through TFDS's deserialisation when
``tensorflow_datasets`` and ``array_record`` are installed; without them (a bare
accelerator host) it reads the same JPEGs from memory and decodes them as TFDS would
(OpenCV if installed, else PIL): the decode, crop, resize, flip and normalise are the
same, the record reading is not. tf.data needs TensorFlow (only for this benchmark:
``pip install -e '.[bench]'``, tensorflow-cpu); without it only our side runs.

  python benchmarks/bench_pipeline.py                        # 224², uint8, B = 128
  python benchmarks/bench_pipeline.py --tf_decode=fused --repeats=3 --load=2 --sweep=1,2
  python benchmarks/bench_pipeline.py --batch_size=64 --batches=4 --rounds=8
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

from harness import interleaved, use_repository


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="batches per timed round")
    p.add_argument("--rounds", type=int, default=8, help="timed rounds of each pipeline")
    p.add_argument("--num_images", type=int, default=512, help="images in the synthetic split")
    p.add_argument("--dtype", default="uint8", choices=["uint8", "bfloat16", "float32"],
                   help="what each side delivers (ours always hands uint8 to the device)")
    p.add_argument("--load", type=int, default=0,
                   help="start this many busy processes for the run: a reproducible load")
    p.add_argument("--workers", type=int, default=0,
                   help="ours: decode worker processes (config.data_workers; 0 = one per CPU)")
    p.add_argument("--sweep", default="",
                   help="comma-separated worker counts (e.g. 1,2,4): one measurement each, "
                        "images/s against workers (overrides --workers)")
    p.add_argument("--repeats", type=int, default=1,
                   help="independent measurements (fresh files, warm-up, rounds) per worker "
                        "count; the summary gives the median of their ratios")
    p.add_argument("--tf_decode", default="full", choices=["full", "fused"],
                   help="tf.data: tf.io.decode_jpeg then crop (full), or decode_and_crop_jpeg")
    p.add_argument("--data_dir", default="",
                   help="where the temporary files go (default: the system's temp dir)")
    return p.parse_args(argv)


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


def optional(module: str):
    """The module, or None where it is not installed (TensorFlow, TFDS, array_record, cv2)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def decoder_name() -> str:
    return "OpenCV" if optional("cv2") else "PIL (OpenCV not installed)"


class JpegSource:
    """JPEG bytes in memory, decoded on every read as TFDS's ``Image`` feature decodes them."""

    def __init__(self, jpegs):
        self.jpegs = [j for j, _ in jpegs]

    def __len__(self):
        return len(self.jpegs)

    def __getitem__(self, i):
        import numpy as np

        cv2 = optional("cv2")
        if cv2 is not None:  # as tfds: imdecode unchanged, then BGR → RGB
            image = cv2.imdecode(np.frombuffer(self.jpegs[i], np.uint8), cv2.IMREAD_UNCHANGED)
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else image
        else:
            from PIL import Image

            with Image.open(io.BytesIO(self.jpegs[i])) as im:
                image = np.asarray(im, np.uint8)
        return {"image": image, "label": i % 1000}


class ArrayRecordSource:
    """What tfds.data_source returns, minus the builder: records → TFDS deserialisation."""

    def __init__(self, path, features):
        from array_record.python import array_record_data_source

        self._records = array_record_data_source.ArrayRecordDataSource([path])
        self._features = features

    def __len__(self):
        return len(self._records)

    def __getitem__(self, i):  # the image as its JPEG bytes, as tfds.decode.SkipDecoding gives
        import tensorflow_datasets as tfds

        return self._features.deserialize_example_np(
            self._records[i], decoders={"image": tfds.decode.SkipDecoding()})


def image_features():
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict({
        "image": tfds.features.Image(encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=1000),
    })


def ours_source(args, jpegs, data_dir):
    """``ImageNetSource`` over an ArrayRecord file (TFDS installed) or over memory: (source, how)."""
    from noise_scale.data import tfds_data

    if optional("tensorflow_datasets") and optional("array_record"):
        from array_record.python import array_record_module

        features = image_features()
        path = os.path.join(data_dir, "synthetic-train.array_record-00000-of-00001")
        writer = array_record_module.ArrayRecordWriter(path, "group_size:1")  # as TFDS writes
        for i, (j, _) in enumerate(jpegs):
            writer.write(features.serialize_example({"image": io.BytesIO(j), "label": i % 1000}))
        writer.close()
        raw, how = ArrayRecordSource(path, features), "ArrayRecord + TFDS deserialisation"
    else:
        raw, how = JpegSource(jpegs), "JPEGs in memory (tensorflow_datasets/array_record absent)"
    source = tfds_data.ImageNetSource(raw, train=True, image_size=args.image_size,
                                      workers=args.workers)
    return source, f"{how}, undecoded bytes decoded by simplejpeg (PIL for other formats) in worker processes"


def tf_dataset(args, jpegs, data_dir, tf):
    """The tf.data pipeline over a TFRecord file of the same examples."""
    from noise_scale.data import preprocess as pp

    tf.config.set_visible_devices([], "GPU")
    path = os.path.join(data_dir, "synthetic-train.tfrecord-00000-of-00001")
    with tf.io.TFRecordWriter(path) as w:
        for i, (j, _) in enumerate(jpegs):  # the tf.train.Example TFDS writes for these features
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[j])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 1000])),
            })).SerializeToString())
    s = args.image_size
    mean, std = tf.constant(pp.IMAGENET_MEAN), tf.constant(pp.IMAGENET_STD)
    tf_dtype = {"bfloat16": tf.bfloat16, "float32": tf.float32, "uint8": tf.uint8}[args.dtype]
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}

    def preprocess(serialized):
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
        if args.dtype == "uint8":  # what ours hands the device (normalised in the step)
            img = tf.cast(tf.clip_by_value(tf.round(img), 0, 255), tf.uint8)
        else:
            img = tf.cast((img - mean) / std, tf_dtype)
        return img, tf.cast(ex["label"], tf.int32)

    auto = tf.data.AUTOTUNE
    return (tf.data.TFRecordDataset(path).repeat().map(preprocess, num_parallel_calls=auto)
            .batch(args.batch_size, drop_remainder=True).prefetch(auto))


def check(args, images, labels) -> None:
    import ml_dtypes
    import numpy as np

    s = args.image_size
    want = {"bfloat16": ml_dtypes.bfloat16, "float32": np.float32, "uint8": np.uint8}[args.dtype]
    assert images.shape == (args.batch_size, s, s, 3), images.shape
    assert images.dtype == want and labels.dtype == np.int32, (images.dtype, labels.dtype)


def rounds(args, jpegs, data_dir, tf, log=print) -> dict:
    """({name: round function → images/s}, our source, how it reads): ours and, with
    TensorFlow, tf.data; each checked (shape, dtype) and warmed up by one pass."""

    from noise_scale.data import Sampler, workers
    from noise_scale.schedule import Schedule, Stage

    source, how = ours_source(args, jpegs, data_dir)
    n, b = len(jpegs), args.batch_size
    # The training path: the sampler's stream, examples decoded in grain worker processes.
    # Each round starts a fresh stream where the last one ended and closes it after (its
    # workers stop), as each tf.data round starts a fresh iterator: neither side's workers
    # decode ahead between rounds or run during the other side's round.
    schedule = Schedule(n, (Stage(0, 10_000.0, b, 0.1, 0.0),))
    sampler = Sampler(source, schedule, seed=0)
    position = [0]

    def stream(batches: int):
        start = position[0]
        position[0] += batches * b
        return workers.batches(sampler, schedule.steps(start, start + batches * b),
                               source.workers)

    def ours_round():
        s = stream(args.batches + 1)
        a = next(s).data  # the fresh stream's start-up (workers spawning), untimed
        t0 = time.perf_counter()
        for _ in range(args.batches):
            next(s)
        rate = args.batches * b / (time.perf_counter() - t0)
        s.close()
        return rate, a

    _, a = ours_round()
    check(args, a["input"], a["label"])
    for _ in range(max(1, n // (b * args.batches))):  # one pass: page cache
        ours_round()
    log(f"ours: {source.workers} worker processes, {how}")
    out = {"ours": lambda: ours_round()[0]}
    if tf is not None:
        ds = tf_dataset(args, jpegs, data_dir, tf)
        it = ds.as_numpy_iterator()
        check(args, *next(it))
        for _ in range(max(1, n // b)):  # one pass: thread pools, autotune
            next(it)
        del it

        def tf_round():
            it = ds.as_numpy_iterator()
            next(it)  # the fresh iterator's start-up, untimed
            t0 = time.perf_counter()
            for _ in range(args.batches):
                next(it)
            return args.batches * b / (time.perf_counter() - t0)

        out["tf.data"] = tf_round
        log(f"tf.data: AUTOTUNE ({args.tf_decode} decode)")
    return out, source, how


def measure(args, deadline: float | None = None, log=print) -> dict:
    """Write the synthetic split, warm up, time interleaved rounds: every figure as a dict."""
    import numpy as np

    use_repository()
    tf = optional("tensorflow")
    if tf is None:
        log("TensorFlow is not installed: timing our side only (for the tf.data comparison: "
            "pip install -e '.[bench]', or pip install tensorflow-cpu)")
    t0 = time.perf_counter()
    jpegs = synthetic_jpegs(args.num_images)
    px = np.mean([p for _, p in jpegs])
    log(f"{args.num_images} JPEGs, mean {np.mean([len(j) for j, _ in jpegs]) / 1024:.0f} KiB, "
        f"{px / 1e3:.0f} kpixel; made in {time.perf_counter() - t0:.1f}s")
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_", dir=args.data_dir or None) as d:
        fns, source, how = rounds(args, jpegs, d, tf, log)
        log(f"{args.batch_size} x {args.image_size}² {args.dtype} per batch, "
            f"{args.batches} batches per round")
        timed = interleaved(fns, args.rounds, deadline=deadline, log=log)
        source.close()
    return {"ours_source": how, "workers": source.workers, "cpus": os.cpu_count(),
            "tf_data": tf is not None, "timed": timed}


def _spin():
    while True:
        pass


def start_load(n: int) -> list:
    """``n`` busy processes (one core each), so "under load" is the same on every run."""
    import multiprocessing

    procs = [multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
             for _ in range(n)]
    for p in procs:
        p.start()
    return procs


def one_line(args, r) -> str:
    med, t = r["timed"]["median"], r["timed"]
    line = f"load {args.load}, workers {r['workers']}: median images/s: ours {med['ours']:.1f}"
    if r["tf_data"]:
        line += (f", tf.data {med['tf.data']:.1f}; ratio ours/tf.data: median of rounds "
                 f"{t['ratio']:.3f} (min {min(t['ratios']):.3f}, max {max(t['ratios']):.3f})")
    return line


def main(argv=None):
    """Every (worker count, repeat) measured under one load; one line each, then a summary.

    Returns the last measurement's figures, with ``all`` holding every (workers, figures).
    """
    import statistics

    args = parse(argv)
    if args.data_dir:
        os.makedirs(args.data_dir, exist_ok=True)
    counts = [int(w) for w in args.sweep.split(",")] if args.sweep else [args.workers]
    load = start_load(args.load)
    results = []
    try:
        for w in counts:
            for _ in range(max(1, args.repeats)):
                r = measure(argparse.Namespace(**{**vars(args), "workers": w}))
                print(one_line(args, r), flush=True)
                results.append((w, r))
    finally:
        for p in load:
            p.terminate()
    for w in counts:
        rs = [r for c, r in results if c == w]
        ours = statistics.median(r["timed"]["median"]["ours"] for r in rs)
        line = f"summary, load {args.load}, workers {rs[0]['workers']}: ours {ours:.1f} images/s"
        if rs[0]["tf_data"]:
            ratios = [r["timed"]["ratio"] for r in rs]
            line += (f"; ratio ours/tf.data, median of {len(rs)} run(s): "
                     f"{statistics.median(ratios):.3f} (runs: "
                     f"{', '.join(f'{x:.3f}' for x in ratios)}); goal >= 1.10 quiet, "
                     ">= 0.90 under load")
        print(line)
    return {**results[-1][1], "all": results}


if __name__ == "__main__":
    main()
