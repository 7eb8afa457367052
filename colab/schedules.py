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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/noise-scale/noise_scale/blob/main/colab/schedules.ipynb)
#
# # Batch-size schedules: size a run before paying for it
#
# Smith, Kindermans, Ying & Le (ICLR 2018): instead of decaying the learning rate ε, grow
# the batch size B. Both lower SGD's noise scale g = ε/(1−m)·(N/B − 1) by the same factor,
# and the batch route needs that many times fewer parameter updates. This notebook uses
# `noise_scale` to compute g, print and plot the paper's presets, turn a learning-rate
# step schedule of your own into a batch-size schedule, and plan a run on a TPU or GPU
# slice (batch per device, accumulation steps, compiles). Nothing here trains: it runs in
# seconds on any runtime.

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

# %% [markdown]
# ## The noise scale, with numbers you can change
#
# Edit the cell below (ε, B, m, N, and the slice to plan for), then run the notebook again.

# %% tags=["parameters"]
LEARNING_RATE = 0.1  # ε
BATCH_SIZE = 128  # B
MOMENTUM = 0.9  # m (0 = plain SGD)
DATASET_SIZE = 50_000  # N, the training examples in one epoch (CIFAR-10)
SLICE = "v4-8"  # the slice to plan for: one of SLICES below

# %%
import matplotlib.pyplot as plt
from IPython.display import display

from noise_scale import adaptive, config_lib, theory
from noise_scale.schedule import (
    RULES,
    compare_table,
    from_lr_steps,
    render,
    schedule_from_config,
    schedule_table,
)

g = theory.noise_scale(LEARNING_RATE, BATCH_SIZE, DATASET_SIZE, MOMENTUM)
print(f"ε/(1−m) = {theory.effective_learning_rate(LEARNING_RATE, MOMENTUM):.4g}   "
      f"g = ε/(1−m)(N/B−1) = {g:.4g}")
for k in (5, 10):
    by_lr = theory.noise_scale(LEARNING_RATE / k, BATCH_SIZE, DATASET_SIZE, MOMENTUM)
    by_b = theory.noise_scale(LEARNING_RATE, k * BATCH_SIZE, DATASET_SIZE, MOMENTUM)
    exact = theory.solve_batch_size(g / k, LEARNING_RATE, DATASET_SIZE, MOMENTUM)
    print(f"÷{k}: ε → ε/{k} gives g = {by_lr:.4g}; B → {k}·B = {k * BATCH_SIZE:,} gives "
          f"g = {by_b:.4g} ({100 * (by_b / by_lr - 1):+.1f} %: the −1 in N/B − 1); "
          f"the exact B for g/{k} is {exact:,.0f}")

# %% [markdown]
# ## The paper's presets
#
# Each config file's variants, as `python -m noise_scale.schedule --config=configs/FILE.py:VARIANT`
# prints them: one row per stage with B, ε, m, g and the updates it makes (counted by the
# same stream rule the training loop follows). CIFAR-10 with a 16-4 wide ResNet first,
# then the ImageNet ResNet-50 family (Goyal et al.'s baseline and the paper's rules on it).

# %%
PRESETS = {name: {variant: schedule_from_config(config_lib.load_config(f"{path}:{variant}"))
                  for variant in config_lib.variants(path)}
           for name, path in ((n, config_lib.config_file(f"{n}.py"))
                              for n in ("cifar10_wrn16_4", "imagenet_resnet50"))}
for schedule in PRESETS["cifar10_wrn16_4"].values():
    print(schedule_table(schedule), end="\n\n")

# %%
for schedule in PRESETS["imagenet_resnet50"].values():
    print(schedule_table(schedule), end="\n\n")

# %% [markdown]
# ### B, ε and g against epochs and against parameter updates
#
# Against epochs the `decay_lr` and `increase_batch` curves of g lie on top of each other
# (the point of the method); against updates the batch-growing schedules end far sooner.

# %%
for name, schedules in PRESETS.items():
    for x in ("epochs", "updates"):
        fig = render.figure(list(schedules.values()), x=x)
        fig.suptitle(f"{name}: against {x}")
        display(fig)
        plt.close(fig)

# %% [markdown]
# ## Your own learning-rate step schedule as a batch-size schedule
#
# Describe the schedule you use today: the first B and ε, the epochs where ε falls, and by
# how much. `from_lr_steps` gives the reference (`decay_lr`), the pure batch route
# (`increase_batch`, which stops with an error if it would pass `max_batch_size`) and the
# `hybrid` (the batch grows until the cap, then ε takes the rest). The paper caps B near N/10.

# %%
MY_SCHEDULE = dict(dataset_size=100_000, total_epochs=90, batch_size=256, learning_rate=0.2,
                   momentum=0.9, boundaries=(30, 60, 80), factor=10, max_batch_size=10_000)
mine = {}
for rule in RULES:
    try:
        mine[rule] = from_lr_steps(rule, **MY_SCHEDULE)
    except ValueError as e:  # ScheduleError: the message says what to change
        print(f"{rule}: {e}\n")
for schedule in mine.values():
    print(schedule_table(schedule), end="\n\n")
print(compare_table(mine["decay_lr"], mine["hybrid"]))
fig = render.figure(list(mine.values()), x="updates")
display(fig)
plt.close(fig)

