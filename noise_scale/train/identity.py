"""A workdir belongs to one run: its identity stored beside its records, checked first.

Why: the experiment's fingerprint (``checkpoint.experiment_fingerprint``) used to live in
the checkpoints only. With ``checkpoints/`` deleted to save space, a rerun with other
settings found nothing to compare, cut ``metrics.jsonl`` to nothing and replaced
``config.json``. Now ``<workdir>/fingerprint.json`` holds the fingerprint and its digest,
written before the first record; a run whose fingerprint differs is refused (exit status
2) before it writes anything. A workdir from before that file existed is judged by its
``config.json`` (the fingerprint's config fields, ``checkpoint.experiment_fields``);
records with neither belong to a run nobody can name and are refused too. The same
config always passes: a rerun or a resume goes on exactly as before.
"""

from __future__ import annotations

import json

from noise_scale import run_files
from noise_scale.errors import SetupError
from noise_scale.train.checkpoint import (
    compare_fingerprints,
    experiment_fields,
    fingerprint_digest,
    mismatch_message,
    missing_fields_message,
)


def _read_json(path, workdir: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise SetupError(
            f"{path} is damaged (not a JSON object), so the run that owns --workdir={workdir} "
            "cannot be told. Fix: pass a fresh --workdir; or, if this config is that run's, "
            f"delete {path} and rerun. Nothing was written.")
    return value


def check(workdir: str, fingerprint: dict) -> None:
    """The workdir holds no run, or this one (``fingerprint``); else a SetupError. Reads only."""
    stored = run_files.path(workdir, run_files.IDENTITY)
    if stored.exists():
        _same_run(workdir, _read_json(stored, workdir).get("fingerprint", {}), fingerprint)
        return
    config = run_files.path(workdir, run_files.CONFIG)
    if config.exists():  # written before fingerprint.json existed
        _same_run(workdir, {"config": experiment_fields(_read_json(config, workdir))},
                  {"config": fingerprint["config"]})
        return
    metrics = run_files.path(workdir, run_files.METRICS)
    if metrics.exists() and metrics.read_bytes().strip():  # bytes: damage is not a bug here
        raise SetupError(
            f"{workdir} holds records ({metrics}) but neither {run_files.IDENTITY} nor "
            f"{run_files.CONFIG}: they belong to a run that cannot be told, and this run would "
            "overwrite them. Fix: pass a fresh --workdir, or move metrics.jsonl away. Nothing "
            "was written.")


def write(workdir: str, fingerprint: dict) -> None:
    """Store the run's identity (before its first record is written)."""
    text = json.dumps({"digest": fingerprint_digest(fingerprint), "fingerprint": fingerprint},
                      indent=2, sort_keys=True)
    run_files.write_text(run_files.path(workdir, run_files.IDENTITY), text)


def _same_run(workdir: str, stored: dict, now: dict) -> None:
    """As the checkpoints judge it (``checkpoint.compare_fingerprints``): a field added to
    the package since the records were written reads as what its absence meant."""
    changes, missing = compare_fingerprints(stored, now)
    if changes:
        raise SetupError(mismatch_message(f"{workdir} holds the records", stored, now))
    if missing:
        raise SetupError(f"the records in {workdir} cannot be continued: "
                         + missing_fields_message(missing, now))
