"""TFDS-backed ImageNet / CIFAR-10 sources (through ``tfds.testing.mock_data``) and preprocessing.

``mock_data`` replaces the ArrayRecord reader of ``tfds.data_source`` with random
examples (deterministic per index; ImageNet's have random small sizes), so the
whole path from ``load_dataset(config)`` to a batch runs without the data or
TensorFlow.
"""

import math

import ml_collections
import ml_dtypes
import numpy as np
import pytest
import tensorflow_datasets as tfds

from noise_scale.data import load_dataset
from noise_scale.data import preprocess as pp
from noise_scale.data.tfds_data import DatasetNotPreparedError, ImageNetSource

N_MOCK = 48


def config(dataset, image_size=None, dtype="float32", data_dir="", workers=2):
    return ml_collections.ConfigDict({
        "dataset": dataset, "data_dir": data_dir, "dtype": dtype, "data_workers": workers,
        "image_size": image_size or (224 if dataset == "imagenet2012" else 32),
    })


@pytest.fixture
def mock():
    with tfds.testing.mock_data(num_examples=N_MOCK):
        yield


def batch(src, idx, pos=None, seed=0):
    idx = np.asarray(idx)
    return src.get_batch(idx, np.arange(len(idx)) if pos is None else np.asarray(pos), seed)


# The datasets through tfds.data_source ----------------------------------------------------


def test_imagenet_batches(mock):
    ds = load_dataset(config("imagenet2012", image_size=64))
    assert ds.num_classes == 1000 and ds.input_shape == (64, 64, 3) and ds.name == "imagenet2012"
    assert len(ds.train) == N_MOCK and len(ds.eval) == N_MOCK
    b = batch(ds.train, [0, 5, 7, 5])
    assert b["input"].shape == (4, 64, 64, 3) and b["input"].dtype == np.uint8  # to the device
    assert b["label"].shape == (4,) and b["label"].dtype == np.int32
    assert np.all((b["label"] >= 0) & (b["label"] < 1000))
    # Normalised inside the step with ImageNet's statistics: (0 − mean)/std ≥ −2.2, ... ≤ 2.7.
    np.testing.assert_array_equal(ds.normalization[0], pp.IMAGENET_MEAN)
    x = pp.normalize(b["input"], *ds.normalization)
    assert -2.2 < x.min() and x.max() < 2.7 and abs(x.mean()) < 1.5
    # The same example at two positions: two different crops, one label.
    assert b["label"][1] == b["label"][3]
    assert not np.array_equal(b["input"][1], b["input"][3])
    e = ds.eval.get_batch(np.arange(6), None, 0)
    assert e["input"].shape == (6, 64, 64, 3) and e["label"].dtype == np.int32


def test_imagenet_is_a_function_of_seed_and_position(mock):
    ds = load_dataset(config("imagenet2012", image_size=32))
    idx, pos = np.array([3, 1, 4, 1, 5, 9]), np.array([100, 101, 102, 103, 104, 105])
    a = batch(ds.train, idx, pos, seed=7)
    assert np.array_equal(a["input"], batch(ds.train, idx, pos, seed=7)["input"])
    # Any split of the batch (processes, resume) and any thread count: the same examples.
    half = batch(ds.train, idx[3:], pos[3:], seed=7)
    assert np.array_equal(a["input"][3:], half["input"])
    one_thread = load_dataset(config("imagenet2012", image_size=32, workers=1))
    assert np.array_equal(a["input"], batch(one_thread.train, idx, pos, seed=7)["input"])
    # Other positions or another seed: other crops.
    assert not np.array_equal(a["input"], batch(ds.train, idx, pos + 6, seed=7)["input"])
    assert not np.array_equal(a["input"], batch(ds.train, idx, pos, seed=8)["input"])


def test_imagenet_eval_is_deterministic_and_bfloat16(mock):
    ds = load_dataset(config("imagenet2012", image_size=32, dtype="bfloat16"))
    a = ds.eval.get_batch(np.arange(8), None, 0)
    b = ds.eval.get_batch(np.arange(8), np.arange(50, 58), 3)  # positions and seed ignored
    assert a["input"].dtype == np.uint8  # whatever config.dtype: the model casts on the device
    assert np.array_equal(a["input"], b["input"])
    # The model normalises the uint8 pixels inside the step, into config.dtype.
    from noise_scale.models import NormalizedInput

    norm = NormalizedInput(None, *ds.normalization, dtype=ml_dtypes.bfloat16)
    x = np.asarray(norm._normalize(a["input"]))
    assert x.dtype == ml_dtypes.bfloat16
    np.testing.assert_allclose(x.astype(np.float32), pp.normalize(a["input"], *ds.normalization),
                               atol=0.02)


