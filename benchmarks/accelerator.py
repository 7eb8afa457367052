"""One command for the first accelerator we get: every figure RESULTS.md lacks, in minutes.

On whatever JAX finds (all local devices), in one process, each section timed on its own:

1. ``resnet50``: the ResNet-50 train step at 224² in bfloat16, ours against the flax-style
   ``pmap`` step (``bench_resnet_step.measure``), at two per-device batches: images/s per
   device, compile times, FLOPs per step from XLA's cost analysis of our compiled step and
   the fraction of the device's peak bf16 FLOP/s (``PEAK_BF16``);
2. ``wrn16_4``: a two-stage WRN-16-4 run through the real loop
   (``train.train_and_evaluate`` with ``configs/cifar10_wrn16_4.py`` cut to two stages, on
   synthetic CIFAR-shaped data): examples/s per stage, two compiles, the stage change;
3. ``pipeline``: the host input pipeline's images/s with every core
   (``bench_pipeline.measure``; tf.data beside it only where TensorFlow is installed);
4. ``noise_scale``: what measuring the gradient noise scale costs, ResNet-50 at 224² in
   bfloat16 (``bench_noise_scale.measure``: the step measuring every 10th update ÷ the
   plain step, with the A/A control in the same rounds).

A section that fails records its error and the next one runs; the exit status is 1 if any
failed. One Markdown and one JSON file go to ``--out`` (default ``benchmarks/results/``),
and the Markdown is printed. ``--budget_s`` bounds the timed rounds (compiles are what
they are); ``--tiny`` runs everything at CPU sizes, to test the command, not to measure.

  # a GPU host, nothing installed (see `make accelerator-wheels`), from the repository root:
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \\
      PYTHONPATH=/tmp/site:. python3 benchmarks/accelerator.py --out=$OUT
  python benchmarks/accelerator.py --tiny        # here: the format, in a couple of minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
import traceback

import accelerator_report
from harness import ROOT, use_repository

# Dense (no sparsity) bf16 peak FLOP/s per device, keyed by jax.devices()[0].device_kind.
# A kind not listed here reports "peak unknown": never a guess.
PEAK_BF16 = {
    # NVIDIA H100 and H200 Tensor Core GPU datasheets: 1,979 TFLOPS bf16 "with sparsity"
    # for the SXM parts, half that dense. (An H200 NVL is rated 1,671 with sparsity; if it
    # reports the same name, its fraction of peak here is understated.)
    "NVIDIA H100 80GB HBM3": (989e12, "NVIDIA H100 datasheet (SXM, dense bf16)"),
    "NVIDIA H200": (989e12, "NVIDIA H200 datasheet (SXM, dense bf16)"),
    # NVIDIA A100 datasheet: 312 TFLOPS bf16 dense (624 with sparsity), every A100 form.
    "NVIDIA A100-SXM4-40GB": (312e12, "NVIDIA A100 datasheet (dense bf16)"),
    "NVIDIA A100-SXM4-80GB": (312e12, "NVIDIA A100 datasheet (dense bf16)"),
    "NVIDIA A100-PCIE-40GB": (312e12, "NVIDIA A100 datasheet (dense bf16)"),
    "NVIDIA A100 80GB PCIe": (312e12, "NVIDIA A100 datasheet (dense bf16)"),
    # Google Cloud TPU documentation (system architecture pages), bf16 per chip; JAX's
    # device kinds: v5e is "TPU v5 lite", v5p "TPU v5", v6e "TPU v6 lite".
    "TPU v4": (275e12, "Google Cloud TPU v4 docs"),
    "TPU v5 lite": (197e12, "Google Cloud TPU v5e docs"),
    "TPU v5": (459e12, "Google Cloud TPU v5p docs"),
    "TPU v5p": (459e12, "Google Cloud TPU v5p docs"),
    "TPU v6 lite": (918e12, "Google Cloud TPU v6e docs"),
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    image_size: int = 224
    dtype: str = "bfloat16"
    resnet_blocks: str = "3,4,6,3"  # bottleneck blocks per stage: ResNet-50
    batches_per_device: tuple[int, ...] = (128, 256)
    steps: int = 20  # per timed round
    rounds: int = 6
    warmup: int = 2
    wrn_examples: int = 8192  # synthetic training split; the eval split is a quarter of it
    wrn_batch: int = 128  # stage 1; stage 2 is 5x (the paper's factor)
    wrn_factor: float = 5.0
    wrn_epochs: float = 4.0  # the batch grows half-way
    wrn_ghost: int = 128
    pipeline_images: int = 512
    pipeline_size: int = 224
    pipeline_batch: int = 128
    pipeline_batches: int = 4
    pipeline_rounds: int = 8
    noise_model: str = "resnet50"
    noise_batch: int = 128  # per device
    noise_steps: int = 20  # per timed round: two measuring steps
    noise_rounds: int = 12


TINY = Sizes(image_size=32, dtype="float32", resnet_blocks="1,1,1,1", batches_per_device=(2, 4), steps=1, rounds=2,
             warmup=1, wrn_examples=64, wrn_batch=16, wrn_factor=2.0, wrn_epochs=2.0,
             wrn_ghost=16, pipeline_images=16, pipeline_size=64, pipeline_batch=8,
             pipeline_batches=1, pipeline_rounds=2, noise_model="mlp", noise_batch=8,
             noise_steps=10, noise_rounds=2)
# of --budget_s, for timing
SHARES = {"resnet50": 0.45, "wrn16_4": 0.2, "pipeline": 0.15, "noise_scale": 0.2}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"),
                   help="directory for the Markdown and JSON results")
    p.add_argument("--tiny", action="store_true",
                   help="CPU sizes (32² images, tiny batches, one step a round): tests the command")
    p.add_argument("--budget_s", type=float, default=240.0,
                   help="seconds for the timed rounds of all sections (compiles come on top)")
    p.add_argument("--sections", default=",".join(SHARES),
                   help=f"comma-separated subset of {','.join(SHARES)}")
    args = p.parse_args(argv)
    args.sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(args.sections) - set(SHARES))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {','.join(SHARES)}")
    return args


def peak_bf16(device_kind: str) -> tuple[float | None, str]:
    return PEAK_BF16.get(device_kind, (None, f"peak unknown for device kind {device_kind!r}"))


def environment(args) -> dict:
    import platform

    import flax
    import jax
    import jaxlib
    import optax

    d = jax.devices()
    return {"device_kind": d[0].device_kind, "devices": len(d), "backend": jax.default_backend(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "tiny": args.tiny, "budget_s": args.budget_s,
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": " ".join(["benchmarks/accelerator.py", *sys.argv[1:]])}


# ---------------------------------------------------------------------- sections
def resnet50(sizes: Sizes, deadline: float, log) -> dict:
    """Both steps at each per-device batch; FLOPs and the fraction of peak from ours."""
    import bench_resnet_step as bench
    import jax

    devices = jax.devices()
    peak, source = peak_bf16(devices[0].device_kind)
    rows, variables, args = [], None, None
    for i, b in enumerate(sizes.batches_per_device):
        args = bench.parse([f"--image_size={sizes.image_size}", f"--batch_per_device={b}",
                            f"--dtype={sizes.dtype}", f"--steps={sizes.steps}",
                            f"--rounds={sizes.rounds}", f"--warmup={sizes.warmup}",
                            f"--blocks={sizes.resnet_blocks}"])
        if variables is None:  # they do not depend on the batch
            variables = bench.init_variables(bench.make_model(args), args.image_size)
        now = time.perf_counter()
        r = bench.measure(args, devices, variables,
                          deadline=now + (deadline - now) / (len(sizes.batches_per_device) - i),
                          log=log)
        ours = r["timed"]["median"]["ours"] / len(devices)  # images/s per device
        flops = r["flops_per_step_per_device"]
        achieved = flops * ours / b if flops else None
        rows.append({**r, "ours_images_per_second_per_device": ours,
                     "pmap_images_per_second_per_device": r["timed"]["median"]["pmap"] / len(devices),
                     "flop_per_second_per_device": achieved,
                     "fraction_of_peak": achieved / peak if achieved and peak else None})
    return {"image_size": sizes.image_size, "dtype": sizes.dtype, "blocks": args.blocks,
            "ghost_batch_size": args.ghost_batch_size,
            "peak_bf16": peak, "peak_source": source, "rows": rows}


def wrn_config(sizes: Sizes, devices: int):
    """configs/cifar10_wrn16_4.py:increase_batch cut to two stages over the synthetic split."""
    from noise_scale import config_lib

    c = config_lib.load_config("cifar10_wrn16_4:increase_batch")
    c.dataset_size = sizes.wrn_examples
    c.ghost_batch_size = sizes.wrn_ghost
    c.eval_batch_size = max(sizes.wrn_examples // 8, devices)
    c.checkpoint_every_epochs = 0.0  # still saved at the stage change and at the end
    c.log_every_steps = 20
    s = c.schedule
    s.batch_size, s.factor, s.batch_multiple = sizes.wrn_batch, sizes.wrn_factor, devices
    s.total_epochs, s.boundaries = sizes.wrn_epochs, (sizes.wrn_epochs / 2,)
    return c


def synthetic_cifar(n: int, seed: int):
    """Random uint8-range images (32×32×3), normalised as the CIFAR-10 source does; 10 classes."""
    import numpy as np

    from noise_scale.data import ArraySource
    from noise_scale.data import preprocess as pp

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return ArraySource({"input": pp.normalize(images, pp.CIFAR10_MEAN, pp.CIFAR10_STD),
                        "label": rng.integers(0, 10, n).astype(np.int32)})


def wrn16_4(sizes: Sizes, deadline: float, log) -> dict:
    """The real loop over two batch sizes: one compile each, the stage in every record."""
    import jax

    from noise_scale import train
    from noise_scale.data import Dataset

    config = wrn_config(sizes, jax.device_count())
    dataset = Dataset(synthetic_cifar(config.dataset_size, 0),
                      synthetic_cifar(config.dataset_size // 4, 1), 10, (32, 32, 3),
                      "synthetic_cifar10")
    with tempfile.TemporaryDirectory(prefix="accelerator_wrn_") as workdir:
        t0 = time.perf_counter()
        records = train.train_and_evaluate(config, workdir, dataset=dataset)
        seconds = time.perf_counter() - t0
    stages = []
    for stage in sorted({r["stage"] for r in records}):
        last = [r for r in records if r["stage"] == stage][-1]  # the stage's steadiest window
        stages.append({k: last[k] for k in ("stage", "batch_size", "updates", "epoch",
                                            "examples_per_second", "compiles", "train_loss")})
    batches = [r["batch_size"] for r in records]
    return {"dataset_size": config.dataset_size, "epochs": config.schedule.total_epochs,
            "dtype": config.dtype, "ghost_batch_size": config.ghost_batch_size,
            "seconds": seconds, "records": records, "stages": stages,
            "compiles": records[-1]["compiles"],
            "checks": {"two compiles": records[-1]["compiles"] == 2,
                       "stage 0 then stage 1": [s["stage"] for s in stages] == [0, 1],
                       "batch grows once": len(set(batches)) == 2 and batches == sorted(batches)}}


def pipeline(sizes: Sizes, deadline: float, log) -> dict:
    import bench_pipeline as bench

    args = bench.parse([f"--image_size={sizes.pipeline_size}",
                        f"--batch_size={sizes.pipeline_batch}",
                        f"--batches={sizes.pipeline_batches}", f"--rounds={sizes.pipeline_rounds}",
                        f"--num_images={sizes.pipeline_images}", "--dtype=uint8"])
    return {"image_size": args.image_size, "batch_size": args.batch_size,
            **bench.measure(args, deadline=deadline, log=log)}


def noise_scale(sizes: Sizes, deadline: float, log) -> dict:
    import bench_noise_scale as bench
    import jax

    devices = jax.devices()
    args = bench.parse([f"--model={sizes.noise_model}", f"--devices={len(devices)}",
                        f"--batch_per_device={sizes.noise_batch}",
                        f"--image_size={sizes.image_size}", f"--dtype={sizes.dtype}",
                        f"--steps={sizes.noise_steps}", f"--rounds={sizes.noise_rounds}",
                        f"--warmup={sizes.warmup}"])
    r = bench.measure(args, devices, log=log, deadline=deadline)
    return {**r, "image_size": args.image_size, "dtype": args.dtype}


SECTIONS = {"resnet50": resnet50, "wrn16_4": wrn16_4, "pipeline": pipeline,
            "noise_scale": noise_scale}


def run_sections(args, done=lambda sections: None, log=print) -> list[dict]:
    """Each section in turn, its wall time and its result or error; a failure never stops the
    rest. ``done(sections so far)`` after each, so that a run cut short keeps what it measured."""
    sizes, start, share = (TINY if args.tiny else Sizes()), time.perf_counter(), 0.0
    out = []
    for name in args.sections:
        share += SHARES[name] / sum(SHARES[s] for s in args.sections)
        log(f"== {name} ==")
        t0 = time.perf_counter()
        entry = {"name": name, "status": "ok", "error": None, "result": None}
        try:
            entry["result"] = SECTIONS[name](sizes, start + share * args.budget_s, log)
            failed = [k for k, ok in entry["result"].get("checks", {}).items() if not ok]
            if failed:
                entry["status"], entry["error"] = "failed", "check failed: " + ", ".join(failed)
        except Exception as e:  # noqa: BLE001 - recorded; the next section still runs
            entry["status"] = "failed"
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()[-4000:]
            log(entry["traceback"])
        entry["seconds"] = time.perf_counter() - t0
        log(f"== {name}: {entry['status']} in {entry['seconds']:.1f}s ==")
        out.append(entry)
        done(out)
    return out


def main(argv=None) -> int:
    args = parse(argv)
    use_repository()
    t0 = time.perf_counter()
    report = {"environment": environment(args), "sections": [], "complete": False}

    def save(sections):  # after every section: a run cut short keeps what it measured
        report.update(sections=sections, seconds=time.perf_counter() - t0,
                      failed=[s["name"] for s in sections if s["status"] != "ok"])
        return accelerator_report.write(report, args.out)

    run_sections(args, save)
    report["complete"] = True
    md_path, json_path = save(report["sections"])
    print(open(md_path).read())
    print(f"wrote {md_path} and {json_path}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
