"""JAX's persistent compilation cache, per run and per user: a resumed run reads its steps back.

A preempted run, or one moved to another slice at a boundary, would otherwise pay
every stage's compile again (minutes for ResNet-50 on a TPU slice). The compile time
and size thresholds are lowered so that every step is cached, CPU ones too. A program
compiled for another device count has another key, so a moved run compiles its new
shapes once and reads them from then on.

**Where, and why not the workdir.** A cache entry is machine code that JAX loads and
runs without checking it against the program it is filed under: whoever can write an
entry decides what the trainer executes. The cache used to live in
``<workdir>/compilation_cache``, where anyone who can write the workdir (a shared
bucket, a shared ``/tmp``) could swap an entry and silently train another experiment
than ``config.json`` says. Verifying entries would need a manifest that such a writer
could not rewrite too (so not in the workdir) and a hook in JAX's private cache class;
instead the cache lives where only this user writes, like the installed packages:
``$XDG_CACHE_HOME/noise_scale/compilation_cache`` (``~/.cache/...``), a directory of
mode 0700 that is refused if another user owns it or others may write it. Inside it,
each run has its own directory, keyed by its workdir and its experiment fingerprint
(``run_key``), so an entry another run wrote is never read by this one, and a rerun of
the same run (a resume, the next slice on the same host) reads its own back. The
price: a resume on a new VM (a preempted TPU VM loses its disk) compiles once more.
``config.compilation_cache_dir`` names a directory instead (a bucket shared by a
pod's hosts, say), trusted as the user chose it; ``'off'`` disables the cache. The
per-run directories are not pruned: delete the root to reclaim the space.

The cache is one per process (JAX's): a run switches it to its own directory.
``parallel.CompileCounter`` counts the compiles served from it.
"""

from __future__ import annotations

import hashlib
import os
import stat

import jax

from noise_scale import run_files
from noise_scale.errors import UsageError

OFF = "off"


def user_root() -> str:
    """This user's cache root: ``$XDG_CACHE_HOME/noise_scale/compilation_cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "noise_scale", "compilation_cache")


def run_key(workdir: str, digest: str) -> str:
    """One run's directory name: its workdir (as a URL or absolute path) and fingerprint."""
    where = str(run_files.workdir_path(workdir))
    return hashlib.sha256(f"{where}\n{digest}".encode()).hexdigest()[:24]


def cache_dir(config, workdir: str, digest: str) -> str | None:
    """Where this run's compiles are cached, or None (``digest``: the fingerprint's)."""
    if config.compilation_cache_dir == OFF:
        return None
    if config.compilation_cache_dir:
        return config.compilation_cache_dir
    return os.path.join(user_root(), run_key(workdir, digest))


def check_private(root: str) -> None:
    """``root`` exists, is this user's, and only this user may write it (else UsageError)."""
    os.makedirs(root, mode=0o700, exist_ok=True)
    info = os.stat(root)
    others_write = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if info.st_uid != os.getuid() or others_write:
        owner = "another user owns it" if info.st_uid != os.getuid() else (
            f"others may write it (mode {stat.filemode(info.st_mode)})")
        raise UsageError(
            f"the compilation cache {root} is not private: {owner}, and whoever writes a "
            "cache entry decides what this run executes. Fix: chmod 700 " + root
            + " (or remove it), or --config.compilation_cache_dir=off. Nothing was written.")


def enable(config, workdir: str, digest: str) -> str | None:
    """Point JAX's persistent cache at this run's directory (or turn it off); returns it."""
    from jax._src import compilation_cache

    path = cache_dir(config, workdir, digest)
    if path is not None and not config.compilation_cache_dir:
        check_private(user_root())
    if jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        compilation_cache.reset_cache()  # JAX opens its cache once; reopen at the new path
    return path
