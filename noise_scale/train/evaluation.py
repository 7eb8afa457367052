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
    size = int(math.ceil(eval_batch_size / mesh.size) * mesh.size)
    lo, hi = process_slice(size, jax.process_index(), jax.process_count())
    pending = []
    for start in range(0, n, size):
        idx = np.arange(start, start + size)
        mask = idx < n
        idx = np.where(mask, idx, 0)[lo:hi]
        batch = source.get_batch(idx, idx, seed)
        batch["mask"] = mask[lo:hi]
        pending.append(eval_step(state, parallel.shard_batch(batch, mesh)))
    totals = {"loss": 0.0, "correct": 0.0, "count": 0.0}
    for sums in jax.device_get(pending):
        for k in totals:
            totals[k] += float(sums[k])
    count = int(round(totals["count"]))
    return {
        "test_loss": totals["loss"] / count,
        "test_accuracy": totals["correct"] / count,
        "test_examples": count,
    }
