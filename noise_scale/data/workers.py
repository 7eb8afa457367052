"""Decoding and augmenting in worker processes (grain), the sampler still in charge.

Why processes: decoding JPEGs in Python threads scales badly, because every
thread takes the interpreter lock between its C calls (TFDS's deserialisation,
PIL's header parsing, the crop), and worse on a busy host (benchmarks/RESULTS.md).
Why grain: it is the library JAX codebases use for exactly this (per-index
reads, worker processes, results handed back in order through shared memory).

What stays ours: grain's own batching uses one fixed batch size, and a
loader's iterator state is not what a run resumes from. So the workers only
decode single examples, at the places the sampler gives: the k-th example
this process reads from the run's start position is a pure function of the
schedule, the seed and k (``ExamplePlan``). Batches are cut here at each
step's size, and a checkpoint still holds the sampler's position; a resume
builds the plan from there, and sees the batches an uninterrupted run sees.
"""

from __future__ import annotations

import numpy as np

from noise_scale.data.sampler import HostBatch, epoch_permutation


class ExamplePlan:
    """(index, position) of the k-th example this process reads, for the given steps.

    ``steps``: (position, global batch size) of every step from the start; this
    process reads the contiguous share ``process_slice`` gives of each. Small
    enough to send to every worker (two integers per step).
    """

    def __init__(self, steps: np.ndarray, seed: int, dataset_size: int, process_index: int = 0,
                 process_count: int = 1):
        per = steps[:, 1] // process_count
        self.starts = steps[:, 0] + process_index * per
        self.offsets = np.concatenate([[0], np.cumsum(per)]).astype(np.int64)
        self.seed, self.n = seed, dataset_size
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, k: int) -> tuple[int, int]:
        j = int(np.searchsorted(self.offsets, k, side="right")) - 1
        position = int(self.starts[j] + k - self.offsets[j])
        epoch, offset = divmod(position, self.n)
        if epoch not in self._perms:
            if len(self._perms) > 1:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = epoch_permutation(self.seed, epoch, self.n)
        return int(self._perms[epoch][offset]), position


class DecodeAt:
    """The work of one example in a worker: ``source.example(index, position, seed)``."""

    def __init__(self, source, plan: ExamplePlan):
        self.source, self.plan = source, plan

    def __call__(self, k) -> dict:
        index, position = self.plan[int(k)]
        image, label = self.source.example(index, position, self.plan.seed)
        return {"input": image, "label": np.int32(label)}


def uses_workers(source) -> bool:
    """Sources that decode one example at a time (``example``) and are training splits."""
    return getattr(source, "train", False) and hasattr(source, "example")


def batches(sampler, steps, workers: int, buffer: int = 16):
    """HostBatches of ``steps`` (position, B), their examples decoded by ``workers`` processes."""
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; a library caller has none
        flags.FLAGS.mark_as_parsed()
    steps = np.asarray(list(steps), np.int64).reshape(-1, 2)
    if not len(steps):
        return
    plan = ExamplePlan(steps, sampler.seed, sampler.schedule.dataset_size,
                       sampler.process_index, sampler.process_count)
    ds = (grain.MapDataset.range(len(plan)).map(DecodeAt(sampler.source, plan))
          .to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=buffer)))
    if workers > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                        per_worker_buffer_size=buffer))
    it = iter(ds)
    try:
        for position, batch_size in steps:
            per = int(batch_size) // sampler.process_count
            examples = [next(it) for _ in range(per)]
            data = {"input": np.stack([e["input"] for e in examples]),
                    "label": np.array([e["label"] for e in examples], np.int32)}
            yield HostBatch(int(position), int(batch_size), data)
    finally:
        if hasattr(it, "close"):
            it.close()
