"""Which examples a step reads and which of them this process takes: the order, once.

Why its own module: the sampler (batches cut in this process) and the decoding
workers (``workers.ExamplePlan``, examples planned for worker processes) must read
the same examples in the same order, and evaluation the same per-process share; each
used to carry its own copy of the slice and of the permutation cache, and the two
data modules imported each other for the rest.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class HostBatch:
    """One step's batch as this process sees it."""

    position: int  # examples seen before this step (global)
    batch_size: int  # global B of the step
    data: dict  # this process's slice, as numpy arrays


def process_slice(batch_size, process_index: int, process_count: int):
    """This process's contiguous share [lo, hi) of a global batch (training and evaluation);
    ``batch_size`` may be an array of batch sizes (one share per step)."""
    if np.any(np.asarray(batch_size) % process_count):
        raise ValueError(
            f"global batch {batch_size} does not divide over {process_count} processes.")
    per = batch_size // process_count
    return process_index * per, (process_index + 1) * per


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch ``epoch``: a permutation seeded by (seed, epoch) alone."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class EpochOrders:
    """``epoch_permutation`` of the epochs in use, the oldest dropped past ``keep``.

    Steps move forward, a batch spans at most two epochs and prefetching reads a
    little ahead, so a few epochs' orders suffice (an ImageNet order is 10 MB)."""

    def __init__(self, seed: int, n: int, keep: int = 3):
        self.seed, self.n, self.keep = seed, n, keep
        self._orders: dict[int, np.ndarray] = {}

    def __call__(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            if len(self._orders) >= self.keep:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = epoch_permutation(self.seed, epoch, self.n)
        return self._orders[epoch]
