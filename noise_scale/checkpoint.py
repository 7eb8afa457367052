"""Preemption-safe checkpoints: state, the example clock, and a fingerprint of the run.

One orbax ``CheckpointManager`` in ``<workdir>/checkpoints`` (a ``gs://`` workdir's
checkpoints in that bucket: ``run_files`` keeps URLs as URLs), one checkpoint per
save, numbered by **examples seen** — the clock that fixes the stage, the batch
size, ε, m and the data position at once. A checkpoint holds

- ``state``: parameters, batch-norm statistics, optimizer state (which holds
  the clock itself: the loop numbers the checkpoint by it, and a resume checks
  that the number and the restored clock agree);
- ``meta`` (JSON): the training-loss sums of the open logging window, compiles
  and wall time so far, and the run's fingerprint (the config fields that
  define the experiment, and the schedule). Updates, the stage and the next
  evaluation follow from the clock and are not stored.

There is no RNG state beyond the seed: every random choice (data order,
augmentation) is a function of (seed, position), so the position is enough.

Restoring the newest *intact* checkpoint: orbax writes to a temporary directory
and renames it when complete, so a half-written save is never listed; a listed
one that fails to read (corrupted later) is skipped with a warning in favour
of the previous one. A checkpoint of a different experiment is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging

import jax
import orbax.checkpoint as ocp

from noise_scale import run_files

# Fields that do not change what is trained: they may differ on resume.
NON_EXPERIMENT_FIELDS = {
    "log_every_steps", "checkpoint_every_epochs", "checkpoint_every_minutes",
    "keep_checkpoints", "prefetch", "data_dir", "max_device_batch", "eval_batch_size",
    # how and where it runs (the slices, a pause, memory, the compile cache), not what
    "slices", "stop_at_stage", "allow_ghost_change", "device_memory_bytes",
    "compilation_cache_dir",
    # what is evaluated, not what is trained: a resume may move off an unlabelled split
    "eval_split",
    "profile_steps", "profile_stages",  # a trace watches the steps, it changes none
}


class CheckpointMismatch(ValueError):
    """The workdir holds checkpoints of a different experiment."""


class NoIntactCheckpoint(RuntimeError):
    """Checkpoints exist but none can be read."""


# Fields added after runs were made, with the default that does what the code did before
# them: at that default they are left out of the fingerprint, so a finished or checkpointed
# run from before they existed still matches (and resumes) a config that has them.
ADDED_FIELDS = {"adam_b2_rescale": True, "schedule.adam_rule": "",
                # what is measured, not what is trained (a run without the cap trains the same)
                "noise_scale_min_measurements": 20, "noise_scale_dense_epochs": 1.0}


# The measured cap's decision rule. A capped run trains what its decisions make of the
# schedule, so a run decided by another rule is another experiment: its finished run or
# checkpoint is refused ("cap_rule: '<absent>' -> ...") rather than mixed with new seeds.
# Runs before this key decided on the point estimate (|G|² <= 0 read as grow).
CAP_RULE = "B_new <= c x the one-sided 95 % lower bound of B_simple (else hold)"


def experiment_fingerprint(config, schedule) -> dict:
    """The config fields and schedule that define the experiment, as plain JSON."""
    from noise_scale import adaptive
    from noise_scale.schedule import to_dict

    fp = {"config": experiment_fields(json.loads(config.to_json())),
          "schedule": to_dict(schedule)["stages"]}
    adam = adaptive.per_stage(config, schedule)
    if adam is not None:  # b2, eps and λ per stage: what the rule made of them
        fp["adam"] = adam
    if config.schedule.get("noise_cap", 0):  # a capped run trains by its cap's decision rule
        fp["cap_rule"] = CAP_RULE
    return fp


def experiment_fields(config_json: dict) -> dict:
    """The fields of a config (as its JSON) that define the experiment: the fingerprint's
    ``config``; also what a workdir's ``config.json`` is compared by."""
    fields = {k: v for k, v in config_json.items() if k not in NON_EXPERIMENT_FIELDS}
    for dotted, default in ADDED_FIELDS.items():  # at its default: as before the field existed
        *parents, leaf = dotted.split(".")
        node = fields
        for p in parents:
            node = node.get(p, {})
        if leaf in node and node[leaf] == default:
            del node[leaf]
    return fields


def fingerprint_digest(fp: dict) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint_diff(old, new, prefix="") -> list[str]:
    """'field: old -> new' for every leaf that differs; long values (the stage list) say 'differs'."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += fingerprint_diff(old.get(k, "<absent>"), new.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    if old == new:
        return []
    if len(repr(old)) + len(repr(new)) > 120:  # e.g. the schedule's stage list
        return [f"{prefix.rstrip('.')} differs"]
    return [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def mismatch_message(where: str, old: dict, new: dict) -> str:
    """Why a workdir holding run ``old`` refuses run ``new``, what differs, and the fix."""
    changes = fingerprint_diff(old, new)
    return (f"{where} of a different run; resuming would silently change the experiment. "
            "What differs (workdir -> now): " + "; ".join(changes[:8])
            + ("; ..." if len(changes) > 8 else "")
            + ". Start the new run in a fresh --workdir (or rerun with the old config to "
            "resume it); nothing was overwritten.")


class Checkpointer:
    def __init__(self, workdir: str, fingerprint: dict, keep: int = 2):
        self.directory = str(run_files.path(workdir, run_files.CHECKPOINTS))
        self.fingerprint = fingerprint
        self.digest = fingerprint_digest(fingerprint)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=True,
                cleanup_tmp_directories=True,
            ),
            item_names=("state", "meta"),
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, state, step: int, meta: dict, wait: bool = False) -> None:
        """Save asynchronously as checkpoint ``step`` (examples seen; no-op if it exists)."""
        if step in self.manager.all_steps():
            return
        meta = dict(meta, fingerprint=self.fingerprint, digest=self.digest)
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        if wait:
            self.manager.wait_until_finished()

    def restore_latest(self, abstract_state):
        """(state, meta, step) of the newest intact checkpoint, or None if there is none.

        Raises CheckpointMismatch if the newest readable checkpoint belongs to a
        different experiment, NoIntactCheckpoint if none can be read.
        """
        steps = self.steps()
        if not steps:
            return None
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        errors = []
        for step in reversed(steps):
            try:
                meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
            except Exception as e:  # noqa: BLE001 - any read failure means "not intact"
                errors.append(f"examples_seen={step}: {type(e).__name__}: {e}")
                logging.warning("checkpoint at examples_seen=%d is unreadable (%s); trying the "
                                "previous one.", step, e)
                continue
            if meta.get("digest") != self.digest:
                raise CheckpointMismatch(mismatch_message(
                    f"{self.directory} holds checkpoints", meta.get("fingerprint", {}),
                    self.fingerprint))
            try:
                restored = self.manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
                )
            except Exception as e:  # noqa: BLE001
                errors.append(f"examples_seen={step}: {type(e).__name__}: {e}")
                logging.warning("checkpoint at examples_seen=%d is unreadable (%s); trying the "
                                "previous one.", step, e)
                continue
            if step != steps[-1]:
                logging.warning("resuming from examples_seen=%d, not the newest checkpoint %d, "
                                "which is damaged.", step, steps[-1])
            return restored["state"], meta, step
        raise NoIntactCheckpoint(
            f"none of the checkpoints in {self.directory} can be read: " + " | ".join(errors)
            + ". Move that directory away to start the run from scratch."
        )

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()
