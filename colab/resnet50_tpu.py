# ---
# jupyter:
#   accelerator: TPU
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/noise-scale/noise_scale/blob/main/colab/resnet50_tpu.ipynb)
#
# # ResNet-50 on ImageNet on a TPU, with a batch-size schedule
#
# On Colab choose *Runtime → Change runtime type → TPU*. A Colab TPU runtime is a TPU VM:
# JAX finds the TPU by itself (no `setup_tpu()` call; that helper is obsolete). The
# notebook finds the devices, plans the paper's ResNet-50 schedules
# (`configs/imagenet_resnet50.py`) for them, checks that one micro-batch fits in a
# device's memory, says how to prepare ImageNet, trains (and resumes), and reads the
# metrics.
#
# Without ImageNet (`DATA_DIR = ""`, the default) the same cells run on
# `tfds.testing.mock_data`: random images at 32×32, a two-stage schedule whose batch
# doubles after the first epoch, a few steps of the real ResNet-50 on any runtime (CI
# runs it so on a CPU).

# %%
# Install on Colab; anywhere else this cell does nothing (there: pip install -e '.[dev]').
# It clones the repository and installs the package from the clone with pip's own rule: a
# package the runtime already has is kept when it meets the floor in pyproject.toml (and
# upgraded only when older); only what the runtime lacks is added. jax and jaxlib stay at
# the versions this runtime ships, because a Colab TPU or GPU runtime matches them to its
# accelerator plugin and a replaced jax would run on the CPU only; so the runtime's JAX must
# be at least MIN_JAX, and the cell stops saying what to do when it is not. If pip upgrades
# a package the runtime had already imported, Colab asks for a restart: restart, then run
# from the top (this cell then finds the package and does nothing).
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys

REPOSITORY = "https://github.com/noise-scale/noise_scale"
MIN_JAX = "0.7"  # pyproject.toml's floor (flax and optax need it)
try:
    import google.colab  # noqa: F401

    ON_COLAB = True
except ImportError:
    ON_COLAB = False
if ON_COLAB and importlib.util.find_spec("noise_scale") is None:
    jax_version = (importlib.metadata.version("jax")
                   if importlib.util.find_spec("jax") is not None else None)
    as_numbers = lambda v: tuple(int(n) for n in re.findall(r"\d+", v)[:3])
    if jax_version is not None and as_numbers(jax_version) < as_numbers(MIN_JAX):
        raise SystemExit(
            f"This runtime's JAX is {jax_version}; noise_scale needs jax>={MIN_JAX}. Choose "
            "the latest runtime version (Runtime > Change runtime type), or run "
            "pip install -U 'jax[tpu]' (TPU) or 'jax[cuda12]' (GPU), restart, and run again.")
    if not os.path.isdir("noise_scale_repo"):
        subprocess.check_call(["git", "clone", "--depth=1", REPOSITORY, "noise_scale_repo"])
    with open("constraints-colab.txt", "w") as f:  # the runtime's own JAX, nothing else
        f.writelines(f"{name}=={importlib.metadata.version(name)}\n" for name in ("jax", "jaxlib")
                     if importlib.util.find_spec(name) is not None)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           "-c", "constraints-colab.txt", "-e", "noise_scale_repo"])
    sys.path.insert(0, os.path.abspath("noise_scale_repo"))  # .pth files are read at start-up

# %% tags=["parameters"]
DATA_DIR = ""  # e.g. gs://YOUR_BUCKET/tensorflow_datasets (imagenet2012 as ArrayRecord); '' = mock
VARIANT = "increase_batch"  # goyal | increase_batch | momentum_090 | momentum_095 | momentum_0975
WORKDIR = ""  # '' = runs/resnet50_<VARIANT> (mock data: runs/resnet50_mock, emptied first); or a bucket

# %%
import importlib.util
import logging
import os
import shutil

import jax
from IPython import get_ipython
from IPython.display import display

from noise_scale import config_lib, errors, memory, metrics, train
from noise_scale.schedule import schedule_from_config, schedule_table

MOCK = not DATA_DIR
devices = jax.devices()
limit = memory.device_memory(devices[0])
print(f"{len(devices)} {jax.default_backend()} device(s) of kind {devices[0].device_kind!r}, "
      + (f"{limit / memory.GiB:.1f} GiB each" if limit else "memory not reported"))
print(devices)