def test_cifar10_batches(mock):
    ds = load_dataset(config("cifar10"))
    assert ds.num_classes == 10 and ds.input_shape == (32, 32, 3) and ds.name == "cifar10"
    idx = np.arange(16)
    b = batch(ds.train, idx)
    assert b["input"].shape == (16, 32, 32, 3) and b["input"].dtype == np.uint8
    assert b["label"].dtype == np.int32 and np.all((b["label"] >= 0) & (b["label"] < 10))
    x = pp.normalize(b["input"], *ds.normalization)
    assert -2.1 < x.min() and x.max() < 2.2
    assert np.array_equal(b["input"], batch(ds.train, idx)["input"])  # now from the cache
    assert not np.array_equal(b["input"], batch(ds.train, idx, np.arange(16, 32))["input"])
    # Eval: no augmentation, so it equals the raw image.
    e = ds.eval.get_batch(idx, None, 0)
    raw = np.stack([ds.eval.source[int(i)]["image"] for i in idx])
    np.testing.assert_array_equal(e["input"], raw)
    np.testing.assert_array_equal(e["label"], [ds.eval.source[int(i)]["label"] for i in idx])
    # A training crop is a shifted (maybe flipped) copy of the raw image.
    raw_train = np.stack([ds.train.source[int(i)]["image"] for i in idx])
    train_px = b["input"].astype(np.float32)
    padded = np.pad(raw_train, ((0, 0), (4, 4), (4, 4), (0, 0)), mode="reflect")
    for k in range(16):
        found = any(
            np.allclose(train_px[k], w[:, ::f], atol=1e-3)
            for dy in range(9) for dx in range(9) for f in (1, -1)
            for w in [padded[k, dy : dy + 32, dx : dx + 32]]
        )
        assert found, k


def test_cifar10_needs_32x32(mock):
    with pytest.raises(ValueError, match="image_size=32"):
        load_dataset(config("cifar10", image_size=24))


@pytest.mark.parametrize(
    "dataset,needles",
    [
        ("imagenet2012", ["ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "manual",
                          "tfds build imagenet2012", "--file_format=array_record", "gs://",
                          "tfds convert_format --dataset_version_dir="]),
        ("cifar10", ["tfds build cifar10", "--file_format=array_record",
                     "--out_file_format=array_record"]),
    ],
)
def test_missing_dataset_says_how_to_prepare_it(tmp_path, dataset, needles):
    with pytest.raises(DatasetNotPreparedError) as info:
        load_dataset(config(dataset, data_dir=str(tmp_path)))
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert f"config.data_dir={tmp_path}" in msg
    for needle in needles:
        assert needle in msg, needle
    assert list(tmp_path.iterdir()) == []  # nothing downloaded, nothing written


# The split evaluated on -------------------------------------------------------------------


class _Split:
    """A mock TFDS split: ``n`` random images labelled ``i % num_classes``, or all ``label``
    (ImageNet's ``test`` split, built from ILSVRC2012_img_test.tar, is labelled -1)."""

    def __init__(self, info, name, n, label=None):
        self.dataset_info, self.name, self.n, self.label = info, name, n, label
        self.reads = 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        features = self.dataset_info.features
        shape = [d or 40 for d in features["image"].shape]  # ImageNet's sizes vary: 40x40
        image = np.random.default_rng(i).integers(0, 256, shape, dtype=np.uint8)
        label = i % features["label"].num_classes if self.label is None else self.label
        return {"image": image, "label": np.int64(label)}


def splits_mock(sizes: dict, labels: dict, opened: list):
    """``tfds.testing.mock_data`` whose splits have the given sizes and (constant) labels."""

    def as_data_source(builder, split, decoders=None, **kw):
        opened.append(split)
        return _Split(builder.info, split, sizes[split], labels.get(split))

    return tfds.testing.mock_data(as_data_source_fn=as_data_source)


IMAGENET_WITH_TEST_TAR = {"train": N_MOCK, "validation": 40, "test": 300}


@pytest.mark.parametrize("dataset", ["imagenet2012", "cifar10"])
def test_an_unlabelled_test_split_is_skipped_for_validation(dataset, caplog):
    opened = []
    with splits_mock(IMAGENET_WITH_TEST_TAR, {"test": -1}, opened):
        ds = load_dataset(config(dataset, image_size=32))
    # Evaluation reads the 40 validation examples, every label a class; test was only sampled.
    assert len(ds.eval) == 40 and "test" in opened
    labels = ds.eval.get_batch(np.arange(40), None, 0)["label"]
    assert labels.tolist() == [i % ds.num_classes for i in range(40)]
    assert "evaluating on its 'validation' split: its 'test' split is not labelled (label -1 " \
           "among the first 256)" in caplog.text


