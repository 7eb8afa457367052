"""Every field a run reads, with its default; experiment configs import and override it.

A module of the package (not a file of ``noise_scale/configs/``, which are loaded by
path) so that a user's own config file anywhere on disk can
``from noise_scale import default_config``.
"""

import ml_collections
import ml_dtypes
import numpy as np

from noise_scale.config.names import (  # noqa: F401 - re-exported: user configs read them here
    DATASETS,
    DTYPE_NAMES,
    MAX_EXAMPLES,
    MODEL_GHOST_SIZES,
    MODELS,
    OPTIMIZERS,
    RULES,
    SHAPES,
)

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16}  # config.dtype → array dtype
assert tuple(DTYPES) == DTYPE_NAMES

def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    # Data. dataset_size (N) is what every noise scale is computed against; the
    # run checks it equals the size of the training split it loads.
    # mnist1d | cifar10 | imagenet2012 | any TFDS image-classification dataset prepared as
    # ArrayRecord (cifar100, ...) | your own loader by import path (my_pkg.data:load)
    c.dataset = "mnist1d"
    c.dataset_size = 40_000
    c.data_dir = ""  # tfds data_dir ('' = tfds default); MNIST-1D cache dir
    c.eval_batch_size = 1000
    # The TFDS split evaluated on ('' = test if it is labelled, else validation: ImageNet's
    # test split, built when its tar is in the manual folder, is labelled -1), or one named,
    # e.g. 'validation' or 'train[-10%:]'; it must be labelled (noise_scale.data.eval_split).
    c.eval_split = ""
    c.prefetch = 2  # batches prepared ahead on the host, at the schedule's B
    c.image_size = 224  # ImageNet crop (train) / centre crop (eval); CIFAR-10 must be 32
    c.data_workers = 0  # processes decoding and augmenting images (0 = one per CPU)
    # Per-channel pixel mean and std (0-255) of a TFDS dataset; () = the known values of
    # cifar10 and imagenet2012, else computed once from the training split and cached.
    c.image_mean = ()
    c.image_std = ()

    # Model.
    c.model = "cnn"  # mlp | cnn | resnet50 | wrn16_4 | your own by import path (my_pkg.nets:Net)
    c.cnn_channels = (32, 64, 64)  # the MNIST-1D CNN's conv widths
    c.ghost_batch_size = 0  # 0 = no batch norm; else batch-norm statistics over this many
    # Batch-norm running averages decay per example, not per update: a step of B examples
    # applies momentum 0.9^(B / this), so the evaluated statistics cover the same number of
    # examples at every batch size (0 = the schedule's base batch size, schedule.batch_size).
    c.batch_norm_batch_size = 0
    c.dtype = "float32"  # compute dtype: float32 | bfloat16

    # Optimizer: ε and m come from the schedule, evaluated at examples seen.
    c.optimizer = "momentum"  # sgd | momentum | nesterov | adam | adamw
    # L2 on weights (not batch-norm or bias parameters), added to the gradient; with adamw,
    # the decoupled decay λ (optax.adamw), scaled per stage under the square-root rule.
    c.weight_decay = 0.0
    c.label_smoothing = 0.0
    # Adam/AdamW (noise_scale.adaptive): the schedule's m is b1. b2 and eps are the values at
    # the reference's batch schedule.batch_size; at batch B, b2^(B/B_ref) keeps the second
    # moment's memory in examples (False: b2 per update, as the paper and most codebases).
    c.adam_b2 = 0.999
    c.adam_eps = 1e-8
    c.adam_b2_rescale = True

    # Devices: a stage whose per-device batch exceeds this accumulates gradients
    # over micro-batches so the update equals the full-batch one (0 = never).
    c.max_device_batch = 0
    # Growing the slice with the batch (README): the device counts the run will move
    # through, e.g. (8, 32, 64) (() = only this one; ghost batches must fit all of them);
    # stop on purpose at the start of a stage to move (0 = never; exit status 75).
    c.slices = ()
    c.stop_at_stage = 0
    c.allow_ghost_change = False  # resume even where ghost batches would normalise otherwise
    # Every remaining stage is compiled at start-up and checked against this many bytes per
    # device (0 = the device's own report; none on CPU: no check, compile stage by stage).
    c.device_memory_bytes = 0
    # '' = this user's private cache, one directory per run (compile_cache); 'off' = none
    c.compilation_cache_dir = ""

    # The gradient noise scale B_simple = tr Σ/|G|² (noise_scale.gns), measured in the train
    # step from the gradients it already makes: no new collective with several devices or
    # accumulation (two squared norms, one more scalar in the gradients' all-reduce); on one
    # device the step computes its gradient as two halves (the same FLOPs). Only every k-th
    # update runs the measuring program; the others run the plain step, so a measuring
    # stage compiles two programs (one with k = 1). Its averages, kept on the host and in
    # the checkpoint, decay per example seen. Cost: benchmarks/RESULTS.md.
    c.measure_noise_scale = False
    c.noise_scale_ema_epochs = 0.25  # the averages' horizon τ, in epochs of examples seen
    c.noise_scale_every_steps = 10  # k: the measuring program on every k-th update (cost ÷ k)
    # M: the horizon is τ or M measurements, whichever is longer (at B = 4,000, k = 10, τ
    # alone would hold a quarter of one measurement)
    c.noise_scale_min_measurements = 20
    # with the measured cap: every update measures over this many epochs before each
    # boundary where the cap decides (0: only every k-th), so the decision reads a full horizon
    c.noise_scale_dense_epochs = 1.0

    c.schedule = schedule_config()
    c.probe = probe_config()

    # Record.
    c.log_every_steps = 50
    c.eval_every_epochs = 1.0
    c.checkpoint_every_epochs = 1.0  # 0 = only at stage boundaries, the end and on SIGTERM
    c.checkpoint_every_minutes = 0.0  # 0 = only the epoch rule
    c.keep_checkpoints = 2
    # A jax.profiler trace of the first profile_steps steps of each stage in profile_stages
    # (() = every stage), after the stage's compile, into <workdir>/profile/stage<k>/
    # (TensorBoard's profile tab); process 0 only (noise_scale.train.profiling). 0 = off.
    c.profile_steps = 0
    c.profile_stages = ()
    return c