# %% [markdown]
# ## The paper's ResNet-50 schedules on these devices
#
# Every preset's plan for the devices above: the batch each device takes per update and
# how many micro-batches of at most `max_device_batch` (256) it accumulates to make it
# (the update equals the full-batch one), the updates per stage and the compiles (one per
# batch size).
#
# *Committed outputs: one CPU device, so every batch is a single device's.*

# %%
path = config_lib.config_file("imagenet_resnet50.py")
for variant in config_lib.variants(path):
    preset = config_lib.load_config(f"{path}:{variant}")
    try:
        print(schedule_table(schedule_from_config(preset), len(devices),
                             preset.max_device_batch), end="\n\n")
    except errors.ScheduleError as e:  # a batch that does not divide over these devices
        print(f"{variant}: {e}\n")

# %% [markdown]
# ## The run's config
#
# With `DATA_DIR` set: the preset `VARIANT` reading ImageNet from there. Without: the same
# preset shrunk for mock data (32 random 32×32 images per device, 2 epochs, the batch
# doubling after the first; the second stage accumulates 2 micro-batches per device), so
# every cell below runs the real code path in a minute or two on a CPU.

# %%
config = config_lib.load_config(f"{path}:{VARIANT}")
if MOCK:
    # On a CPU the rbg generator's kernels compile several times faster than threefry's.
    jax.config.update("jax_default_prng_impl", "rbg")
    batch = 8 * len(devices)  # 8 examples per device, then 16 (2 micro-batches of 8)
    for field, value in {
        "dataset_size": 4 * batch, "image_size": 32, "ghost_batch_size": 4,
        "max_device_batch": 8, "eval_batch_size": 2 * batch, "data_workers": 2,
        "log_every_steps": 1, "checkpoint_every_epochs": 0.0, "schedule.batch_size": batch,
        "schedule.max_batch_size": 2 * batch, "schedule.total_epochs": 2.0,
        "schedule.boundaries": (1.0,), "schedule.factor": 2.0, "schedule.learning_rate": 0.1,
        "schedule.warmup_epochs": 0.5, "schedule.warmup_start_lr": 0.01,
    }.items():
        config_lib.set_field(config, field, str(value))
    # TFDS's mock metadata has no dataset_info.json, and absl warns so on every read.
    logging.getLogger("absl").setLevel(logging.ERROR)
else:
    config.data_dir = DATA_DIR
workdir = WORKDIR or ("runs/resnet50_mock" if MOCK else f"runs/resnet50_{VARIANT}")
if MOCK and not WORKDIR:  # the mock run below is stopped and resumed: start it afresh
    shutil.rmtree(workdir, ignore_errors=True)
print(schedule_table(schedule_from_config(config), len(devices), config.max_device_batch))

# %% [markdown]
# ## Does one micro-batch fit?
#
# The largest program a run compiles is the train step on one micro-batch of
# `max_device_batch` examples per device. `memory.fit_max_device_batch` compiles it for one
# device (nothing is allocated) and reads XLA's `memory_analysis()`; where that exceeds 90 %
# of the device's memory (its own report, or the size of its kind: a Colab TPU v2 core has
# 8 GiB, a v3 core 16 GiB) it halves `max_device_batch` and measures again. A smaller
# micro-batch changes nothing but the time per update: more micro-batches are accumulated
# into the same update, and ghost batch norm still sees 32 examples at a time. The cell
# applies what it finds to the config.
#
# *Committed outputs: made on a CPU with mock data (32×32 images, micro-batches of 8), so
# they show the mechanism, not ImageNet's numbers; a CPU reports no memory limit.*

# %%
micro, measured = memory.fit_max_device_batch(config, devices[0])
for m in measured:
    print(f"micro-batch {m.micro_batch:>4} at {config.image_size}×{config.image_size} "
          f"({config.dtype}): {m.total_bytes / memory.GiB:6.2f} GiB "
          f"(state and batch {m.argument_bytes / memory.GiB:.2f}, "
          f"activations and scratch {m.temp_bytes / memory.GiB:.2f})")
if limit is None:
    print("this device reports no memory size: nothing to compare with")
elif micro < config.max_device_batch:
    print(f"max_device_batch {config.max_device_batch} does not fit in "
          f"{memory.HEADROOM:.0%} of {limit / memory.GiB:.1f} GiB: using {micro}")
    config.max_device_batch = micro
else:
    print(f"fits: {measured[-1].total_bytes / limit:.0%} of {limit / memory.GiB:.1f} GiB")

