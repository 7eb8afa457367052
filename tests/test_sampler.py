"""The host sampler: the position is the state; every example once per epoch; exact resume."""

import numpy as np
import pytest

from noise_scale.data import ArraySource, Sampler
from noise_scale.data.order import epoch_permutation
from noise_scale.schedule import Schedule, Stage

N = 100


def schedule():
    # B = 8 for 1.5 epochs then 20: batches straddle the epoch boundaries
    return Schedule(N, (Stage(0, 1.5, 8, 0.1, 0.9), Stage(1.5, 4, 20, 0.1, 0.9)))


def source():
    return ArraySource({"input": np.arange(N) * 10, "label": np.arange(N)})


def all_batches(sampler, start=0, prefetch=0):
    return list(sampler.iterate(start, prefetch=prefetch))


def test_batch_sizes_follow_the_schedule_and_cover_the_run():
    s = schedule()
    batches = all_batches(Sampler(source(), s, seed=1))
    assert [(b.position, b.batch_size) for b in batches] == list(s.steps())
    assert [b.batch_size for b in batches] == [s.batch_size_at(b.position) for b in batches]
    assert len(batches) == s.total_updates
    assert batches[-1].position + batches[-1].batch_size == s.plan()[-1].end_example == 412


def test_every_example_once_per_epoch_even_across_boundaries():
    s = schedule()
    labels = np.concatenate([b.data["label"] for b in all_batches(Sampler(source(), s, seed=3))])
    for e in range(len(labels) // N):
        epoch = labels[e * N : (e + 1) * N]
        assert sorted(epoch.tolist()) == list(range(N))
        np.testing.assert_array_equal(epoch, epoch_permutation(3, e, N))
    assert not np.array_equal(labels[:N], labels[N : 2 * N])  # a fresh order each epoch


def test_resume_from_any_position_gives_the_same_batches():
    s = schedule()
    full = all_batches(Sampler(source(), s, seed=5))
    for k in (1, 7, 15, len(full) - 1):
        resumed = all_batches(Sampler(source(), s, seed=5), start=full[k].position)
        assert [b.position for b in resumed] == [b.position for b in full[k:]]
        for a, b in zip(resumed, full[k:]):
            np.testing.assert_array_equal(a.data["label"], b.data["label"])


def test_prefetch_changes_nothing():
    s = schedule()
    plain = all_batches(Sampler(source(), s, seed=2))
    fetched = all_batches(Sampler(source(), s, seed=2), prefetch=3)
    assert [b.position for b in plain] == [b.position for b in fetched]
    for a, b in zip(plain, fetched):
        np.testing.assert_array_equal(a.data["label"], b.data["label"])


def test_processes_read_disjoint_slices_whose_union_is_the_batch():
    s = schedule()
    whole = all_batches(Sampler(source(), s, seed=4))
    parts = [all_batches(Sampler(source(), s, seed=4, process_index=i, process_count=4))
             for i in range(4)]
    for j, b in enumerate(whole):
        joined = np.concatenate([p[j].data["label"] for p in parts])
        np.testing.assert_array_equal(joined, b.data["label"])


def test_prefetch_thread_errors_reach_the_consumer():
    class Broken(ArraySource):
        def get_batch(self, indices, positions=None, seed=0):
            if positions is not None and positions[0] >= 40:
                raise OSError("disk gone")
            return super().get_batch(indices)

    sampler = Sampler(Broken({"label": np.arange(N)}), schedule(), seed=0)
    with pytest.raises(OSError, match="disk gone"):
        all_batches(sampler, prefetch=2)


def test_size_mismatch_names_the_field():
    with pytest.raises(ValueError, match="--config.dataset_size=50"):
        Sampler(ArraySource({"x": np.zeros(50)}), schedule(), seed=0)
