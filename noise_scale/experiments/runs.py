"""Which runs the comparison needs, and which of them a workdir already holds.

A run is one (variant, seed) of the config file, in ``WORKDIR/<variant>/seed<s>/``.
Everything is planned and validated before anything trains, so a typo in a
variant or an override stops the command before the first run, not after it.

Reuse. A run is finished when its folder holds ``DONE`` (written by
``mark_done`` after training returns, with the final record and the run's
experiment fingerprint). Finished runs are read, not rerun; a finished run of a
*different* experiment (other overrides) stops the command with the fields that
differ. A run without ``DONE`` is trained again: if it left checkpoints it
resumes from the newest one (metrics.jsonl is kept, train cuts it back to the
checkpoint); otherwise its metrics.jsonl is deleted and it starts from scratch.
Nothing else in a run folder is ever deleted.

Optimizers (``optimizer``, when it differs from the config's; output goes to
``WORKDIR/<optimizer>/``). The conversion keeps the noise scale
g = ε/(1−m)(N/B−1) of every stage:

- ``sgd``: m → 0 and ε → ε/(1−m). ``increased_momentum`` (it raises m) has no
  SGD counterpart and is skipped with a note.
- ``momentum`` / ``nesterov``: the same ε and m, the other update rule.
- ``adam`` / ``adamw``: Adam normalises its step, so SGD's ε does not carry over. We use
  ε_adam = ADAM_LR_PER_EFFECTIVE_LR · ε/(1−m) = 0.002 · ε/(1−m): 1e-3 (Adam's
  usual default) for MNIST-1D's ε = 0.05, m = 0.9, and 2e-3 for CIFAR-10's
  ε = 0.1, m = 0.9. The schedule's m is Adam's b1 (0.9 if the config has none);
  the schedule's steps then follow Adam's own rule (``noise_scale.adaptive``: the
  square-root rule by default, η÷√k with each B×k, B ∝ η²). ``increased_momentum`` is
  skipped: b1 does not scale Adam's step. ``configs/mnist1d_adam.py`` compares the rules.

The workdir is read and written through ``etils.epath`` (local or ``gs://``).
"""

from __future__ import annotations

import dataclasses
import json

from etils import epath

from noise_scale import config_lib, errors, run_files
from noise_scale.config import storage, validation
from noise_scale.default_config import OPTIMIZERS
from noise_scale.experiments import agreement
from noise_scale.metrics import read_metrics

ADAM_LR_PER_EFFECTIVE_LR = 0.002  # ε_adam = 0.002 · ε/(1−m); see the module docstring
ADAM_DEFAULT_B1 = 0.9
CONVERSION_NOTES = {
    "sgd": "Plain SGD: ε → ε/(1−m) and m → 0 in every stage, which keeps g.",
    "adam": (f"Adam: ε_adam = {ADAM_LR_PER_EFFECTIVE_LR:g} · ε/(1−m), the schedule's m as b1. "
             "This learning-rate mapping is the project's own choice (Adam's usual 1e-3 for "
             "MNIST-1D's ε/(1−m) = 0.5), not the paper's; each batch step follows Adam's "
             "square-root rule (η÷√k with B×k; noise_scale.adaptive)."),
}
DONE = run_files.DONE
# --seeds at most: each seed is a training run per variant, planned before any starts;
# 10**9 planned silently for ever. A thousand is far past what a verdict needs.
MAX_SEEDS = 1000


def config_roles(spec: str) -> tuple[list[str], str, tuple[str, ...]]:
    """(every variant, the reference, the controls) the config file declares.

    ``VARIANTS`` (in order), ``REFERENCE`` (default ``decay_lr``) and ``CONTROLS``
    (default none): module constants, so a config names its own comparison.
    """
    module = config_lib.config_module(spec.partition(":")[0])
    reference = getattr(module, "REFERENCE", agreement.DEFAULT_REFERENCE)
    return list(getattr(module, "VARIANTS", ())), reference, tuple(getattr(module, "CONTROLS", ()))


