"""Decoding and augmenting in worker processes (grain), the sampler still in charge.

Why processes: decoding JPEGs in Python threads scales badly, because every
thread takes the interpreter lock between its C calls (TFDS's deserialisation,
PIL's header parsing, the crop), and worse on a busy host (benchmarks/RESULTS.md).
Why grain: it is the library JAX codebases use for exactly this (per-index
reads, worker processes, results handed back in order through shared memory).

What stays ours: grain's own batching uses one fixed batch size, and a
loader's iterator state is not what a run resumes from. So the workers only
decode fixed chunks of consecutive examples (``CHUNK``), at the places the
sampler gives: the k-th example this process reads from the run's start
position is a pure function of the schedule, the seed and k (``ExamplePlan``).
Batches of each step's size are cut here from the stream of chunks (a chunk
may straddle two steps, or two stages), and a checkpoint still holds the
sampler's position; a resume builds the plan from there, and sees the batches
an uninterrupted run sees.

Why chunks and not single examples: each element grain hands back crosses a
process boundary, about 0.36 ms of overhead per element against ~2 ms of decoding
an ImageNet JPEG (measured, 2 workers); chunks of 8 cut that to ~0.1 ms per example.
"""

from __future__ import annotations

import numpy as np

from noise_scale.data.order import EpochOrders, HostBatch, process_slice


class ExamplePlan:
    """(index, position) of the k-th example this process reads, for the given steps.

    ``steps``: (position, global batch size) of every step from the start; this
    process reads the contiguous share ``process_slice`` gives of each. Small
    enough to send to every worker (two integers per step).
    """

    def __init__(self, steps: np.ndarray, seed: int, dataset_size: int, process_index: int = 0,
                 process_count: int = 1):
        lo, hi = process_slice(steps[:, 1], process_index, process_count)
        self.starts = steps[:, 0] + lo
        self.offsets = np.concatenate([[0], np.cumsum(hi - lo)]).astype(np.int64)
        self.seed, self.n = seed, dataset_size
        self._perm = EpochOrders(seed, dataset_size, keep=2)  # read in order: two at a time

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, k: int) -> tuple[int, int]:
        j = int(np.searchsorted(self.offsets, k, side="right")) - 1
        position = int(self.starts[j] + k - self.offsets[j])
        epoch, offset = divmod(position, self.n)
        return int(self._perm(epoch)[offset]), position


CHUNK = 8  # consecutive examples a worker decodes and hands back as one element


class DecodeAt:
    """The work of one example in a worker: ``source.example(index, position, seed)``."""

    def __init__(self, source, plan: ExamplePlan):
        self.source, self.plan = source, plan

    def __call__(self, k) -> dict:
        index, position = self.plan[int(k)]
        image, label = self.source.example(index, position, self.plan.seed)
        return {"input": image, "label": np.int32(label)}


class DecodeChunk(DecodeAt):
    """Examples [c·CHUNK, (c+1)·CHUNK) of the plan (fewer at its end), stacked."""

    def __call__(self, c) -> dict:
        examples = [super(DecodeChunk, self).__call__(k)
                    for k in range(int(c) * CHUNK, min((int(c) + 1) * CHUNK, len(self.plan)))]
        return {"input": np.stack([e["input"] for e in examples]),
                "label": np.array([e["label"] for e in examples], np.int32)}


def cut(chunks, sizes):
    """Batches of ``sizes`` examples from an iterator of stacked chunks, in order."""
    rest = None
    for size in sizes:
        parts = [] if rest is None else [rest]
        have = 0 if rest is None else len(rest["label"])
        while have < size:
            c = next(chunks)
            parts.append(c)
            have += len(c["label"])
        joined = {k: np.concatenate([p[k] for p in parts]) for k in ("input", "label")}
        rest = {k: v[size:] for k, v in joined.items()} if have > size else None
        yield {k: v[:size] for k, v in joined.items()}


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
    chunks = -(-len(plan) // CHUNK)
    per_worker = max(2, buffer // CHUNK)
    ds = (grain.MapDataset.range(chunks).map(DecodeChunk(sampler.source, plan))
          .to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=per_worker)))
    if workers > 0:
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                        per_worker_buffer_size=per_worker))
    it = iter(ds)
    try:
        lo, hi = process_slice(steps[:, 1], sampler.process_index, sampler.process_count)
        sizes = (int(n) for n in hi - lo)
        for (position, batch_size), data in zip(steps, cut(it, sizes)):
            yield HostBatch(int(position), int(batch_size), data)
    finally:
        if hasattr(it, "close"):
            it.close()
