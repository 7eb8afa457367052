"""JAX's persistent compilation cache in the workdir: a resumed or moved run reads its steps back.

A preempted run, or one moved to another slice at a boundary, would otherwise pay
every stage's compile again (minutes for ResNet-50 on a TPU slice). The cache lives
beside the checkpoints (``<workdir>/compilation_cache``, a ``gs://`` path included)
or where ``config.compilation_cache_dir`` says; ``'off'`` disables it. The compile
time and size thresholds are lowered so that every step is cached, CPU ones too.
A program compiled for another device count has another key, so a moved run
compiles its new shapes once and reads them from then on.

The cache is one per process (JAX's): a run switches it to its own directory.
``parallel.CompileCounter`` counts the compiles served from it.
"""

from __future__ import annotations

import os

import jax

OFF = "off"


def cache_dir(config, workdir: str) -> str | None:
    """Where this run's compiles are cached, or None."""
    if config.compilation_cache_dir == OFF:
        return None
    if config.compilation_cache_dir:
        return config.compilation_cache_dir
    if "://" in workdir:
        return workdir.rstrip("/") + "/compilation_cache"
    return os.path.join(os.path.abspath(workdir), "compilation_cache")


def enable(config, workdir: str) -> str | None:
    """Point JAX's persistent cache at this run's directory (or turn it off); returns it."""
    from jax._src import compilation_cache

    path = cache_dir(config, workdir)
    if jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        compilation_cache.reset_cache()  # JAX opens its cache once; reopen at the new path
    return path