def test_a_labelled_test_split_is_still_preferred():
    opened = []
    with splits_mock(IMAGENET_WITH_TEST_TAR, {}, opened):
        ds = load_dataset(config("cifar10"))
    assert len(ds.eval) == 300 and "validation" not in opened  # CIFAR's standard: test


def test_the_label_check_reads_only_the_start_of_a_split():
    from noise_scale.data import eval_split

    with tfds.testing.mock_data():
        info = tfds.builder("imagenet2012").info
    source = _Split(info, "test", 300, label=-1)
    assert len(eval_split.unlabelled(source, 1000)) == eval_split.LABEL_SAMPLE == 256
    assert source.reads == 256  # of 300: a prefix, not a scan


def test_an_unlabelled_split_asked_for_is_refused():
    from noise_scale.errors import ConfigError

    c = config("imagenet2012", image_size=32)
    c.eval_split = "test"
    with splits_mock(IMAGENET_WITH_TEST_TAR, {"test": -1}, []), \
            pytest.raises(ConfigError) as info:
        load_dataset(c)
    msg = str(info.value)
    assert msg.startswith("config.eval_split='test' is invalid: imagenet2012's 'test' split is "
                          "not labelled (ImageNet's test images were released without labels")
    assert "ILSVRC2012_img_test.tar" in msg and "labels such as -1 are not classes 0-999" in msg
    assert "Fix: --config.eval_split=validation" in msg
    c.eval_split = "validation"  # the fix
    with splits_mock(IMAGENET_WITH_TEST_TAR, {"test": -1}, []):
        assert len(load_dataset(c).eval) == 40


# Preprocessing on synthetic images --------------------------------------------------------


def test_uniforms_are_counter_based():
    u = pp.uniforms(3, np.arange(1000), 5)
    assert u.shape == (1000, 5) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.02 and abs(u.std() - math.sqrt(1 / 12)) < 0.02
    np.testing.assert_array_equal(pp.uniforms(3, [17, 400], 5), u[[17, 400]])
    assert not np.array_equal(pp.uniforms(4, [17], 5), u[[17]])
    assert np.corrcoef(u[:, 0], u[:, 1])[0, 1] < 0.1
    assert pp.uniforms(-1, [2**40], 2).shape == (1, 2)


def test_random_resized_crop_box_stays_inside_with_allowed_shapes():
    rng = np.random.default_rng(0)
    areas = []
    for h, w in [(375, 500), (500, 333), (64, 64), (20, 300), (300, 20)]:
        for _ in range(200):
            top, left, ch, cw = pp.random_resized_crop_box(h, w, rng.random(4 * pp.CROP_ATTEMPTS))
            assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
            assert ch > 0 and cw > 0
            if (h, w) == (375, 500):
                assert 3 / 4 - 0.02 <= cw / ch <= 4 / 3 + 0.02
                areas.append(ch * cw / (h * w))
    assert 0.07 < min(areas) < 0.2 and max(areas) > 0.8


