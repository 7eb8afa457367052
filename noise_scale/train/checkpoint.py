"""Preemption-safe checkpoints: state, the example clock, and a fingerprint of the run.

One orbax ``CheckpointManager`` in ``<workdir>/checkpoints`` (a ``gs://`` workdir's
checkpoints in that bucket: ``run_files`` keeps URLs as URLs), one checkpoint per
save, numbered by **examples seen** — the clock that fixes the stage, the batch
size, ε, m and the data position at once. A checkpoint holds

- ``state``: parameters, batch-norm statistics, optimizer state (which holds
  the clock itself: the loop numbers the checkpoint by it, and a resume checks
  that the number and the restored clock agree);
- ``meta`` (JSON): the open logging window's sums (loss, accuracy, the raw
  noise-scale estimates), compiles (and those read from the cache) and wall time
  so far; the slice it was trained on (devices, processes, each stage's ghost
  size: a resume on another slice checks them); the smoothed noise scale's state
  when measured, and the cap's decisions and readings under a measured cap (a
  resume replays them); and the run's fingerprint (the config fields that define
  the experiment, and the schedule) with its digest. Updates, the stage and the
  next evaluation follow from the clock and are not stored. It also holds the
  digests that make the checkpoint checkable: sha256 of each array of the state
  (``array_digests``) and of the meta itself (``meta_digest``).

There is no RNG state beyond the seed: every random choice (data order,
augmentation) is a function of (seed, position), so the position is enough.

Restoring the newest *intact* checkpoint: orbax writes to a temporary directory
and renames it when complete, so a half-written save is never listed; a listed
one that fails to read or to match its digests (damaged later: flipped bytes in
an array file read back as other numbers, silently, without them) is skipped
with a warning in favour of the previous one, and deleted by the next save so
that the save replaces it. A checkpoint of a different experiment is refused;
one written before a fingerprint field existed is read with ``ABSENT_MEANS``.
"""

from __future__ import annotations

import hashlib
import json
import logging

import jax
import numpy as np
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


class DamagedCheckpoint(ValueError):
    """A checkpoint's contents differ from the digests written with them."""


# What a checkpoint (or a finished run's DONE) written before a fingerprint field existed
# did, as that field's value. A stored fingerprint lacking one of these fields is compared
# as if it held this value: it resumes under a config at that value, and is refused naming
# the field under any other. A field added later and missing here is refused with a message
# that names it (``compare_fingerprints``): add it here when a value reproduces the code
# before the field, and only then.
ABSENT_MEANS = {
    "config.adam_b2_rescale": True, "config.schedule.adam_rule": "",
    # what is measured, not what is trained (a run without the cap trains the same)
    "config.noise_scale_min_measurements": 20, "config.noise_scale_dense_epochs": 1.0,
    "config.cnn_channels": (32, 64, 64),  # the CNN's widths before they were a field
    "config.image_mean": (), "config.image_std": (),  # () = the known values: all there was
    "config.schedule.batch_factor": 0.0,  # 0 = the factor ε falls by: the only behaviour
    "config.schedule.noise_cap": 0.0,  # no cap
    "config.measure_noise_scale": False,
    "config.noise_scale_every_steps": 1,  # before k existed, every update measured
    # learning-rate shapes: before them every schedule was a step schedule, and the other
    # fields act only on the other shapes
    "config.schedule.shape": "step", "config.schedule.final_lr_fraction": 0.0,
    "config.schedule.power": 2.0, "config.schedule.decay_fraction": 0.2,
    "config.schedule.knots": (), "config.schedule.max_stages": 6,
    "config.schedule.ladder_ratio": 0.0,
    # a capped run from before the key decided on the point estimate: known to differ
    "cap_rule": "B_new <= c x the point estimate of B_simple",
    # not here, on purpose: config.batch_norm_batch_size (before it, the batch-norm
    # momentum was 0.9 per update, which no value of the field reproduces)
}


# The measured cap's decision rule. A capped run trains what its decisions make of the
# schedule, so a run decided by another rule is another experiment: its finished run or
# checkpoint is refused (ABSENT_MEANS reads a missing cap_rule as the point-estimate rule
# of the runs before this key) rather than mixed with new seeds.
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
    ``config``; also what a workdir's ``config.json`` is compared by (``identity``)."""
    return {k: v for k, v in config_json.items() if k not in NON_EXPERIMENT_FIELDS}


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
    changes = compare_fingerprints(old, new)[0] or fingerprint_diff(old, new)
    return (f"{where} of a different run; resuming would silently change the experiment. "
            "What differs (workdir -> now): " + "; ".join(changes[:8])
            + ("; ..." if len(changes) > 8 else "")
            + ". Start the new run in a fresh --workdir (or rerun with the old config to "
            "resume it); nothing was overwritten.")


