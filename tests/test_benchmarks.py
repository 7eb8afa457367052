"""Every benchmark script runs, at tiny sizes, so a change that breaks one fails here.

The smoke tests call each script's ``main(argv)`` in this process (the suite's 8 CPU
devices; ``--devices=1`` where a script takes it) and check that every figure exists and
is finite and positive — never how fast anything is. ``benchmarks/accelerator.py`` is run
end to end by the ``slow`` tests: with ``--tiny`` here, and in a venv that has only what a
bare GPU host has plus the wheels of ``make accelerator-wheels``.
"""

from __future__ import annotations

import glob
import importlib.metadata
import io
import json
import math
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import accelerator  # noqa: E402
import accelerator_report  # noqa: E402
import bench_noise_scale  # noqa: E402
import bench_pipeline  # noqa: E402
import bench_resnet_step  # noqa: E402
import bench_step_overhead  # noqa: E402

WHEELS = {"ml_collections-1.1.0", "tensorboardx-2.6.5", "grain-0.2.18", "cloudpickle-3.1.3",
          "portpicker-1.6.0", "array_record-0.8.6", "simplejpeg-1.9.0"}  # name-version of each
ABSENT_ON_THE_GPU_HOST = ("ml_collections", "tensorboardX", "tensorflow", "tensorflow_datasets",
                          "mnist1d", "array_record")


def positive(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


@pytest.mark.slow  # a benchmark's smoke run (benchmarks are not the package)
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


@pytest.mark.slow  # a benchmark's smoke run (benchmarks are not the package)
def test_bench_step_overhead_smoke():
    # The MLP (ghost batch norm too) compiles in half the CNN's time; the script is the same.
    r = bench_step_overhead.main(["--rounds=1", "--steps=2", "--batch_size=16", "--model=mlp"])
    for what in ("step", "input"):
        assert positive(*r[what].values())


@pytest.mark.slow  # a benchmark's smoke run (benchmarks are not the package)
def test_bench_noise_scale_smoke():
    r = bench_noise_scale.main(["--model=mlp", "--devices=1", "--batch_per_device=8",
                                "--rounds=2", "--steps=1", "--warmup=1"])
    assert positive(r["ratio"], *r["interval"], *r["ratios"], *r["control"].values())
    assert r["interval"][0] <= r["ratio"] <= r["interval"][1]
    assert r["control"]["low"] <= r["control"]["ratio"] <= r["control"]["high"]


def block(monkeypatch, *modules):
    """Make ``bench_pipeline.optional`` find none of ``modules`` (as on a host without them)."""
    real = bench_pipeline.optional
    monkeypatch.setattr(bench_pipeline, "optional",
                        lambda name: None if name in modules else real(name))


@pytest.mark.parametrize("absent,reads", [
    (("tensorflow",), "ArrayRecord"),  # this venv: TFDS and array_record, no TensorFlow
    (("tensorflow", "tensorflow_datasets", "array_record"), "in memory"),  # a bare GPU host
])
@pytest.mark.slow  # a benchmark's smoke run (benchmarks are not the package)
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


def test_peak_table_knows_the_devices_it_names_and_guesses_none():
    assert accelerator.peak_bf16("NVIDIA H200")[0] == 989e12
    assert accelerator.peak_bf16("TPU v5 lite")[0] == 197e12
    peak, why = accelerator.peak_bf16("cpu")
    assert peak is None and "peak unknown" in why


@pytest.mark.slow  # a benchmark's smoke run (benchmarks are not the package)
def test_accelerator_records_a_failed_section_and_runs_the_next(tmp_path, monkeypatch):
    def broken(sizes, deadline, log):
        raise RuntimeError("this section broke")

    monkeypatch.setitem(accelerator.SECTIONS, "resnet50", broken)
    block(monkeypatch, "tensorflow")
    assert accelerator.main(["--tiny", f"--out={tmp_path}", "--sections=resnet50,pipeline"]) == 1
    (md,), (js,) = glob.glob(f"{tmp_path}/*.md"), glob.glob(f"{tmp_path}/*.json")
    report = json.load(open(js))
    assert [(s["name"], s["status"]) for s in report["sections"]] == [
        ("resnet50", "failed"), ("pipeline", "ok")]
    assert "RuntimeError: this section broke" in report["sections"][0]["error"]
    assert all(positive(s["seconds"]) for s in report["sections"])
    text = open(md).read()
    assert "this section broke" in text and "#### Host input pipeline" in text


def registry_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=10).close()
        return True
    except OSError:
        return False