def check_inputs(config: config_lib.ConfigArgs, workdir: str, variants, seeds, jobs,
                 optimizer: str) -> list[str]:
    """The variants as a list (a comma-separated string is accepted; None: every variant of
    the config file); bad input raises ConfigError.

    Each message names the flag and the fix, so the command and a notebook read the same.
    """
    if not config.spec:
        raise errors.ConfigError("--config is required: the config file whose variants to "
                                 "compare, e.g. --config=configs/mnist1d.py.")
    if ":" in config.spec:
        raise errors.ConfigError(
            f"--config={config.spec}: give the file without a variant; choose the variants "
            "with --variants=a,b (default: every variant of the file).")
    if not workdir:
        raise errors.ConfigError("--workdir is required: the directory for the runs, "
                                 "figure.png, report.md and summary.json.")
    # a gs:// workdir or data_dir: its packages and bucket, before JAX starts (each run's
    # validate_paths checks its own data_dir again)
    storage.preflight(workdir, dict(config.overrides).get("data_dir", ""))
    if variants is None:
        variants = config_roles(config.spec)[0]
    if isinstance(variants, str):
        variants = variants.split(",")
    variants = list(dict.fromkeys(v.strip() for v in variants if v.strip()))
    if not variants:
        raise errors.ConfigError("--variants is empty; name at least one variant, e.g. "
                                 "--variants=decay_lr,increase_batch, or leave it out for all.")
    if not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise errors.ConfigError(f"--seeds={seeds}: expected a whole number in [1, "
                                 f"{MAX_SEEDS}] (seeds 0 … S−1 run, each a full training run "
                                 f"per variant; the verdict needs {agreement.DEFAULT_SEEDS}).")
    if optimizer and optimizer not in OPTIMIZERS:
        raise errors.ConfigError(f"--optimizer={optimizer}: unknown optimizer; choose one of "
                                 f"{', '.join(OPTIMIZERS)}.")
    if not isinstance(jobs, int) or jobs < 1:
        raise errors.ConfigError(f"--jobs={jobs}: expected a whole number >= 1.")
    return variants


def convert_optimizer(config, optimizer: str) -> str | None:
    """Switch ``config`` to ``optimizer`` keeping every stage's g (see the module docstring).

    Returns why this variant cannot run with ``optimizer`` (it is then skipped), or None.
    """
    old = config.optimizer
    if not optimizer or optimizer == old:
        return None
    s = config.schedule
    adaptive = optimizer in ("adam", "adamw")
    if adaptive and s.get("noise_cap", 0):
        return ("its measured cap reads the raw gradients' noise scale, which says nothing of "
                "Adam's preconditioned steps")
    if adaptive and s.raise_momentum_to and s.get("adam_rule", "") != "linear":
        return ("it raises the momentum (B ∝ 1/(1−m)); Adam divides its first moment by "
                "(1 − b1), so a larger b1 does not enlarge its step (schedule.adam_rule=linear "
                "runs it as the paper did)")
    if old in ("adam", "adamw"):
        raise errors.ConfigError(
            f"--optimizer={optimizer}: the config uses adam, whose learning rate does not map "
            "onto SGD's; start from an SGD-family config (sgd, momentum, nesterov).")
    if optimizer == "sgd":
        if s.raise_momentum_to:
            return "it raises the momentum (B ∝ 1/(1−m)), which plain SGD does not have"
        s.learning_rate = s.learning_rate / (1.0 - s.momentum)
        s.momentum = 0.0
    elif adaptive:
        effective = s.learning_rate / (1.0 - s.momentum)
        s.learning_rate = ADAM_LR_PER_EFFECTIVE_LR * effective
        if s.momentum <= 0:
            s.momentum = ADAM_DEFAULT_B1
    config.optimizer = optimizer
    return None


@dataclasses.dataclass
class RunSpec:
    variant: str
    seed: int
    config: object
    workdir: epath.Path
    total_examples: int  # where the schedule ends: the last record's examples_seen
    fingerprint: dict

    def end(self, records) -> int:
        """Where this run ends given its records: ``total_examples``, except under rule
        'measured', whose ladder (and so where its last batch ends) is decided as it runs:
        there, where the ladder its last record names ends."""
        batches = records[-1].get("measured_batches") if records else None
        if not batches:
            return self.total_examples
        from noise_scale.schedule import schedule_from_config

        decided = [int(b) for b in batches.split(",")]
        return schedule_from_config(self.config, measured=decided).plan(
            1, self.config.max_device_batch)[-1].end_example


@dataclasses.dataclass
class Plan:
    outdir: epath.Path  # WORKDIR, or WORKDIR/<optimizer> when the optimizer is converted
    runs: list[RunSpec]  # seed-major: every variant of seed 0, then of seed 1, ...
    notes: list[str]  # variants skipped, and why
    reference_config: object  # the reference's config (else the first run's): boundaries, epochs
    reference: str  # the variant every schedule is compared with
    roles: dict  # variant → agreement.role: reference | control | with cost | equivalent


def plan_runs(config: config_lib.ConfigArgs, workdir: str, variants: list[str], seeds: int,
              optimizer: str, num_devices: int) -> Plan:
    """Every run's config, validated before anything trains."""
    base = config.load()  # validates the overrides once
    root = epath.Path(workdir)
    outdir = root / optimizer if optimizer and optimizer != base.optimizer else root
    runs, notes, skipped = [], [], set()
    if optimizer and optimizer != base.optimizer:
        notes.append(CONVERSION_NOTES.get(optimizer, f"{optimizer}: the same ε and m as "
                                          f"{base.optimizer}, the other update rule."))
    for seed in range(seeds):
        for variant in variants:
            if variant in skipped:
                continue
            run = _run_spec(config, variant, seed, optimizer, outdir, num_devices)
            if isinstance(run, str):
                skipped.add(variant)
                notes.append(f"{variant} skipped with --optimizer={optimizer}: {run}.")
            else:
                runs.append(run)
    if not runs:
        raise errors.ConfigError("no variant can run: " + " ".join(notes))
    _, reference, controls = config_roles(config.spec)
    configs = {r.variant: r.config for r in runs}
    roles = {v: agreement.role(v, reference, controls, c) for v, c in configs.items()}
    return Plan(outdir, runs, notes, configs.get(reference, runs[0].config), reference, roles)