def compare_fingerprints(stored: dict, now: dict) -> tuple[list[str], list[str]]:
    """(what differs, as 'field: stored -> now'; the fields ``stored`` lacks and
    ``ABSENT_MEANS`` cannot fill). Both empty: the same experiment.

    A field ``stored`` lacks is read as its ``ABSENT_MEANS`` value (it was written before the
    field existed), so it differs only if ``now`` sets it to something else.
    """
    old, new = _with_absent_values(stored), _with_absent_values(now)
    missing = _absent_in(old, new)
    for dotted in missing:  # named on their own, not as '<absent> -> value'
        *parents, leaf = dotted.split(".")
        node = new
        for p in parents:
            node = node[p]
        del node[leaf]
    return fingerprint_diff(old, new), missing


def missing_fields_message(missing: list[str], now: dict) -> str:
    """Why a record lacking ``missing`` cannot be continued, and what to do."""
    named = ", ".join(f"{m} (now {_value_at(now, m)!r})" for m in missing[:6])
    return (f"it was written before {named} existed, and whether what it trained equals "
            "the value now is not known (noise_scale.train.checkpoint.ABSENT_MEANS has no entry for "
            f"{'it' if len(missing) == 1 else 'them'}). Continue it with the noise_scale version "
            "that wrote it, or start this config in a fresh --workdir; nothing was overwritten. "
            "(If the field's default does what the code did before it, add it to ABSENT_MEANS.)")


def _with_absent_values(fp: dict) -> dict:
    """A JSON copy of ``fp`` with each ``ABSENT_MEANS`` field it lacks set to that value."""
    fp = json.loads(json.dumps(fp))
    for dotted, value in ABSENT_MEANS.items():
        *parents, leaf = dotted.split(".")
        node = fp
        for p in parents:
            node = node.setdefault(p, {}) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(leaf, json.loads(json.dumps(value)))
    return fp