# %% [markdown]
# ## Any learning-rate shape: cosine, linear, WSD, piecewise
#
# A continuous schedule becomes at most `max_stages` batch sizes (one compile each) with
# the learning rate inside each stage solved so that g equals the reference's at every
# example: the g curves below coincide. Each batch size starts as early as ε ≤ ε0 allows;
# which sizes to use is chosen to minimise the updates (`noise_scale.schedule.ladder`).
# With ε ≤ ε0 no schedule can beat 1/mean(ε_ref/ε0) — 2× for a cosine to 0 — and B ∝ ε
# (a larger ε0 and B0) multiplies the saving. Change the shape or `max_stages` and rerun.

# %%
COSINE = config_lib.config_file("mnist1d_cosine.py")
SHAPE, MAX_STAGES = "cosine", 6  # or linear, polynomial, wsd, exponential (final_lr_fraction > 0)
shaped = {}
for variant in config_lib.variants(COSINE):
    if variant == "cosine_measured":  # its batches are decided by the probe as it runs
        continue
    overrides = [("schedule.max_stages", str(MAX_STAGES))]
    if variant != "constant_lr":
        overrides.append(("schedule.shape", SHAPE))
    shaped[variant] = schedule_from_config(config_lib.load_config(f"{COSINE}:{variant}", overrides))
for schedule in shaped.values():
    print(schedule_table(schedule), end="\n\n")
for x in ("epochs", "updates"):
    fig = render.figure([shaped[v] for v in shaped if v != "constant_lr"], x=x)
    fig.suptitle(f"MNIST-1D, {SHAPE}: against {x}")
    display(fig)
    plt.close(fig)

# %% [markdown]
# ## Larger ε or larger m buys a larger first batch
#
# Scaling ε by k keeps g if B grows by k (B ∝ ε); raising the momentum from m to m' keeps g
# if B grows by (1−m)/(1−m') (B ∝ 1/(1−m)). The paper's `increased_lr` and
# `increased_momentum` presets start from these batches; raising m costs a little accuracy
# (the momentum needs ~1/(1−m) updates to settle after every change of g).

# %%
b_lr = theory.scale_batch_for_learning_rate(BATCH_SIZE, 5)
b_m = theory.scale_batch_for_momentum(b_lr, MOMENTUM, 0.98)
for label, (lr, b, m) in {"as given": (LEARNING_RATE, BATCH_SIZE, MOMENTUM),
                          "ε × 5, B ∝ ε": (5 * LEARNING_RATE, b_lr, MOMENTUM),
                          "then m = 0.98, B ∝ 1/(1−m)": (5 * LEARNING_RATE, b_m, 0.98)}.items():
    print(f"{label:>28}: ε = {lr:<5g} B = {b:>7,.0f}  m = {m:<5g} "
          f"g = {theory.noise_scale(lr, min(b, DATASET_SIZE), DATASET_SIZE, m):.4g}")

# %% [markdown]
# ## Adam keeps its own noise scale: the square-root rule
#
# Adam divides its step by √v ≈ σ/√B, so its temperature is T = η/√B, not SGD's η/B
# (Malladi et al. 2022). Where a step schedule would divide η by k, the square-root rule
# multiplies B by k and divides η by √k: the same number of updates as the paper's rule,
# which keeps η and multiplies B by k (√k times Adam's temperature). b2 keeps its memory in
# examples (b2^(B/B0)), ε_adam shrinks by √κ and AdamW's λ grows by √κ (κ = B/B0), so the
# weight decay's timescale B/(η·λ·N) stays the reference's. `configs/mnist1d_adam.py` and
# `mnist1d_adamw.py` run the comparison (`make demo-adam`); the committed verdicts are in
# `docs/mnist1d_adam/report.md` and `docs/mnist1d_adamw/report.md`.

# %%

ADAM = {rule: config_lib.load_config(f"{config_lib.config_file('mnist1d_adamw.py')}:{variant}")
        for rule, variant in (("sqrt", "increase_batch_sqrt"), ("linear", "increase_batch_linear"))}
adam_plans = {rule: schedule_from_config(c) for rule, c in ADAM.items()}
for rule, schedule in adam_plans.items():
    print(adaptive.describe(ADAM[rule]))
    print(schedule_table(schedule, adam=adaptive.per_stage(ADAM[rule], schedule)), end="\n\n")
print(compare_table(adam_plans["linear"], adam_plans["sqrt"]))

# %% [markdown]
# ## The plan on a slice: batch per device, accumulation, compiles
#
# A run splits every batch over the slice's devices; a per-device batch above the config's
# `max_device_batch` (256 for ResNet-50 in bfloat16) is accumulated over equal
# micro-batches, so the update equals the full-batch one. Each distinct batch size is one
# compile. Pick `SLICE` in the parameter cell; the overview after the table covers all four.

# %%
SLICES = {"v4-8": 4, "v5e-8": 8, "v5e-256": 256, "8xH100": 8}  # JAX devices per slice
max_device_batch = config_lib.load_config(
    config_lib.config_file("imagenet_resnet50.py")).max_device_batch
for schedule in PRESETS["imagenet_resnet50"].values():
    print(schedule_table(schedule, SLICES[SLICE], max_device_batch), end="\n\n")

# %%
print(f"{'preset':>15} {'slice':>8} {'largest B/device':>17} {'most micro-batches':>19} "
      f"{'compiles':>9} {'updates':>8}")
for variant, schedule in PRESETS["imagenet_resnet50"].items():
    for name, devices in SLICES.items():
        plan = schedule.plan(devices, max_device_batch)
        print(f"{variant:>15} {name:>8} {max(p.per_device_batch for p in plan):>17,} "
              f"{max(p.accumulation_steps for p in plan):>19} "
              f"{len(schedule.batch_sizes()):>9} {schedule.total_updates:>8,}")
