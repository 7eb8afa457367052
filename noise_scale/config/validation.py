"""One validation layer, run before anything is built: the config, then the paths.

:func:`validate_config` runs every field's own check (``noise_scale.config.fields``,
one table), then the checks that relate fields (here), then builds the schedule,
whose layer owns the schedule's rules; :func:`validate_paths` checks the workdir
and ``config.data_dir`` (a remote one through ``noise_scale.config.storage``).
Each raises one :class:`~noise_scale.errors.UsageError` (exit status 2) naming the
field, the value given, the valid range and the fix. Nothing here imports JAX,
creates a file or writes anything, so the commands call it first thing and fail in
milliseconds (a remote path costs one question to its bucket).
"""

from __future__ import annotations

import math
import os

from noise_scale import run_files
from noise_scale.adaptive import ADAPTIVE, adam_rule, per_stage
from noise_scale.config import storage
from noise_scale.config.fields import (
    FIELDS,
    MISSING,
    check_fields,
    invalid,
    is_tfds_name,
    lookup,
)
from noise_scale.config.user_code import is_import_path, resolve
from noise_scale.default_config import MAX_EXAMPLES, MODEL_GHOST_SIZES, MODELS
from noise_scale.errors import ConfigError, UsageError
from noise_scale.schedule import schedule_from_config
from noise_scale.schedule.rules import CAPPED_RULES

BATCH_NORM_MODELS = {name: g for name, g in MODEL_GHOST_SIZES.items() if g}  # need ghost > 0


def validate_config(config) -> None:
    """Every field's check, then the cross-field checks, then the schedule is built.

    Raises ConfigError (or the schedule's ScheduleError), both exit status 2.
    """
    check_fields(config, FIELDS, required=True)
    _check_clock(config)
    _check_user_code(config)
    _check_model(config)
    _check_optimizer(config)
    _check_schedule(config)
    _check_profile(config)
    schedule = schedule_from_config(config)  # ScheduleError (a UsageError) names the problem
    _check_adam_stages(config, schedule)


# Fields in epochs that the loop turns into examples on the clock (examples seen, an int32).
EPOCH_FIELDS = ("schedule.total_epochs", "eval_every_epochs", "checkpoint_every_epochs",
                "noise_scale_ema_epochs", "noise_scale_dense_epochs")


def _check_clock(config) -> None:
    """Every span in epochs fits the clock: N × epochs <= 2^31 − 1 examples.

    One check for the schedule command and for training: the schedule used to print
    a plan training then refused, and values near 1e308 ended in OverflowError."""
    n = config.dataset_size
    for name in EPOCH_FIELDS:
        value = lookup(config, name)
        if value is not MISSING and value * n > MAX_EXAMPLES:
            most = math.floor(MAX_EXAMPLES / n * 1e3) / 1e3  # shown rounded down: it fits
            fix = {"schedule.total_epochs": f"--config.{name}={most} or less",
                   "eval_every_epochs": f"--config.{name}={config.schedule.total_epochs:g} "
                   "(once, at the end)", "checkpoint_every_epochs": f"--config.{name}=0 "
                   "(at stage boundaries and the end)"}.get(name, FIELDS[name].fix)
            raise invalid(name, value, f"at most {most} epochs of config.dataset_size="
                          f"{n:,}: the clock counts examples seen in an int32 ({MAX_EXAMPLES:,} "
                          "at most)", fix)


def _check_user_code(config) -> None:
    """Import paths resolve now (a typo fails here, not after the data is read)."""
    if is_import_path(config.dataset):
        resolve(config.dataset, "dataset", "a function load(config) -> noise_scale.data.Dataset",
                "my_pkg.data:load")
    if is_import_path(config.model):
        resolve(config.model, "model", "a flax module class (or a function (config, "
                "num_classes) -> module)", "my_pkg.nets:Net")
    if config.eval_split and not is_tfds_name(config.dataset):
        raise invalid("eval_split", config.eval_split, f"'' for config.dataset="
                      f"{config.dataset!r}, whose loader decides what it evaluates on (the "
                      "field names a split of a TFDS dataset)", "--config.eval_split=''")
    if (config.image_mean == ()) != (config.image_std == ()):
        given, empty = ("image_mean", "image_std") if config.image_std == () else (
            "image_std", "image_mean")
        raise invalid(empty, (), f"given with config.{given} (both or neither)",
                      f"--config.{empty}='(R,G,B)' or --config.{given}='()' (computed)")


