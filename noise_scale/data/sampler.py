"""The host sampler: a position in one continuous example stream, cut at the schedule's B.

Why a position and not a step count: the batch grows mid-run, so "step 1,000"
means a different place in the data for every schedule. The sampler's state is
one integer, the number of examples seen; from it follow the epoch (a seeded
permutation of the N examples), the offset in that permutation, the stage and
its batch size. A batch may span an epoch boundary (the stream simply runs on
into the next permutation), so every example is seen exactly once per epoch
and a run resumes at the exact example it stopped at, whatever the batch size.

Each process takes its contiguous slice of every global batch; the sampler
never reads another process's examples. Prefetched batches are cut by the
schedule at their own positions, so a batch-size change is never missed.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator
from typing import Protocol

import numpy as np

from noise_scale.data import workers
from noise_scale.data.order import EpochOrders, HostBatch, process_slice
from noise_scale.errors import ConfigError


class Source(Protocol):
    """A random-access training or evaluation split.

    ``get_batch`` returns a dict of stacked arrays for the given example
    indices. ``positions`` are the stream positions of those examples (unique
    over the run): per-example randomness (augmentation) must be seeded from
    ``(seed, position)`` so that a resumed or re-sharded run draws the same.
    """

    def __len__(self) -> int: ...

    def get_batch(self, indices: np.ndarray, positions: np.ndarray, seed: int) -> dict: ...


@dataclasses.dataclass
class ArraySource:
    """In-memory arrays (MNIST-1D, tests): ``get_batch`` is a fancy-index gather."""

    arrays: dict[str, np.ndarray]

    def __post_init__(self):
        sizes = {k: len(v) for k, v in self.arrays.items()}
        if len(set(sizes.values())) != 1:
            raise ConfigError(f"arrays of a source must have one length, got {sizes}.")

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def get_batch(self, indices, positions=None, seed=0) -> dict:
        return {k: v[indices] for k, v in self.arrays.items()}


class Sampler:
    """Cuts the example stream into batches of the schedule's size, from any position."""

    def __init__(self, source: Source, schedule, seed: int, process_index: int = 0,
                 process_count: int = 1):
        if len(source) != schedule.dataset_size:
            raise ConfigError(
                f"the training split has {len(source):,} examples but config.dataset_size is "
                f"{schedule.dataset_size:,}; every noise scale is computed with N, so set "
                f"--config.dataset_size={len(source)}."
            )
        self.source, self.schedule, self.seed = source, schedule, seed
        self.process_index, self.process_count = process_index, process_count
        self._perm = EpochOrders(seed, schedule.dataset_size)

    def global_indices(self, position: int, batch_size: int) -> np.ndarray:
        """Example indices of the global batch starting at ``position`` (may span epochs)."""
        n = self.schedule.dataset_size
        out, pos, left = [], position, batch_size
        while left:
            epoch, offset = divmod(pos, n)
            take = min(left, n - offset)
            out.append(self._perm(epoch)[offset : offset + take])
            pos, left = pos + take, left - take
        return np.concatenate(out)

    def batch_at(self, position: int, batch_size: int) -> HostBatch:
        lo, hi = process_slice(batch_size, self.process_index, self.process_count)
        idx = self.global_indices(position, batch_size)[lo:hi]
        positions = np.arange(position + lo, position + hi, dtype=np.int64)
        return HostBatch(position, batch_size, self.source.get_batch(idx, positions, self.seed))

    def iterate(self, start: int, stop: int | None = None, prefetch: int = 2,
                transform=None) -> Iterator:
        """Batches of the schedule's walk from ``start``; ``prefetch`` > 0 prepares them ahead.

        Each batch is cut at its own position with its own stage's B, so a batch
        prepared before a stage change already has the new size. ``transform``
        (e.g. putting the batch on the devices) runs in the prefetch thread too, so
        host work overlaps the device step. A source that decodes one example at a
        time (``example``) has its examples decoded in worker processes
        (``noise_scale.data.workers``); the batches are the same.
        """
        steps = self.schedule.steps(start, stop)
        if workers.uses_workers(self.source):  # decoded in worker processes, cut here
            batches = workers.batches(self, steps, self.source.workers)
        else:
            batches = (self.batch_at(p, b) for p, b in steps)
        if transform:
            batches = (transform(hb) for hb in batches)
        yield from (_prefetch(batches, prefetch) if prefetch > 0 else batches)


_DONE = object()


def _prefetch(iterator: Iterator, size: int) -> Iterator:
    """Run ``iterator`` in a daemon thread, ``size`` items ahead; re-raise its errors here."""
    q: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()

    def work():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:  # closed early (a stop, an error): the thread ends after its current batch
        stop.set()
        thread.join(timeout=60)
