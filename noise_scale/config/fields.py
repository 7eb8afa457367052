"""Every config field's own check, in one table (:data:`FIELDS`), and the one message.

Why a table: checks used to be scattered over ``train.setup``, the model registry,
the optimizer, the checkpointer and the data loaders, each run only when its code
was reached, and some fields were never checked at all
(``--config.ghost_batch_size=-64`` trained at chance and exited 0). Here every
field of ``default_config.get_config()`` (plus ``variant``) has one entry: a small
reusable check of its type and range, the valid range in words, the fix and bad
example values for the tests. The checks *between* fields and the paths' are
``noise_scale.config.validation``'s, which runs this table first; the relations that
make a schedule (B vs N, the cap, the boundaries, the warm-up, the int32 clock over the
run) are the schedule layer's, which runs this table's checks of the fields it reads
(:func:`check_fields`), so nothing here imports ``noise_scale.schedule``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable

from noise_scale.adaptive import ADAM_RULES
from noise_scale.config.names import (
    DATASETS,
    DTYPE_NAMES,
    MAX_EXAMPLES,
    MODELS,
    OPTIMIZERS,
    RULES,
    SHAPES,
)
from noise_scale.config.user_code import is_import_path
from noise_scale.errors import ConfigError

Check = Callable[[object], bool]


# ------------------------------------------------------------ generic checks
def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def integer(minimum: int | None = None, maximum: int | None = None) -> Check:
    return lambda v: (_is_int(v) and (minimum is None or v >= minimum)
                      and (maximum is None or v <= maximum))


def number(*, positive=False, minimum=None, maximum=None, above=None, below=None) -> Check:
    """A finite number; ``minimum`` / ``maximum`` inclusive, ``above`` / ``below`` strict."""
    above = 0 if positive else above
    return lambda v: (_is_number(v) and (minimum is None or v >= minimum)
                      and (maximum is None or v <= maximum)
                      and (above is None or v > above) and (below is None or v < below))


def fraction() -> Check:
    """A number in [0, 1)."""
    return number(minimum=0, below=1)


def knots() -> Check:
    """(epoch, learning rate) pairs: finite, epochs strictly increasing, rates >= 0."""
    def check(v):
        pairs = isinstance(v, tuple) and all(
            isinstance(k, tuple) and len(k) == 2 and all(_is_number(x) for x in k) for k in v)
        return pairs and all(r >= 0 for _, r in v) and all(a[0] < b[0] for a, b in zip(v, v[1:]))
    return check


def one_of(*choices: str) -> Check:
    return lambda v: v in choices


def is_tfds_name(name) -> bool:
    """A TFDS dataset name (``cifar100``, ``imagenet2012:5.1.0``, ``svhn_cropped/x``)."""
    return (isinstance(name, str) and name != "mnist1d" and not is_import_path(name)
            and bool(re.match(r"^[a-z][a-z0-9_]*(/[\w.-]+)?(:[\d.*]+)?$", name)))


def dataset_name(name) -> bool:
    """mnist1d, any TFDS image-classification name, or ``module:function`` (checked later)."""
    return name in DATASETS or is_tfds_name(name) or is_import_path(name)


def registered_model(name) -> bool:
    """A shipped model, one a user registered in ``noise_scale.models.MODELS``, or an import path.

    The registry imports flax, so it is consulted only for a name that is not shipped.
    """
    if name in MODELS or is_import_path(name):
        return True
    from noise_scale.models import MODELS as registry

    return name in registry


def split_name(name) -> bool:
    """'' (chosen automatically) or a TFDS split, maybe sliced: ``validation``, ``train[-10%:]``."""
    return isinstance(name, str) and (
        name == "" or bool(re.match(r"^[a-z][a-z0-9_]*(\[[^\[\]]*\])?$", name)))


def channel_stats(minimum: float) -> Check:
    """() or three finite numbers >= ``minimum`` (per-channel mean or standard deviation)."""
    return lambda v: isinstance(v, tuple) and (v == () or (
        len(v) == 3 and all(_is_number(x) and x >= minimum for x in v)))


def boolean() -> Check:
    return lambda v: isinstance(v, bool)


def text() -> Check:
    return lambda v: isinstance(v, str)


def tuple_of_positive_ints() -> Check:
    return lambda v: isinstance(v, tuple) and len(v) > 0 and all(
        _is_int(x) and x > 0 for x in v)


def increasing_numbers() -> Check:
    """A tuple of finite numbers, each strictly above the one before (may be empty)."""
    return lambda v: isinstance(v, tuple) and all(_is_number(x) for x in v) and all(
        a < b for a, b in zip(v, v[1:]))


# -------------------------------------------------------------------- table
@dataclasses.dataclass(frozen=True)
class Field:
    """A config field: its check, the valid range (completes "it must be ..."), the fix.

    ``bad`` holds values of the field's own type that the check refuses (for the
    tests); where no such value exists, ``no_bad`` says why.
    """

    check: Check
    valid: str
    fix: str
    bad: tuple = ()
    no_bad: str = ""
    required: bool = True


def _choices(names) -> str:
    return "one of " + ", ".join(names)


FIELDS: dict[str, Field] = {
    "seed": Field(integer(0, MAX_EXAMPLES), f"an integer in [0, {MAX_EXAMPLES}]", "--config.seed=0",
              (-1, 2**63)),
    "variant": Field(text(), "a string (the config file's name for the variant)",
                 "--config=configs/FILE.py:VARIANT", no_bad="free text: any string names it",
                 required=False),
    # Data.
    "dataset": Field(dataset_name, _choices(DATASETS) + ", another TFDS image-classification "
                 "dataset (e.g. cifar100) or your own loader as module:function",
                 "--config.dataset=mnist1d (or cifar100, or my_pkg.data:load)",
                 ("", "Not A Name", "my_pkg.data:", "CIFAR-100")),
    "dataset_size": Field(integer(1, MAX_EXAMPLES), f"an integer in [1, {MAX_EXAMPLES:,}] (N, the "
                      "training split's size; the clock counts examples in an int32)",
                      "--config.dataset_size=40000 (MNIST-1D; CIFAR-10 50000)",
                      (0, -5, 10**21)),
    "data_dir": Field(text(), "a string ('' = the default location)", "--config.data_dir=''",
                  no_bad="free text; validate_paths checks the path itself"),
    "eval_batch_size": Field(integer(1), "an integer >= 1", "--config.eval_batch_size=1000", (0, -1)),
    "eval_split": Field(split_name, "'' (test if it is labelled, else validation) or a split of "
                    "the TFDS dataset, e.g. validation or train[-10%:]",
                    "--config.eval_split=validation", ("Validation", "test+validation",
                                                       "validation[:10%")),
    "prefetch": Field(integer(0), "an integer >= 0 (batches prepared ahead)",
                  "--config.prefetch=2", (-1,)),
    "image_size": Field(integer(1), "an integer >= 1 (pixels)",
                    "--config.image_size=224 (CIFAR-10: 32)", (0, -32)),
    "data_workers": Field(integer(0), "an integer >= 0 (0 = one per CPU)",
                      "--config.data_workers=0", (-3,)),
    "image_mean": Field(channel_stats(minimum=0), "() (computed from the training split) or one "
                    "number per channel, in pixel units 0-255", "--config.image_mean='()'",
                    ((1.0, 2.0), (-1.0, 0.0, 0.0), (math.nan, 1.0, 1.0))),
    "image_std": Field(channel_stats(minimum=1e-6), "() (computed from the training split) or one "
                   "number > 0 per channel, in pixel units", "--config.image_std='()'",
                   ((60.0,), (0.0, 60.0, 60.0), (-1.0, 1.0, 1.0))),
    # Model.
    "model": Field(registered_model, _choices(MODELS) + ", a name registered in "
               "noise_scale.models.MODELS, or your own as module:Class",
               "--config.model=cnn (or my_pkg.nets:Net)", ("resnet18", "", "my_pkg.nets:")),
    "cnn_channels": Field(tuple_of_positive_ints(), "a non-empty tuple of positive integers",
                      "--config.cnn_channels=(16,32,32)", ((), (16, 0, 32), (16, -1), (16, 2.5))),
    "ghost_batch_size": Field(integer(0), "an integer >= 0 (0 = no batch norm; else examples "
                          "per batch-norm statistic)", "--config.ghost_batch_size=16", (-64,)),
    "batch_norm_batch_size": Field(integer(0), "an integer >= 0 (0 = schedule.batch_size; else "
                               "the batch whose update keeps momentum 0.9)",
                               "--config.batch_norm_batch_size=32", (-1, -32)),
    "dtype": Field(one_of(*DTYPE_NAMES), _choices(DTYPE_NAMES), "--config.dtype=float32",
               ("float16", "fp32")),
    # Optimizer.
    "optimizer": Field(one_of(*OPTIMIZERS), _choices(OPTIMIZERS), "--config.optimizer=momentum",
                   ("rmsprop",)),
    "weight_decay": Field(number(minimum=0), "a finite number >= 0",
                      "--config.weight_decay=0.0005", (-1e-4, math.nan)),
    "label_smoothing": Field(fraction(), "a number in [0, 1)", "--config.label_smoothing=0.1",
                         (-0.1, 1.0)),
    "adam_b2": Field(fraction(), "a number in [0, 1)", "--config.adam_b2=0.999", (1.0, -0.5)),
    "adam_eps": Field(number(positive=True), "a finite number > 0", "--config.adam_eps=1e-8",
                  (0.0, -1e-8)),
    "adam_b2_rescale": Field(boolean(), "true or false (b2 per example: b2^(B/B_ref))",
                         "--config.adam_b2_rescale=true", no_bad="both booleans are valid"),
    "max_device_batch": Field(integer(0), "an integer >= 0 (0 = never accumulate)",
                          "--config.max_device_batch=0", (-1,)),
    "slices": Field(lambda v: isinstance(v, tuple) and all(_is_int(x) and x > 0 for x in v),
                "a tuple of device counts > 0 (() = only the current one)",
                "--config.slices=(8,32,64)", ((0, 8), (8, -2), (8.5,))),
    "stop_at_stage": Field(integer(0), "an integer >= 0 (0 = never; else a stage index >= 1)",
                       "--config.stop_at_stage=0", (-1,)),
    "allow_ghost_change": Field(boolean(), "true or false", "--config.allow_ghost_change=false",
                            no_bad="both booleans are valid"),
    "device_memory_bytes": Field(integer(0), "an integer >= 0 (0 = the device's own report)",
                             "--config.device_memory_bytes=0", (-1,)),
    "compilation_cache_dir": Field(text(), "a path ('' = this user's private cache, per run; "
                               "'off' = none)", "--config.compilation_cache_dir=''",
                               no_bad="free text: any path names a directory"),
    "measure_noise_scale": Field(boolean(), "true or false", "--config.measure_noise_scale=true",
                             no_bad="both booleans are valid"),
    "noise_scale_ema_epochs": Field(number(positive=True), "a finite number > 0 (the smoothing "
                                "horizon of the measured noise scale, in epochs)",
                                "--config.noise_scale_ema_epochs=0.25", (0.0, -1.0, math.inf)),
    "noise_scale_every_steps": Field(integer(1), "an integer >= 1 (measure the noise scale on "
                                 "every k-th update; 1 = every update, one program)",
                                 "--config.noise_scale_every_steps=10", (0, -1)),
    "noise_scale_min_measurements": Field(integer(1), "an integer >= 1 (the fewest measurements "
                                      "the smoothed noise scale averages over; 1 = τ alone)",
                                      "--config.noise_scale_min_measurements=20", (0, -1)),
    "noise_scale_dense_epochs": Field(number(minimum=0), "a finite number >= 0 (epochs before "
                                  "each boundary where the measured cap decides in which "
                                  "every update measures; 0 = every k-th only)",
                                  "--config.noise_scale_dense_epochs=1.0", (-1.0, math.inf)),
    # Schedule.
    "schedule.rule": Field(one_of(*RULES), _choices(RULES), "--config.schedule.rule=increase_batch",
                       ("cosine",)),
    "schedule.adam_rule": Field(one_of("", *ADAM_RULES), "'' (= sqrt) or " + _choices(ADAM_RULES),
                            "--config.schedule.adam_rule=sqrt", ("root", "SQRT")),
    "schedule.batch_size": Field(integer(1), "an integer >= 1", "--config.schedule.batch_size=32",
                             (0, -32)),
    "schedule.learning_rate": Field(number(positive=True), "a finite number > 0",
                                "--config.schedule.learning_rate=0.05",
                                (0.0, -0.1, math.inf, math.nan)),
    "schedule.momentum": Field(fraction(), "a number in [0, 1) (0 = plain SGD)",
                           "--config.schedule.momentum=0.9", (1.0, -0.1)),
    "schedule.total_epochs": Field(number(positive=True), "a finite number > 0",
                               "--config.schedule.total_epochs=40", (0.0, -1.0)),
    "schedule.boundaries": Field(increasing_numbers(), "a tuple of strictly increasing numbers",
                             "--config.schedule.boundaries=(12.0,24.0,32.0)",
                             ((24.0, 12.0), (12.0, 12.0), (math.nan,))),
    "schedule.factor": Field(number(above=1), "a finite number > 1 (the size of each step)",
                         "--config.schedule.factor=5", (1.0, 0.5)),
    "schedule.batch_factor": Field(lambda v: _is_number(v) and (v == 0 or v > 1),
                               "0 (B grows by schedule.factor, keeping g) or a finite number > 1 "
                               "(the mismatched control: B grows by this, g is not kept)",
                               "--config.schedule.batch_factor=0", (1.0, 0.5, -2.0, math.inf)),
    "schedule.max_batch_size": Field(integer(0), "an integer >= 0 (0 = no cap)",
                                 "--config.schedule.max_batch_size=0", (-1,)),
    "schedule.noise_cap": Field(number(minimum=0), "a finite number >= 0 (0 = off; else B may "
                            "grow only to c × the measured noise scale)",
                            "--config.schedule.noise_cap=0", (-1.0, math.inf, math.nan)),
    "schedule.lr_scale": Field(number(positive=True), "a finite number > 0 (1 = keep ε0 and B0)",
                           "--config.schedule.lr_scale=1", (0.0, -5.0)),
    "schedule.raise_momentum_to": Field(fraction(), "a number in [0, 1) (0 = keep m)",
                                    "--config.schedule.raise_momentum_to=0", (1.0, -0.5)),
    "schedule.exact": Field(boolean(), "true or false", "--config.schedule.exact=false",
                        no_bad="both booleans are valid"),
    "schedule.batch_multiple": Field(integer(1), "an integer >= 1 (e.g. the device count)",
                                 "--config.schedule.batch_multiple=1", (0, -8)),
    "schedule.warmup_epochs": Field(number(minimum=0), "a finite number >= 0 (0 = no warm-up)",
                                "--config.schedule.warmup_epochs=0", (-1.0,)),
    "schedule.shape": Field(one_of(*SHAPES), _choices(SHAPES), "--config.schedule.shape=cosine",
                        ("cos", "constant")),
    "schedule.final_lr_fraction": Field(fraction(), "a number in [0, 1) (ε at the end over ε0)",
                                    "--config.schedule.final_lr_fraction=0", (1.0, -0.1)),
    "schedule.power": Field(number(positive=True), "a finite number > 0 (polynomial shape)",
                        "--config.schedule.power=2", (0.0, -1.0)),
    "schedule.decay_fraction": Field(number(above=0, maximum=1), "a number in (0, 1] (the share "
                                 "of training a wsd shape decays over)",
                                 "--config.schedule.decay_fraction=0.2", (0.0, 1.5)),
    "schedule.knots": Field(knots(), "a tuple of (epoch, learning rate) pairs in increasing epochs "
                        "(piecewise shape; () otherwise)",
                        "--config.schedule.knots='((0,0.1),(30,0.1),(40,0.001))'",
                        (((0.0, 0.1), (0.0, 0.2)), ((1.0,),), ((0.0, -0.1), (2.0, 0.1)))),
    "schedule.max_stages": Field(integer(1), "an integer >= 1 (batch sizes, so compiles, a "
                             "converted shape may use)", "--config.schedule.max_stages=6",
                             (0, -2)),
    "schedule.ladder_ratio": Field(lambda v: _is_number(v) and (v == 0 or v > 1),
                               "0 (the ladder with the fewest updates) or a ratio > 1 between "
                               "successive batch sizes (a geometric ladder)",
                               "--config.schedule.ladder_ratio=2", (1.0, 0.5, -2.0)),
    "schedule.warmup_start_lr": Field(number(minimum=0), "a finite number >= 0",
                                  "--config.schedule.warmup_start_lr=0.1", (-0.1,)),
    # The branching probe (default_config.probe_config).
    "probe.every_epochs": Field(number(minimum=0), "a finite number >= 0 (0 = no probe; else "
                            "epochs between probes)", "--config.probe.every_epochs=4",
                            (-1.0, math.inf, math.nan)),
    "probe.factors": Field(lambda v: isinstance(v, tuple) and len(v) >= 2 and v[0] == 1 and all(
                           _is_int(k) for k in v) and all(a < b for a, b in zip(v, v[1:])),
                       "a tuple of at least two strictly increasing integers starting at 1 "
                       "(the ×1 branch is the reference)", "--config.probe.factors='(1,2,4,8)'",
                       ((2, 4), (1,), (1, 4, 2), (1, 0.5), (1, 1, 2), (0, 1, 2))),
    "probe.branch_examples": Field(integer(1), "an integer >= 1 (examples each branch trains "
                               "on; a multiple of B0 × the largest factor)",
                               "--config.probe.branch_examples=2048", (0, -2048)),
    "probe.repeats": Field(integer(1), "an integer >= 1", "--config.probe.repeats=2", (0, -1)),
    "probe.eval_examples": Field(integer(1), "an integer >= 1 (training examples each "
                             "branch's loss is read on)", "--config.probe.eval_examples=2048",
                             (0, -1)),
    "probe.compare": Field(one_of("ratio", "progress"), "'ratio' or 'progress'",
                       "--config.probe.compare=ratio", ("loss", "")),
    "probe.tolerance": Field(number(positive=True), "a finite number > 0 (what a larger batch "
                         "may give up against the ×1 branch: a loss ratio above 1 with "
                         "compare='ratio', a share of its progress with 'progress')",
                         "--config.probe.tolerance=0.15", (0.0, -0.5, math.inf, math.nan)),
    # Record.
    "log_every_steps": Field(integer(1), "an integer >= 1", "--config.log_every_steps=50", (0, -50)),
    "eval_every_epochs": Field(number(positive=True), "a finite number > 0",
                           "--config.eval_every_epochs=1", (0.0, -1.0)),
    "checkpoint_every_epochs": Field(number(minimum=0), "a finite number >= 0 (0 = only at stage "
                                 "boundaries and the end)", "--config.checkpoint_every_epochs=1",
                                 (-5.0,)),
    "checkpoint_every_minutes": Field(number(minimum=0), "a finite number >= 0 (0 = only the "
                                  "epoch rule)", "--config.checkpoint_every_minutes=0", (-1.0,)),
    "keep_checkpoints": Field(integer(1), "an integer >= 1", "--config.keep_checkpoints=2", (0, -1)),
    "profile_steps": Field(integer(0), "an integer >= 0 (steps traced at the start of each chosen "
                       "stage; 0 = no profile)", "--config.profile_steps=5", (-1,)),
    "profile_stages": Field(lambda v: isinstance(v, tuple) and len(set(v)) == len(v) and all(
                            _is_int(x) and x >= 0 for x in v),
                        "a tuple of distinct stage indices >= 0 (() = every stage)",
                        "--config.profile_stages='(0,1)'", ((-1,), (1, 1), (0.5,))),
}


# ------------------------------------------------------------------ message
def invalid(name: str, value, valid: str, fix: str) -> ConfigError:
    """The one message: field, value given, valid range, fix (``field``: ``config.<name>``)."""
    return ConfigError(f"config.{name}={value!r} is invalid: it must be {valid}. Fix: {fix}.",
                       field=f"config.{name}")


MISSING = object()


def check_fields(config, names, *, required: bool = False) -> None:
    """Each of ``names`` (keys of :data:`FIELDS`) passes its own check, or ConfigError.

    A field the config lacks is skipped, unless ``required`` and the table requires it.
    """
    for name in names:
        field, value = FIELDS[name], lookup(config, name)
        if value is MISSING:
            if required and field.required:
                raise ConfigError(
                    f"config.{name} is missing. Fix: start the config from "
                    "noise_scale.default_config.get_config(), which sets every field.",
                    field=f"config.{name}")
        elif not field.check(value):
            raise invalid(name, value, field.valid, field.fix)


def lookup(config, dotted: str):
    """``config.<dotted>``, or ``MISSING``."""
    node = config
    for part in dotted.split("."):
        if part not in node:
            return MISSING
        node = node[part]
    return node
