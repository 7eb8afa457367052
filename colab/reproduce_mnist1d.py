# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/noise-scale/noise_scale/blob/main/colab/reproduce_mnist1d.ipynb)
#
# # Reproduce the paper's comparison at CPU scale (MNIST-1D)
#
# Five schedules with the same noise scale at every epoch (`decay_lr`, `hybrid`,
# `increase_batch`, `increased_lr`, `increased_momentum`), the measured cap (`measured_cap`)
# and two controls that must fail (`constant_lr`, `mismatched`; all from
# `configs/mnist1d.py`), trained on MNIST-1D, which is generated offline, through one
# Python call: `noise_scale.experiments.reproduce`. The paper's claims to check: against
# epochs the curves lie on top of each other; against parameter updates the batch-growing
# schedules get there with several times fewer updates; raising the momentum costs a
# little accuracy. The report judges each schedule by the written rule (seed-paired,
# window by window, with a fixed margin) and says whether the comparison is reproduced.
#
# The full comparison (8 variants × 5 seeds, what `make demo` runs) takes about an hour on
# two CPU cores; `QUICK = True` runs a 4-epoch version of two schedules in seconds.
# Rerunning reuses finished runs and resumes interrupted ones. CI runs this notebook's
# default path at a reduced size: with the environment variable
# `NOISE_SCALE_NOTEBOOK_REDUCED=1` the same cells run every variant at N = 8,000, 4 epochs
# and 2 seeds.

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
QUICK = False  # True: N = 2,000, 4 epochs, decay_lr and hybrid, 1 seed (seconds)
WORKDIR = ""  # where the runs go; '' = runs/mnist1d (runs/mnist1d_quick when QUICK)
JOBS = 0  # runs trained at once; 0 = 2 for the full run on a CPU runtime, else 1

# %%
import importlib.util
import os

import jax
from IPython import get_ipython
from IPython.display import Image, Markdown, display

from noise_scale import config_lib, experiments, metrics
from noise_scale.experiments import agreement

# The schedule's shape kept: steps ×5 at epochs 1, 2 and 3 instead of 12, 24, 32.
SMALL = (("eval_batch_size", "500"), ("schedule.total_epochs", "4"),
         ("schedule.boundaries", "(1.0, 2.0, 3.0)"))
if QUICK:
    VARIANTS, SEEDS, OVERRIDES = ("decay_lr", "hybrid"), 1, (("dataset_size", "2000"), *SMALL)
elif os.environ.get("NOISE_SCALE_NOTEBOOK_REDUCED") == "1":  # CI: B up to 4,000 needs N ≥ 8,000
    VARIANTS, SEEDS, OVERRIDES = None, 2, (("dataset_size", "8000"), *SMALL)
else:  # every variant of the config file, its controls included, with the rule's seeds
    VARIANTS, SEEDS, OVERRIDES = None, agreement.DEFAULT_SEEDS, ()
workdir = WORKDIR or ("runs/mnist1d_quick" if QUICK else "runs/mnist1d")
# Worker processes share the CPU cores well; an accelerator belongs to one process.
jobs = JOBS or (2 if jax.default_backend() == "cpu" and not QUICK else 1)
print(f"{jax.device_count()} {jax.default_backend()} device(s); "
      f"{', '.join(VARIANTS) if VARIANTS else 'every variant'} × {SEEDS} seed(s) into "
      f"{workdir}, {jobs} at a time")

# %% [markdown]
# ## Train (or reuse) every run, then write the figure, the report and the summary
#
# Each run goes to `WORKDIR/<variant>/seed<s>/` (its `metrics.jsonl`, TensorBoard scalars
# and checkpoints). Interrupting this cell checkpoints the run in progress; running it
# again picks up where it stopped.
#
# *Committed outputs: the full comparison on a 2-core CPU (`make notebooks`); its 40 runs
# were trained by `make demo` (the same runs as docs/mnist1d, copied into colab/runs/) and
# reused by the execution shown.*

# %%
summary = experiments.reproduce(config_lib.ConfigArgs("configs/mnist1d.py", OVERRIDES),
                                workdir, variants=VARIANTS, seeds=SEEDS, jobs=jobs)

# %% [markdown]
# ## The figure: test accuracy and training loss against epochs and against updates

# %%
display(Image(summary["files"]["figure"]))

# %% [markdown]
# ## The report

# %%
with open(summary["files"]["report"]) as f:
    display(Markdown(f.read()))

# %% [markdown]
# ## Every record of every run
#
# One record per epoch and run, read back from each run's `metrics.jsonl`
# (`noise_scale.metrics.read_metrics`): all of them as a pandas table where pandas is
# installed (it is on Colab); elsewhere, as plain text, each run's last record.

# %%
outdir = os.path.dirname(summary["files"]["summary"])
records = [{"variant": variant, "seed": seed, **record}
           for variant in summary["variants"] for seed in summary["seeds"]
           for record in metrics.read_metrics(os.path.join(outdir, variant, f"seed{seed}"))]
COLUMNS = ["variant", "seed", "epoch", "stage", "batch_size", "learning_rate", "momentum",
           "noise_scale", "updates", "train_loss", "test_accuracy", "compiles"]
if importlib.util.find_spec("pandas") is not None:
    import pandas as pd

    display(pd.DataFrame(records)[COLUMNS])
else:
    last = {(r["variant"], r["seed"]): r for r in records}  # the records are in epoch order
    print(metrics.records_table(list(last.values()), COLUMNS))

# %% [markdown]
# ## TensorBoard
#
# The same numbers, with examples seen as the step (the one axis that means the same in
# every schedule). Shown inline where the `tensorboard` package is installed (Colab has it);
# elsewhere run `tensorboard --logdir WORKDIR`.

# %%
if importlib.util.find_spec("tensorboard") is not None:
    get_ipython().run_line_magic("load_ext", "tensorboard")
    get_ipython().run_line_magic("tensorboard", f"--logdir {outdir}")
else:
    print(f"tensorboard is not installed here: pip install tensorboard, then "
          f"tensorboard --logdir {outdir}")