# %% [markdown]
# ## Preparing ImageNet (once, on another machine)
#
# Training reads TFDS's **ArrayRecord** files through `tfds.data_source` (random access by
# example index, so batches of any size can be cut and a run resumes at the exact example)
# and needs no TensorFlow. Do not install TensorFlow on the Colab TPU runtime: it no longer
# ships there and installing it can break the other frameworks. *Building* the dataset
# does need it, so build on any machine with ~400 GB of disk:
#
# ```bash
# pip install tensorflow tensorflow-datasets        # for the build only
# DATA=/mnt/disk/tensorflow_datasets
# mkdir -p $DATA/downloads/manual                   # ILSVRC2012_img_{train,val}.tar from image-net.org
# mv ILSVRC2012_img_train.tar ILSVRC2012_img_val.tar $DATA/downloads/manual/
# tfds build imagenet2012 --data_dir=$DATA --file_format=array_record
# gcloud storage cp -r $DATA/imagenet2012 gs://YOUR_BUCKET/tensorflow_datasets/
# ```
#
# Then set `DATA_DIR = "gs://YOUR_BUCKET/tensorflow_datasets"` in the parameter cell (a
# bucket in the TPU's region). On Colab, a private bucket needs
# `from google.colab import auth; auth.authenticate_user()` first; TFDS opens `gs://`
# paths through `gcsfs` (installed on Colab). A missing or TFRecord-format dataset stops
# the run before anything compiles, with these steps in the message.

# %%
if not MOCK and DATA_DIR.startswith("gs://") and importlib.util.find_spec("gcsfs") is None:
    raise RuntimeError("reading gs:// without TensorFlow needs gcsfs: pip install gcsfs")

# %% [markdown]
# ## Launch, and resume
#
# `train.train_and_evaluate(config, workdir)` runs the schedule to its end: each stage's
# step is compiled before its first batch (one compile per batch size), checkpoints are
# written at every stage boundary, every epoch and on an interrupt. Interrupting the cell
# (■) or a preemption saves a checkpoint and raises `errors.Preempted`; calling it again
# with the same workdir resumes at the same example, stage and batch size.
#
# With mock data the first call is stopped as a preemption would stop it (a real SIGTERM
# right after the step that ends the first stage, the hook the resume tests use), and the
# second call resumes into the second stage, with its doubled batch.
#
# *Committed outputs: a CPU with mock data (random images and labels; the losses mean
# nothing, the stages, batch sizes and compiles are the point).*

# %%
def run():
    if not MOCK:
        return train.train_and_evaluate(config, workdir)
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=config.dataset_size):
        return train.train_and_evaluate(config, workdir)


if MOCK:
    os.environ["NOISE_SCALE_SIGTERM_AT"] = str(config.dataset_size)  # the end of stage 0
try:
    records = run()
except errors.Preempted as e:
    if not MOCK:  # an interrupt (■) stops here; run the next cell (or this one) to resume
        raise
    print(f"stopped: {e}")
finally:
    os.environ.pop("NOISE_SCALE_SIGTERM_AT", None)

# %%
records = run()  # resumes from the newest checkpoint in workdir (nothing left: returns)

# %% [markdown]
# ## The metrics
#
# One record per epoch in `workdir/metrics.jsonl` (`metrics.read_metrics`): the stage, its
# batch size and accumulation steps, the ε and m the optimizer used, g, losses, accuracy,
# and the compiles so far. *Committed outputs: CPU, mock data (random labels: the accuracy
# means nothing); the stage change and the 2 compiles are the point.*

# %%
records = metrics.read_metrics(workdir)
COLUMNS = ["epoch", "stage", "batch_size", "accumulation_steps", "updates", "learning_rate",
           "momentum", "noise_scale", "train_loss", "test_accuracy", "compiles"]
if importlib.util.find_spec("pandas") is not None:
    import pandas as pd

    display(pd.DataFrame(records)[COLUMNS])
else:
    print(metrics.records_table(records, COLUMNS))
print(f"stages {[r['stage'] for r in records]}, batch sizes {[r['batch_size'] for r in records]},"
      f" {records[-1]['compiles']} compiles")

# %%
if importlib.util.find_spec("tensorboard") is not None:
    get_ipython().run_line_magic("load_ext", "tensorboard")
    get_ipython().run_line_magic("tensorboard", f"--logdir {workdir}")
else:
    print(f"tensorboard is not installed here: pip install tensorboard, then "
          f"tensorboard --logdir {workdir}")