def _check_model(config) -> None:
    model, ghost, dataset, size = (config.model, config.ghost_batch_size, config.dataset,
                                   config.image_size)
    if model in BATCH_NORM_MODELS and ghost == 0:
        raise invalid("ghost_batch_size", ghost,
                      f"> 0 for config.model={model!r}, which uses batch norm throughout",
                      f"--config.ghost_batch_size={BATCH_NORM_MODELS[model]} (the paper's)")
    if model in BATCH_NORM_MODELS and dataset == "mnist1d":
        one_d = " or ".join(m for m in MODELS if m not in BATCH_NORM_MODELS)
        raise invalid("model", model, f"a model for the 1-D config.dataset={dataset!r} ({one_d}; "
                      f"{' and '.join(BATCH_NORM_MODELS)} need images)", "--config.model=cnn")
    if dataset == "cifar10" and size != 32:
        raise invalid("image_size", size, "32 for config.dataset='cifar10' (its native size)",
                      "--config.image_size=32")
    if dataset == "imagenet2012" and size < 32:
        raise invalid("image_size", size, ">= 32 for config.dataset='imagenet2012'",
                      "--config.image_size=224")


def _check_optimizer(config) -> None:
    s = config.schedule
    if config.optimizer == "sgd":
        if s.momentum != 0:
            raise invalid("schedule.momentum", s.momentum,
                          "0 with config.optimizer='sgd', which has no momentum",
                          f"--config.schedule.momentum=0 --config.schedule.learning_rate="
                          f"{s.learning_rate / (1 - s.momentum):g} (keeps g), or "
                          "--config.optimizer=momentum")
        if s.raise_momentum_to != 0:
            raise invalid("schedule.raise_momentum_to", s.raise_momentum_to,
                          "0 with config.optimizer='sgd', which has no momentum",
                          "--config.schedule.raise_momentum_to=0, or --config.optimizer=momentum")
    if config.optimizer in ADAPTIVE and s.momentum == 0:
        raise invalid("schedule.momentum", s.momentum,
                      f"> 0 with config.optimizer={config.optimizer!r}, which uses it as b1",
                      "--config.schedule.momentum=0.9")
    if s.get("adam_rule", "") and config.optimizer not in ADAPTIVE:
        raise invalid("schedule.adam_rule", s.adam_rule,
                      f"'' with config.optimizer={config.optimizer!r}: the rule chooses how "
                      "adam and adamw keep their noise, SGD's g is fixed by the paper",
                      "--config.schedule.adam_rule='' (or --config.optimizer=adam)")
    if config.optimizer in ADAPTIVE and adam_rule(config) == "sqrt" and s.raise_momentum_to:
        raise invalid("schedule.raise_momentum_to", s.raise_momentum_to,
                      f"0 with config.optimizer={config.optimizer!r} under the square-root "
                      "rule: Adam divides its first moment by (1 − b1), so a larger b1 does "
                      "not enlarge the step and B ∝ 1/(1−m) has no Adam counterpart",
                      "--config.schedule.raise_momentum_to=0, or "
                      "--config.schedule.adam_rule=linear (the paper's rule)")


def _check_adam_stages(config, schedule) -> None:
    """β2^(B/B_ref) at every stage's B must be a usable b2 in float32: in (0, 1)."""
    import numpy as np

    if config.optimizer not in ADAPTIVE:
        return
    for k, (stage, hp) in enumerate(zip(schedule.stages, per_stage(config, schedule))):
        b2 = np.float32(hp["b2"])
        if config.adam_b2_rescale and not 0.0 < b2 < 1.0:
            raise invalid(
                "adam_b2", config.adam_b2,
                f"a b2 whose per-example rescale b2^(B/{config.schedule.batch_size}) stays in "
                f"(0, 1) in float32 at every batch; at stage {k}'s B = {stage.batch_size:,} it "
                f"is {float(b2)!r}", "--config.adam_b2=0.999, or "
                "--config.adam_b2_rescale=false (b2 per update)")


def _check_noise_cap(config) -> None:
    s, fix = config.schedule, "--config.schedule.noise_cap=0 (no measured cap)"
    if config.optimizer in ADAPTIVE:
        raise invalid("schedule.noise_cap", s.noise_cap, f"0 with config.optimizer="
                      f"{config.optimizer!r}: the "
                      "noise scale is measured on the raw gradients, not on Adam's "
                      "preconditioned steps, so it says nothing about Adam's batch limit",
                      f"{fix}, or --config.optimizer=momentum")
    if not config.measure_noise_scale:
        raise invalid("schedule.noise_cap", s.noise_cap, "0 while config.measure_noise_scale "
                      "is off (the cap reads the measured noise scale)",
                      f"--config.measure_noise_scale=true, or {fix}")
    if s.rule not in CAPPED_RULES or s.shape != "step":
        raise invalid("schedule.noise_cap", s.noise_cap, "0 unless config.schedule.rule is "
                      f"{' or '.join(CAPPED_RULES)} with shape 'step' (the cap decides at each "
                      f"boundary whether B grows); got rule {s.rule!r}, shape {s.shape!r}",
                      f"{fix}, or --config.schedule.rule=increase_batch")


