"""Loss and accuracy over a whole evaluation split, every example exactly once.

Batches are padded to one fixed size (a multiple of the device count, so the
eval step compiles once) and the padding is masked out of every sum. Each
process reads only its slice of each padded batch (``data.order.process_slice``,
the same rule as training).
"""

from __future__ import annotations

import math

import jax
import numpy as np

from noise_scale import parallel
from noise_scale.data.order import process_slice


def evaluate(source, state, eval_step, mesh, eval_batch_size: int, seed: int) -> dict:
    n = len(source)

    def read(offset, lo, hi):  # split indices, padded with index 0 (masked out)
        idx = np.arange(offset + lo, offset + hi)
        idx = np.where(idx < n, idx, 0)
        return source.get_batch(idx, idx, seed)

    totals = summed(state, eval_step, mesh, n, padded_size(eval_batch_size, mesh), read)
    count = int(round(totals["count"]))
    return {
        "test_loss": totals["loss"] / count,
        "test_accuracy": totals["correct"] / count,
        "test_examples": count,
    }


def padded_size(eval_batch_size: int, mesh) -> int:
    """The evaluation batch, rounded up to a multiple of the device count (one compile)."""
    return int(math.ceil(eval_batch_size / mesh.size) * mesh.size)


def summed(state, eval_step, mesh, total: int, size: int, read) -> dict[str, float]:
    """Loss, correct and count summed over ``total`` examples in padded batches of ``size``,
    the padding masked out. ``read(offset, lo, hi)`` returns this process's host batch: its
    slice [lo, hi) (``process_slice``) of the padded batch that starts at ``offset``.
    Every batch is dispatched before any is fetched, so the device never waits on the host."""
    lo, hi = process_slice(size, jax.process_index(), jax.process_count())
    pending = []
    for offset in range(0, total, size):
        batch = read(offset, lo, hi)
        batch["mask"] = np.arange(offset + lo, offset + hi) < total
        pending.append(eval_step(state, parallel.shard_batch(batch, mesh)))
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    for sums in jax.device_get(pending):
        for k in totals:
            totals[k] += float(sums[k])
    return totals
