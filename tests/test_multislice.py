"""The data axis over several TPU slices, on fake devices: slice by slice, DCN outermost."""

import dataclasses

import jax
import pytest

from noise_scale import parallel


@dataclasses.dataclass(frozen=True)
class FakeDevice:
    """What mesh_utils reads of a device; "cpu" keeps each slice in its listed order."""

    id: int
    slice_index: int
    process_index: int
    platform: str = "cpu"
    device_kind: str = "fake"


def slices(num_slices, per_slice, interleave=False):
    devices = [FakeDevice(s * per_slice + i, s, s * per_slice // 4 + i // 4)
               for s in range(num_slices) for i in range(per_slice)]
    # as a runtime may list them: alternating between slices, slice 1 first
    return sorted(devices, key=lambda d: (d.id % per_slice, -d.slice_index)) if interleave \
        else devices


def test_two_slices_are_walked_one_after_the_other():
    order = parallel.device_order(slices(2, 4, interleave=True))
    assert [d.slice_index for d in order] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [d.id for d in order] == [0, 1, 2, 3, 4, 5, 6, 7]


def test_four_slices_of_eight_keep_every_device_once():
    devices = slices(4, 8, interleave=True)
    order = list(parallel.device_order(devices))
    assert sorted(d.id for d in order) == list(range(32))
    assert [d.slice_index for d in order] == [s for s in range(4) for _ in range(8)]


def test_one_slice_keeps_jaxs_order():
    devices = list(reversed(slices(1, 8)))
    assert list(parallel.device_order(devices)) == devices
    real = jax.devices()
    assert list(parallel.make_mesh(real).devices) == real


def test_uneven_slices_are_refused_with_the_counts():
    devices = slices(2, 4)[:-1]
    with pytest.raises(ValueError, match=r"unevenly over 2 slices .*\{0: 4, 1: 3\}"):
        parallel.device_order(devices)