def _check_schedule(config) -> None:
    s = config.schedule
    if s.batch_factor and s.rule == "decay_lr":
        raise invalid("schedule.batch_factor", s.batch_factor,
                      "0 with config.schedule.rule='decay_lr', whose batch never grows",
                      "--config.schedule.batch_factor=0, or --config.schedule.rule=increase_batch")
    if s.noise_cap:
        _check_noise_cap(config)
    if s.raise_momentum_to and s.raise_momentum_to <= s.momentum:
        raise invalid("schedule.raise_momentum_to", s.raise_momentum_to,
                      f"0 (keep m) or in (schedule.momentum={s.momentum:g}, 1)",
                      f"--config.schedule.raise_momentum_to={(1 + s.momentum) / 2:g}, or 0")
    if s.shape != "step" and tuple(s.boundaries):
        raise invalid("schedule.boundaries", tuple(s.boundaries),
                      f"() with config.schedule.shape={s.shape!r}, which decays continuously "
                      "(boundaries belong to the step shape)", "--config.schedule.boundaries=()")
    if s.shape == "piecewise" and not s.knots:
        raise invalid("schedule.knots", tuple(s.knots), "(epoch, learning rate) pairs from 0 "
                      "to total_epochs for config.schedule.shape='piecewise'",
                      f"--config.schedule.knots='((0,{s.learning_rate:g}),"
                      f"({s.total_epochs:g},{s.learning_rate / 100:g}))'")


def _check_profile(config) -> None:
    if config.profile_stages and not config.profile_steps:
        raise invalid("profile_stages", tuple(config.profile_stages),
                      "() while config.profile_steps=0 (no step of them would be traced)",
                      "--config.profile_steps=5 to trace them, or --config.profile_stages='()'")


# --------------------------------------------------------------------- paths
def _is_url(path: str) -> bool:
    return "://" in path


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def validate_paths(config, workdir: str | None) -> None:
    """The workdir can be made or written; ``config.data_dir`` fits the dataset. Writes nothing.

    A remote workdir or data_dir (``gs://...``) gets ``storage.preflight``: the packages
    that open it are installed and its bucket answers.
    """
    if workdir:  # a scheme epath cannot open, or a link where a run file belongs
        run_files.check_workdir(workdir)
    _validate_local_paths(config, workdir)
    storage.preflight(workdir, config.data_dir)


def _validate_local_paths(config, workdir: str | None) -> None:
    if workdir and not _is_url(workdir):
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise UsageError(f"--workdir={workdir} is an existing file, not a directory. "
                             "Fix: pass a directory (new or existing) as --workdir.")
        base = _nearest_existing(workdir)
        if not os.path.isdir(base):
            raise UsageError(f"--workdir={workdir} cannot be created: {base} is a file. "
                             "Fix: pass a --workdir that is not under a file.")
        if not os.access(base, os.W_OK | os.X_OK):
            raise UsageError(f"--workdir={workdir} cannot be written: {base} is not writable "
                             "by this user. Fix: pass a --workdir you can write to (e.g. under "
                             "$HOME) or change the permissions of " + base + ".")
    data_dir = config.data_dir
    if not data_dir or _is_url(data_dir):
        return
    if is_tfds_name(config.dataset) and not os.path.isdir(data_dir):
        what = "is a file" if os.path.exists(data_dir) else "does not exist"
        raise ConfigError(
            f"config.data_dir={data_dir!r} {what}; for {config.dataset} it must be the "
            f"directory the TFDS dataset was prepared in. Fix: tfds build {config.dataset} "
            f"--data_dir={data_dir} --file_format=array_record, or --config.data_dir='' "
            "(the TFDS default ~/tensorflow_datasets).")
    if config.dataset == "mnist1d" and os.path.isfile(data_dir):
        raise ConfigError(
            f"config.data_dir={data_dir!r} is a file; for mnist1d it is the cache directory "
            "(created if missing). Fix: --config.data_dir='' (~/.cache/noise_scale) or a "
            "directory path.")
