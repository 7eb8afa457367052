"""Every benchmark script runs, at tiny sizes, so a change that breaks one fails here.

The smoke tests call each script's ``main(argv)`` in this process (the suite's 8 CPU
devices; ``--devices=1`` where a script takes it) and check that every figure exists and
is finite and positive — never how fast anything is.
"""

from __future__ import annotations

import io
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_pipeline  # noqa: E402
import bench_resnet_step  # noqa: E402
import bench_step_overhead  # noqa: E402


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def test_bench_resnet_step_smoke():
    r = bench_resnet_step.main(["--image_size=16", "--batch_per_device=2", "--dtype=float32",
                                "--devices=1", "--steps=1", "--rounds=2", "--warmup=1",
                                "--blocks=1", "--ghost_batch_size=2"])
    t = r["timed"]
    assert t["rounds"] == 2 and positive(*t["median"].values(), *t["ratios"], t["ratio"])
    assert positive(r["flops_per_step_per_device"])
    ours, pmap = r["first"]["ours"], r["first"]["pmap"]
    assert ours["compiles"] == pmap["compiles"] == 1 and r["compiles_while_timing"] == 0
    assert ours["losses"][0] == pytest.approx(pmap["losses"][0], rel=1e-4)  # the same math


def test_bench_step_overhead_smoke():
    # The MLP (ghost batch norm too) compiles in half the CNN's time; the script is the same.
    r = bench_step_overhead.main(["--rounds=1", "--steps=2", "--batch_size=16", "--model=mlp"])
    for what in ("step", "input"):
        assert positive(*r[what].values())


def block(monkeypatch, *modules):
    """Make ``bench_pipeline.optional`` find none of ``modules`` (as on a host without them)."""
    real = bench_pipeline.optional
    monkeypatch.setattr(bench_pipeline, "optional",
                        lambda name: None if name in modules else real(name))


@pytest.mark.parametrize("absent,reads", [
    (("tensorflow",), "ArrayRecord"),  # this venv: TFDS and array_record, no TensorFlow
    (("tensorflow", "tensorflow_datasets", "array_record"), "in memory"),  # a bare GPU host
])
def test_bench_pipeline_smoke_without_tensorflow(monkeypatch, absent, reads):
    block(monkeypatch, *absent)
    r = bench_pipeline.main(["--image_size=32", "--batch_size=4", "--batches=1", "--rounds=2",
                             "--num_images=8", "--workers=2"])
    assert not r["tf_data"] and reads in r["ours_source"]
    assert list(r["timed"]["median"]) == ["ours"] and positive(*r["timed"]["rates"]["ours"])


def test_in_memory_jpegs_decode_as_tfds_does():
    """What a host without TFDS times decodes to the pixels TFDS's records give."""
    jpegs = bench_pipeline.synthetic_jpegs(2)
    features = bench_pipeline.image_features()
    for i, (j, _) in enumerate(jpegs):
        record = features.serialize_example({"image": io.BytesIO(j), "label": i})
        want = features.deserialize_example_np(record)["image"]
        np.testing.assert_array_equal(bench_pipeline.JpegSource(jpegs)[i]["image"], want)