def test_random_resized_crop_falls_back_to_a_centred_crop():
    never = np.ones(4 * pp.CROP_ATTEMPTS) * 0.9999  # area ~100 %, ratio 4/3: never fits a 20x300
    assert pp.random_resized_crop_box(300, 20, never) == ((300 - 27) // 2, 0, 27, 20)
    assert pp.random_resized_crop_box(100, 100, never) == (0, 0, 100, 100)


def test_center_crop_box():
    assert pp.center_crop_box(256, 256) == (16, 16, 224, 224)
    assert pp.center_crop_box(256, 512, fraction=224 / 256) == (16, 144, 224, 224)


def test_crop_resize_and_flip_on_a_ramp():
    img = np.zeros((40, 60, 3), np.uint8)
    img[..., 0] = np.arange(60)[None, :] * 4  # red grows left to right
    img[..., 1] = np.arange(40)[:, None] * 6  # green grows top to bottom
    out = pp.crop_resize(img, (10, 20, 20, 20), 20)  # same size: an exact crop
    np.testing.assert_array_equal(out, img[10:30, 20:40])
    big = pp.crop_resize(img, (0, 0, 40, 60), 16)
    assert big.shape == (16, 16, 3) and big.dtype == np.uint8
    assert np.all(np.diff(big[8, :, 0].astype(int)) >= 0) and np.all(np.diff(big[:, 8, 1].astype(int)) >= 0)
    u = np.full(pp.IMAGENET_UNIFORMS, 0.5)
    u[-1] = 0.2  # flip
    flipped = pp.imagenet_train(img, u, 16)
    u[-1] = 0.8
    straight = pp.imagenet_train(img, u, 16)
    np.testing.assert_array_equal(flipped, straight[:, ::-1])
    assert np.all(np.diff(straight[8, :, 0].astype(int)) >= 0)
    ev = pp.imagenet_eval(img, 16)
    np.testing.assert_array_equal(ev, pp.crop_resize(img, pp.center_crop_box(40, 60), 16))
    gray = pp.imagenet_eval(img[..., :1], 16)
    assert gray.shape == (16, 16, 3) and np.array_equal(gray[..., 0], gray[..., 2])


def test_pad_crop_flip():
    imgs = np.arange(2 * 32 * 32 * 3, dtype=np.int64).reshape(2, 32, 32, 3).astype(np.uint8)
    u = np.array([[0.5, 0.5, 0.9], [0.0, 0.999, 0.1]])  # centre, no flip; top-right, flip
    out = pp.pad_crop_flip(imgs, u)
    np.testing.assert_array_equal(out[0], imgs[0])  # offset 4 of 8 is the original
    padded = np.pad(imgs[1], ((4, 4), (4, 4), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(out[1], padded[0:32, 8:40][:, ::-1])


def test_normalize():
    x = np.full((1, 2, 2, 3), 128, np.uint8)
    y = pp.normalize(x, pp.IMAGENET_MEAN, pp.IMAGENET_STD)
    np.testing.assert_allclose(y[0, 0, 0], (128 - pp.IMAGENET_MEAN) / pp.IMAGENET_STD, rtol=1e-6)
    assert pp.normalize(x, pp.IMAGENET_MEAN, pp.IMAGENET_STD, ml_dtypes.bfloat16).dtype == ml_dtypes.bfloat16


def test_sources_need_positions_for_training():
    src = ImageNetSource([{"image": np.zeros((8, 8, 3), np.uint8), "label": 1}], train=True,
                         image_size=8, workers=1)
    with pytest.raises(ValueError, match="positions"):
        src.get_batch(np.array([0]), None, 0)
    assert src.get_batch(np.array([0]), np.array([0]), 0)["label"].tolist() == [1]


# Any TFDS image-classification dataset -----------------------------------------------------


def test_a_second_tfds_dataset_with_computed_and_cached_statistics(mock, tmp_path):
    ds = load_dataset(config("cifar100", data_dir=str(tmp_path)))
    assert ds.num_classes == 100 and ds.input_shape == (32, 32, 3) and ds.name == "cifar100"
    assert len(ds.train) == N_MOCK and len(ds.eval) == N_MOCK
    b = batch(ds.train, np.arange(8))
    assert b["input"].shape == (8, 32, 32, 3) and b["input"].dtype == np.uint8
    assert np.all((b["label"] >= 0) & (b["label"] < 100))
    # Statistics computed over the training images (all 48 here), then cached beside the data.
    images = np.stack([pp.as_rgb(ds.train.source[i]["image"]) for i in range(N_MOCK)])
    mean, std = ds.normalization
    np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, images.reshape(-1, 3).std(0), rtol=1e-5)
    cache = tmp_path / "cifar100" / "noise_scale_channel_stats.json"
    cache.write_text('{"mean": [1, 2, 3], "std": [4, 5, 6]}')  # the next load reads it
    np.testing.assert_array_equal(load_dataset(config("cifar100", data_dir=str(tmp_path)))
                                  .normalization[1], [4, 5, 6])
    given = config("cifar100", data_dir=str(tmp_path))
    given.image_mean, given.image_std = (10.0, 20.0, 30.0), (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(load_dataset(given).normalization[0], [10, 20, 30])
    with pytest.raises(ValueError, match="native 32x32; set --config.image_size=32"):
        load_dataset(config("cifar100", image_size=224, data_dir=str(tmp_path)))


def test_a_dataset_without_image_and_label_is_refused(mock):
    with pytest.raises(ValueError, match="needs an 'image' and a ClassLabel 'label' feature"):
        load_dataset(config("imdb_reviews"))


def test_jpeg_bytes_are_decoded_only_as_far_as_the_crop_needs():
    import io

    from PIL import Image

    yy, xx = np.mgrid[0:480, 0:640]
    img = np.stack([xx * 255 // 640, yy * 255 // 480, (xx + yy) * 255 // 1120], -1)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=95)
    data = buf.getvalue()
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    for box in [(0, 0, 480, 640), (100, 200, 300, 300), (10, 20, 64, 64)]:
        fast = pp.decode_crop_resize(data, lambda h, w, b=box: b, 32)  # draft at 1/8, 1/4, 1
        full = pp.crop_resize(decoded, box, 32)
        assert fast.shape == (32, 32, 3) and fast.dtype == np.uint8
        assert np.abs(fast.astype(int) - full).mean() < 3, box  # the same picture
    u = pp.uniforms(0, [5], pp.IMAGENET_UNIFORMS)[0]
    assert np.abs(pp.imagenet_train(data, u, 32).astype(int)
                  - pp.imagenet_train(decoded, u, 32)).mean() < 3


def test_simplejpeg_decodes_as_pil_does_and_hands_pil_what_it_cannot(monkeypatch):
    """The workers' decoder (simplejpeg, libjpeg-turbo) against PIL's path: the same crops at
    the same DCT scales, pixels within one grey level (chroma upsampling rounds apart);
    CMYK JPEGs and PNGs go to PIL."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(img).resize((500, 380), Image.BICUBIC))

    def encode(image, fmt, **kw):
        buf = io.BytesIO()
        image.save(buf, format=fmt, **kw)
        return buf.getvalue()

    data = encode(Image.fromarray(img), "JPEG", quality=90)
    boxes = [(0, 0, 380, 500), (50, 60, 300, 260), (7, 9, 120, 96)]
    for size in (224, 96, 32):  # scales 1, 1/2 (300/96 = 3.1), 1/8 and 1/4 (380/32)
        for box in boxes:
            fast = pp.decode_crop_resize(data, lambda h, w, b=box: b, size)
            with monkeypatch.context() as m:
                m.setattr(pp, "simplejpeg", None)
                slow = pp.decode_crop_resize(data, lambda h, w, b=box: b, size)
            assert fast.shape == slow.shape == (size, size, 3), (size, box)
            assert np.abs(fast.astype(int) - slow).max() <= 1, (size, box)
    for other in (encode(Image.fromarray(img).convert("CMYK"), "JPEG"),
                  encode(Image.fromarray(img), "PNG")):
        out = pp.decode_crop_resize(other, lambda h, w: (0, 0, h, w), 64)
        assert out.shape == (64, 64, 3) and np.abs(out.astype(int) - pp.crop_resize(
            img, (0, 0, 380, 500), 64)).mean() < 8  # decoded by PIL, the same picture


# Worker processes (grain) ------------------------------------------------------------------


def test_worker_processes_cut_the_same_batches_for_any_process_count_and_resume(mock):
    """Decoded in 2 grain worker processes: identical to the in-process batches, per process
    and after a resume in the middle of a stage."""
    from noise_scale.data import Sampler, workers
    from noise_scale.schedule import Schedule, Stage

    ds = load_dataset(config("imagenet2012", image_size=32))
    schedule = Schedule(N_MOCK, (Stage(0, 1.0, 4, 0.1, 0.9), Stage(1.0, 2.0, 8, 0.1, 0.9)))
    steps = list(schedule.steps(12, None))[:8]  # B = 4 then 8, across the epoch boundary
    for count in (1, 2):
        for index in range(count):
            sampler = Sampler(ds.train, schedule, seed=3, process_index=index,
                              process_count=count)
            want = [sampler.batch_at(p, b) for p, b in steps]
            got = list(workers.batches(sampler, steps, workers=2 if count == 1 else 0))
            assert [(h.position, h.batch_size) for h in got] == steps
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g.data["input"], w.data["input"])
                np.testing.assert_array_equal(g.data["label"], w.data["label"])
    # The sampler's own iterator uses them for a training split.
    sampler = Sampler(ds.train, schedule, seed=3)
    it = sampler.iterate(20, prefetch=1)
    first = next(it)
    it.close()
    np.testing.assert_array_equal(first.data["input"], sampler.batch_at(20, 4).data["input"])


def test_batches_of_any_size_are_cut_from_the_workers_chunks_in_order():
    """Chunks of CHUNK examples (a shorter last one) cut into batches that straddle them."""
    from noise_scale.data import workers

    total, sizes = 25, [3, 8, 1, 13]
    chunks = iter([{"input": np.arange(s, min(s + workers.CHUNK, total))[:, None],
                    "label": np.arange(s, min(s + workers.CHUNK, total), dtype=np.int32)}
                   for s in range(0, total, workers.CHUNK)])
    got = list(workers.cut(chunks, sizes))
    assert [len(b["label"]) for b in got] == sizes
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in got]), np.arange(total))
    np.testing.assert_array_equal(np.concatenate([b["input"] for b in got])[:, 0],
                                  np.arange(total))