def _absent_in(old, new, prefix="") -> list[str]:
    """Dotted paths of the fields ``new`` has and ``old`` lacks."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return []
    out = []
    for k in sorted(new):
        out += [prefix + k] if k not in old else _absent_in(old[k], new[k], f"{prefix}{k}.")
    return out


def _value_at(fp: dict, dotted: str):
    for k in dotted.split("."):
        fp = fp[k]
    return fp if len(repr(fp)) <= 60 else "..."


def array_digests(state) -> dict[str, str]:
    """sha256 (first 16 hex digits) of each leaf's dtype, shape and bytes, by its tree path.

    What is digested is each leaf's first addressable shard. The training state is
    replicated, so that is the whole leaf, and on several processes each process digests
    (and on restore checks) the same bytes against the digests process 0 wrote: every
    process reaches the same verdict. A leaf split across processes has no digest (none is
    today). Cost, at each save (before the asynchronous write: the next step donates the
    state) and each restore: one more device-to-host copy and sha256, measured on a busy
    2-core CPU host with 8 devices: 0.13 s for 102 MB in 160 leaves (ResNet-50's state
    without momentum), 1.3 ms for MNIST-1D's 239 kB.
    """
    paths, shards = [], []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if isinstance(leaf, jax.Array):
            if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            if not (leaf.is_fully_replicated or leaf.is_fully_addressable):
                continue
            leaf = leaf.addressable_data(0) if leaf.is_fully_replicated else leaf
        paths.append(jax.tree_util.keystr(path))
        shards.append(leaf)
    out = {}
    for path, host in zip(paths, jax.device_get(shards)):
        host = np.ascontiguousarray(host)
        h = hashlib.sha256(f"{host.dtype} {host.shape} ".encode())
        h.update(host.reshape(-1).view(np.uint8))
        out[path] = h.hexdigest()[:16]
    return out


def meta_digest(meta: dict) -> str:
    """sha256 of the meta as JSON, without its own digest: a changed number (the cap's
    decisions, the open window's sums) is caught like a changed array."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


class Checkpointer:
    def __init__(self, workdir: str, fingerprint: dict, keep: int = 2):
        self.directory = str(run_files.path(workdir, run_files.CHECKPOINTS))
        self.fingerprint = fingerprint
        self.digest = fingerprint_digest(fingerprint)
        self.damaged: list[int] = []  # passed over by the restore: the next save replaces them
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
        """Save asynchronously as checkpoint ``step`` (examples seen; no-op if it exists).

        The damaged checkpoints the restore passed over are deleted first: the run is
        now at or before them (they were newer than the one it resumed from), so this
        save, or a later one, replaces them instead of leaving every rerun to fall back.
        """
        for damaged in self.damaged:
            if damaged in self.manager.all_steps():
                self.manager.delete(damaged)
        self.damaged = []
        if step in self.manager.all_steps():
            return
        meta = dict(meta, fingerprint=self.fingerprint, digest=self.digest,
                    arrays_sha256=array_digests(state))
        meta = json.loads(json.dumps(meta))  # as the JSON file will hold it
        meta["meta_sha256"] = meta_digest(meta)
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        if wait:
            self.manager.wait_until_finished()

    def restore_latest(self, abstract_state):
        """(state, meta, step) of the newest intact checkpoint, or None if there is none.

        Intact: it reads, and its meta and arrays match the digests written with them (a
        checkpoint from before the digests is trusted as read). Raises CheckpointMismatch
        if the newest intact checkpoint belongs to a different experiment (or to one this
        code cannot tell: ``compare_fingerprints``), NoIntactCheckpoint if none is intact.
        """
        steps = self.steps()
        if not steps:
            return None
        errors = []
        for step in reversed(steps):
            try:
                state, meta = self.read(step, abstract_state, check=self.check_fingerprint)
            except CheckpointMismatch:
                raise
            except Exception as e:  # noqa: BLE001 - any read failure means "not intact"
                errors.append(f"examples_seen={step}: {type(e).__name__}: {e}")
                logging.warning("checkpoint at examples_seen=%d is damaged (%s); trying the "
                                "previous one.", step, e)
                self.damaged.append(step)
                continue
            if step != steps[-1]:
                logging.warning("resuming from examples_seen=%d, not the newest checkpoint %d, "
                                "which is damaged: the next save replaces it.", step, steps[-1])
            return state, meta, step
        raise NoIntactCheckpoint(
            f"none of the checkpoints in {self.directory} can be read: " + " | ".join(errors)
            + ". Move that directory away to start the run from scratch."
        )

    def read(self, step: int, abstract_state, check=None):
        """(state, meta) of checkpoint ``step``, its meta and arrays checked against their
        digests (``DamagedCheckpoint`` if they differ); ``check(meta)`` runs before the
        arrays are read. ``restore_latest`` reads each candidate with it; a tool that needs
        one particular checkpoint of a run (``benchmarks/critical_batch.py``) calls it."""
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        _check_meta(meta)
        if check is not None:
            check(meta)
        state = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
        _check_arrays(state, meta)
        return state, meta

    def check_fingerprint(self, meta: dict) -> None:
        """Raise CheckpointMismatch unless ``meta`` is a checkpoint of this experiment.

        By the fingerprints themselves, not their digests: a digest cannot tell a field
        added since the checkpoint from a change.
        """
        changes, missing = compare_fingerprints(meta.get("fingerprint", {}), self.fingerprint)
        if changes:
            raise CheckpointMismatch(mismatch_message(
                f"{self.directory} holds checkpoints", meta.get("fingerprint", {}),
                self.fingerprint))
        if missing:
            raise CheckpointMismatch(f"the checkpoints in {self.directory} cannot be resumed: "
                                     + missing_fields_message(missing, self.fingerprint))

    def close(self):
        # The manager's clean-up of unfinished saves runs in a thread its close() leaves
        # running (orbax awaits it only before a save); a run stopped before its first save
        # (Ctrl-C during start-up) then exited under it with a traceback. Await it here.
        cleanup = getattr(self.manager, "_cleanup_tmp_directory_future", None)
        if cleanup is not None:
            cleanup.result()
        self.manager.wait_until_finished()
        self.manager.close()


def _check_meta(meta: dict) -> None:
    if "meta_sha256" in meta and meta_digest(meta) != meta["meta_sha256"]:
        raise DamagedCheckpoint("its meta differs from the digest written with it")


def _check_arrays(state, meta: dict) -> None:
    stored = meta.get("arrays_sha256")
    if stored is None:  # written before checkpoints carried digests
        return
    now = array_digests(state)
    bad = sorted(k for k in set(stored) | set(now) if stored.get(k) != now.get(k))
    if bad:
        raise DamagedCheckpoint(
            f"{len(bad)} of its arrays differ from the digests written with them ("
            + ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "") + ")")