def schedule_config() -> ml_collections.ConfigDict:
    """``config.schedule``: the reference learning-rate schedule and the rule applied to it
    (see noise_scale.schedule.rules.schedule_from_config)."""
    s = ml_collections.ConfigDict()
    s.rule = "decay_lr"  # decay_lr | increase_batch | hybrid | measured (B from the probe)
    # Adam/AdamW only: sqrt (T = η/√B: B×k with η÷√k, B ∝ η²) | linear (the paper's rule,
    # SGD's g with b1 as m); '' = sqrt. See noise_scale.adaptive.
    s.adam_rule = ""
    s.batch_size = 32  # B at epoch 0, before lr_scale / raise_momentum_to
    s.learning_rate = 0.05
    s.momentum = 0.9
    s.total_epochs = 40.0
    s.boundaries = (12.0, 24.0, 32.0)  # epochs where the reference decays ε
    s.factor = 5.0
    s.batch_factor = 0.0  # a control: B grows by this where ε would fall by factor (0 = factor)
    s.max_batch_size = 0  # B_max (0 = none); the paper uses about N/10
    # The measured cap c (0 = off): at a boundary B grows only if the new B <= c × the
    # smoothed measured noise scale B_simple, else ε takes that step (needs
    # measure_noise_scale; rules increase_batch and hybrid, step shape, not Adam).
    s.noise_cap = 0.0
    s.lr_scale = 1.0  # B ∝ ε: multiply ε0 and B0 by this
    s.raise_momentum_to = 0.0  # B ∝ 1/(1−m): new m0, B0 scaled to keep g (0 = keep)
    s.exact = False  # solve the exact form g = ε/(1−m)(N/B−1) instead of multiplying
    s.batch_multiple = 1  # round every B to a multiple of this (e.g. the device count)
    s.warmup_epochs = 0.0
    s.warmup_start_lr = 0.0
    # Learning-rate shapes (noise_scale.schedule.shapes): step uses boundaries and factor;
    # the others decay continuously after the warm-up, and increase_batch converts them
    # to at most max_stages batch sizes with the reference's g at every example.
    s.shape = "step"  # step | cosine | linear | exponential | polynomial | wsd | piecewise
    s.final_lr_fraction = 0.0  # ε at the end over ε0 (exponential: must be > 0)
    s.power = 2.0  # polynomial
    s.decay_fraction = 0.2  # wsd: the share of the post-warm-up epochs that decays
    s.knots = ()  # piecewise: ((epoch, learning rate), ...) from 0 to total_epochs
    s.max_stages = 6  # distinct batch sizes (= compiles) a converted shape may use
    # 0: the ladder with the fewest updates (dynamic programming over a grid); r > 1: the
    # fixed geometric ladder B0, r·B0, r²·B0, ... (the easy start, for comparison).
    s.ladder_ratio = 0.0
    return s


def probe_config() -> ml_collections.ConfigDict:
    """``config.probe``: the branching probe of the critical batch size (docs/probe.md,
    ``noise_scale.train.branching``). Every ``every_epochs`` it forks the state in memory,
    runs short branches at B·k with the rule's ε over the same examples and reads off the
    largest B whose loss keeps up; the main run is never changed by it. With
    ``schedule.rule = "measured"`` its reading sets B from there on."""
    p = ml_collections.ConfigDict()
    p.every_epochs = 0.0  # 0 = off; rule 'measured' needs it > 0 (its stages)
    p.factors = (1, 2, 4, 8)  # branch batches B·k; strictly increasing from 1
    p.branch_examples = 2048  # T: examples each branch trains on (the same for every k)
    p.repeats = 2  # branches per factor, on consecutive stretches of T examples
    p.eval_examples = 2048  # the training examples each branch's loss is read on
    # what a ×k branch gives up against the ×1 branch: ratio (L_k/L_1 − 1) or progress
    # ((L_k − L_1)/(L_fork − L_1)), and how much of it is tolerated
    p.compare = "ratio"
    p.tolerance = 0.15
    return p
