"""Every file of a run, named and opened in one place: URLs stay URLs, files are replaced whole.

Why one module: the checkpoints, ``metrics.jsonl``, ``config.json``, ``schedule.json``,
the run's identity, TensorBoard, profiles and ``run.lock`` were each located by their own
code, and one of them (``os.path.abspath``) turned ``gs://B/run`` into
``<cwd>/gs:/B/run``: a Cloud TPU run kept its checkpoints on a disk that a preemption
takes away. Here a workdir is an ``etils.epath.Path``: a URL stays that URL, a local
path becomes absolute (so a later ``chdir`` cannot move it).

- :func:`check_workdir` refuses, before anything is written (exit status 2), a scheme
  epath cannot open (``file://``, ``memory://``, ``gcs://``: epath would read them as a
  *local* directory named ``file:``) and a symbolic link where a run file belongs (the
  run would write through it into the link's target, e.g. under a shared ``/tmp``).
- :func:`write_text` writes a new file under a random name and renames it over the
  target: a reader sees the old file or the new one, never half; a link planted at the
  target is replaced, its target never written (``O_NOFOLLOW | O_EXCL`` on local disks).
"""

from __future__ import annotations

import os
import secrets

from etils import epath

from noise_scale.errors import UsageError

CHECKPOINTS = "checkpoints"
METRICS = "metrics.jsonl"
CONFIG = "config.json"
SCHEDULE = "schedule.json"
IDENTITY = "fingerprint.json"  # the run's identity (checkpoint.experiment_fingerprint)
TENSORBOARD = "tensorboard"
PROFILE = "profile"
LOCK = "run.lock"
LOG = "train.log"  # a run's stderr, when the reproduction runs several at once
DONE = "DONE"  # the reproduction's marker of a finished run
# What a run writes at the top of its workdir; none of them may be a link.
RUN_FILES = (CHECKPOINTS, METRICS, CONFIG, SCHEDULE, IDENTITY, TENSORBOARD, PROFILE, LOCK, LOG,
             DONE)

# The URL schemes epath opens (etils.epath.gpath's _URI_SCHEMES); any other "x://" it
# would take for a local relative path.
SCHEMES = ("gs", "s3", "az", "hf")


def scheme(path: str) -> str:
    """``gs`` for ``gs://bucket/x``; '' for a local path."""
    head, sep, _ = (path or "").partition("://")
    return head.lower() if sep else ""


def workdir_path(workdir: str) -> epath.Path:
    """The workdir as an epath: a URL as given, a local path made absolute."""
    if scheme(workdir):
        return epath.Path(workdir.rstrip("/"))
    return epath.Path(os.path.abspath(workdir))


def path(workdir: str, name: str) -> epath.Path:
    """The run file ``name`` (one of ``RUN_FILES``) of ``workdir``."""
    return workdir_path(workdir) / name


def check_workdir(workdir: str) -> None:
    """A workdir whose scheme epath opens, with no link where a run file belongs.

    Writes nothing; each refusal is a :class:`UsageError` (exit status 2) with the fix.
    """
    kind = scheme(workdir)
    if kind and kind not in SCHEMES:
        local = workdir.split("://", 1)[1]
        fix = (f"pass the local path itself (--workdir=/{local.lstrip('/')})" if kind == "file"
               else "pass a local path or a " + ", ".join(f"{s}://" for s in SCHEMES) + " URL")
        raise UsageError(
            f"--workdir={workdir}: the scheme {kind}:// cannot hold a run (its files are opened "
            "through etils.epath, which opens local paths and "
            + ", ".join(f"{s}://" for s in SCHEMES)
            + f"; it would write {kind}:// as a local directory named '{kind}:'). Fix: {fix}. "
            "Nothing was written.")
    if kind:
        return  # buckets have no symbolic links
    for name in RUN_FILES:
        p = os.path.join(os.path.abspath(workdir), name)
        if os.path.islink(p):
            raise UsageError(
                f"--workdir={workdir}: {p} is a symbolic link (to {os.readlink(p)}); a run "
                "writes its files itself and never through a link, which would overwrite the "
                "link's target. Fix: remove the link (or pass another --workdir). Nothing was "
                "written.")


def write_text(target: epath.Path, text: str) -> None:
    """Write ``target`` whole: a new file under a random name, renamed over it."""
    tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
    if scheme(str(target)):
        tmp.write_text(text)
    else:  # never through a link, never into a file someone else made at that name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    tmp.replace(target)