def make_wheels(directory) -> None:
    """``make accelerator-wheels`` into ``directory``; skips only if the registry is unreachable."""
    here = f"{sys.version_info.major}.{sys.version_info.minor}"  # grain's wheel is binary
    r = subprocess.run(["make", "-s", "accelerator-wheels", f"WHEELS_DIR={directory}",
                        f"PYTHON={sys.executable}", f"ACCELERATOR_PYTHON={here}"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode and not registry_reachable():
        pytest.skip("the package registry (pypi.org) is unreachable: cannot download the wheels")
    assert r.returncode == 0, r.stderr


def test_accelerator_wheels_are_the_listed_ones_and_small(tmp_path):
    make_wheels(tmp_path / "whl")
    files = os.listdir(tmp_path / "whl")
    assert {"-".join(f.split("-")[:2]) for f in files} == WHEELS
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"  # binary ones for this Python
    assert all("py3-none-any" in f or f"-{here}-" in f for f in files), files
    assert sum(os.path.getsize(tmp_path / "whl" / f) for f in files) < 64 * 2**20


def check_report(out_dir, tiny: bool = True) -> dict:
    """The JSON and Markdown of one run: every section ok, numbers finite, two WRN compiles."""
    (md,), (js,) = glob.glob(f"{out_dir}/*.md"), glob.glob(f"{out_dir}/*.json")
    report = json.load(open(js))
    assert report["environment"]["tiny"] is tiny and report["complete"] and not report["failed"]
    sections = {s["name"]: s for s in report["sections"]}
    assert list(sections) == list(accelerator.SECTIONS)
    assert all(s["status"] == "ok" and positive(s["seconds"]) for s in sections.values())
    for row in sections["resnet50"]["result"]["rows"]:
        assert positive(row["ours_images_per_second_per_device"],
                        row["pmap_images_per_second_per_device"], row["timed"]["ratio"],
                        row["flops_per_step_per_device"], row["flop_per_second_per_device"])
    wrn = sections["wrn16_4"]["result"]
    assert wrn["compiles"] == 2 and all(wrn["checks"].values())
    assert [s["stage"] for s in wrn["stages"]] == [0, 1]
    assert all(positive(s["examples_per_second"]) for s in wrn["stages"])
    assert positive(*sections["pipeline"]["result"]["timed"]["median"].values())
    text = open(md).read()
    for title in accelerator_report.TITLES.values():
        assert f"#### {title}" in text
    return report


def one_device_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # a host's own devices
    return {**env, **extra}


@pytest.mark.slow
def test_accelerator_tiny_end_to_end(tmp_path):
    r = subprocess.run([sys.executable, "benchmarks/accelerator.py", "--tiny",
                        f"--out={tmp_path}"], cwd=ROOT, env=one_device_env(PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    check_report(tmp_path)


@pytest.mark.slow
def test_accelerator_runs_with_only_the_wheels(tmp_path):
    """A venv with what the GPU host has (jax, flax, optax, orbax, ...) and none of
    ``ABSENT_ON_THE_GPU_HOST``, plus the wheel folder: the command a GPU host will run."""
    make_wheels(tmp_path / "whl")
    venv, py = tmp_path / "venv", str(tmp_path / "venv" / "bin" / "python")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pinned = [f"{p}=={importlib.metadata.version(p)}" for p in
              ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")]
    r = subprocess.run([py, "-m", "pip", "install", "-q", *pinned, "etils", "absl-py", "chex",
                        "pillow", "matplotlib", "protobuf"], capture_output=True, text=True)
    if r.returncode and not registry_reachable():
        pytest.skip("the package registry (pypi.org) is unreachable: cannot build the venv")
    assert r.returncode == 0, r.stderr[-3000:]
    probe = f"import importlib.util as u; print([m for m in {ABSENT_ON_THE_GPU_HOST!r} if u.find_spec(m)])"
    assert subprocess.run([py, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
    site = tmp_path / "site"
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                    str(site), *glob.glob(f"{tmp_path}/whl/*.whl")], check=True)
    r = subprocess.run([py, "benchmarks/accelerator.py", "--tiny", f"--out={tmp_path}/out"],
                       cwd=ROOT, env=one_device_env(PYTHONPATH=f"{site}:."),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    check_report(tmp_path / "out")