def _run_spec(config: config_lib.ConfigArgs, variant: str, seed: int, optimizer: str,
              outdir: epath.Path, num_devices: int) -> RunSpec | str:
    """One run, or why ``optimizer`` cannot run this variant."""
    from noise_scale.schedule import schedule_from_config
    from noise_scale.train import checkpoint as checkpoint_lib

    try:
        run_config = config.load(variant)
    except errors.ConfigError as e:
        raise errors.ConfigError(f"--variants: {variant}: {e}") from None
    run_config.seed = seed
    why = convert_optimizer(run_config, optimizer)
    if why:
        return why
    workdir = outdir / variant / f"seed{seed}"
    try:
        validation.validate_config(run_config)  # every field, before anything trains
        validation.validate_paths(run_config, str(workdir))
        schedule = schedule_from_config(run_config)
        end = schedule.plan(num_devices, run_config.max_device_batch)[-1].end_example
    except errors.UsageError as e:
        raise errors.ConfigError(f"variant {variant}: {e}") from None
    fp = json.loads(json.dumps(checkpoint_lib.experiment_fingerprint(run_config, schedule)))
    return RunSpec(variant, seed, run_config, workdir, end, fp)


def read_records(workdir) -> list[dict]:
    """metrics.jsonl, one record per examples_seen (the last one written wins), in order."""
    by_position = {r["examples_seen"]: r for r in read_metrics(str(workdir))}
    return [by_position[k] for k in sorted(by_position)]


def finished(run: RunSpec) -> dict | None:
    """The DONE marker's final record if the run is finished (and is this experiment)."""
    from noise_scale.train.checkpoint import compare_fingerprints, missing_fields_message

    marker = run.workdir / DONE
    if not marker.exists():
        return None
    try:
        done = json.loads(marker.read_text())
        final = done["final_record"]
    except (ValueError, KeyError, TypeError):
        return None  # a damaged marker: treat the run as unfinished
    changes, missing = compare_fingerprints(done.get("fingerprint", {}), run.fingerprint)
    if changes:
        raise errors.ConfigError(
            f"{run.workdir} holds a finished run of a different experiment; what differs "
            f"(finished run -> now): {'; '.join(changes[:6])}{'; ...' if len(changes) > 6 else ''}. "
            "Use another --workdir for the new settings (or rerun with the old ones)."
        )
    if missing:
        raise errors.ConfigError(f"{run.workdir} holds a finished run that cannot be reused: "
                                 + missing_fields_message(missing, run.fingerprint))
    records = read_records(run.workdir)
    if not records or records[-1]["examples_seen"] != run.end(records):
        return None  # metrics.jsonl missing or cut short: rerun
    return final


def prepare_unfinished(run: RunSpec) -> str:
    """Start from scratch unless the run left checkpoints to resume from; returns which.

    A workdir holding another experiment's records is refused first (``identity``): its
    records are never deleted here."""
    from noise_scale.train import identity

    identity.check(str(run.workdir), run.fingerprint)
    if (run.workdir / "checkpoints").exists():
        return "resuming"
    metrics = run.workdir / "metrics.jsonl"
    if metrics.exists():
        metrics.unlink()
    return "running"


def resume_estimate(run: RunSpec) -> int:
    """Examples an unfinished run will not redo: its last record's, if it can resume."""
    if not (run.workdir / "checkpoints").exists():
        return 0
    records = read_records(run.workdir)
    return min(records[-1]["examples_seen"], run.total_examples) if records else 0


def mark_done(run: RunSpec) -> list[dict]:
    """Check that training reached the schedule's end, write ``DONE``; returns the records."""
    records = read_records(run.workdir)
    if not records or records[-1]["examples_seen"] != run.end(records):
        raise errors.SetupError(
            f"{run.variant} seed {run.seed}: training returned but "
            f"{run.workdir}/metrics.jsonl ends at examples_seen="
            f"{records[-1]['examples_seen'] if records else 0:,}, not at the schedule's end "
            f"{run.end(records):,}. If its checkpoints folder holds a finished run whose "
            "metrics.jsonl was removed, delete that checkpoints folder to retrain the run.")
    run_files.write_text(run.workdir / DONE, json.dumps(
        {"final_record": records[-1], "fingerprint": run.fingerprint}, indent=2, sort_keys=True))
    return records
