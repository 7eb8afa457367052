"""The micro-batch memory check: XLA's figure for the run's own step, and the halving rule."""

import pytest

from noise_scale import memory
from tests.helpers import small_config


@pytest.fixture(scope="module")
def config():
    return small_config("decay_lr", max_device_batch=256, ghost_batch_size=16)


def test_step_memory_is_the_compilers_figure_and_grows_with_the_micro_batch(config):
    big, small = memory.step_memory(config), memory.step_memory(config, 64)
    assert big.micro_batch == 256 and small.micro_batch == 64
    assert big.temp_bytes > small.temp_bytes > 0
    assert big.argument_bytes - small.argument_bytes == (256 - 64) * (40 * 4 + 4)  # the batch
    assert small.alias_bytes > 0  # the donated state is written in place
    assert big.total_bytes > small.total_bytes


def test_fit_halves_until_the_step_fits_never_below_the_ghost_batch(config, monkeypatch):
    """The halving rule alone, on a stand-in measurement of 1 MB per example."""
    monkeypatch.setattr(memory, "step_memory", lambda c, micro, device=None: memory.StepMemory(
        micro, 10**6 * micro, 0, 0, 0))
    micro, measured = memory.fit_max_device_batch(config, limit=70 * 10**6)
    assert micro == 64 and [m.micro_batch for m in measured] == [256, 128, 64]
    micro, measured = memory.fit_max_device_batch(config, limit=1)
    assert micro == 16 and [m.micro_batch for m in measured] == [256, 128, 64, 32, 16]
    micro, measured = memory.fit_max_device_batch(config)  # a CPU reports no memory
    assert micro == 256 and len(measured) == 1


class FakeDevice:
    def __init__(self, kind, stats):
        self.device_kind, self._stats = kind, stats

    def memory_stats(self):
        if isinstance(self._stats, Exception):
            raise self._stats
        return self._stats


def test_device_memory_prefers_the_device_report_then_its_kind():
    assert memory.device_memory(FakeDevice("TPU v2", {"bytes_limit": 123})) == 123
    assert memory.device_memory(FakeDevice("TPU v2", None)) == 8 * memory.GiB
    assert memory.device_memory(FakeDevice("TPU v2", NotImplementedError())) == 8 * memory.GiB
    assert memory.device_memory(FakeDevice("cpu", None)) is None
