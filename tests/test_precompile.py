"""Memory before hours (every stage compiled and checked at start-up) and the persistent
compilation cache (a resumed run reads its compiles back), on 8 host devices.

Host CPU devices report no memory, so the tests give the limit with
``config.device_memory_bytes``. XLA's figures for the small config's steps on 8 devices
(measured, jax 0.10): B = 32 about 0.48 MB, B = 160 1.24 MB (0.59 MB in 5 micro-batches),
B = 800 5.1 MB (1.37 MB in 5), B = 4,000 24 MB (5.2 MB in 5, 1.43 MB in 25).
"""

import os

import pytest

from noise_scale import errors, gns, memory, train
from noise_scale.schedule import schedule_from_config
from noise_scale.train import compile_cache, precompile, stage
from tests.helpers import small_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mnist1d"))


@pytest.mark.slow  # full runs with compiles of every stage (~25 s)
def test_a_stage_too_large_fails_at_start_up_naming_it(tmp_path, data_dir):
    config = small_config("increase_batch", data_dir, max_device_batch=100,
                          device_memory_bytes=1_000_000)
    with pytest.raises(errors.SetupError) as e:
        train.train_and_evaluate(config, str(tmp_path))
    message = str(e.value)
    assert "stage 1 (B=160, from examples_seen=4,000) does not fit" in message
    assert "--config.max_device_batch" in message and "more devices" in message
    assert not (tmp_path / "metrics.jsonl").exists()  # before the first step
    assert not os.listdir(tmp_path / "checkpoints")


@pytest.mark.slow  # six compiles, ~25 s on a shared 2-core machine
def test_accumulation_is_chosen_where_max_device_batch_is_unset(tmp_path, data_dir):
    config = small_config("increase_batch", data_dir, device_memory_bytes=2_000_000)
    run = train.setup(config, str(tmp_path))
    state = train.init_state(run)
    plans, steps = precompile.precompile(
        run, run.plans, 0, lambda p, b: stage.compile_step(run, p, state, b)[0],
        config.device_memory_bytes)
    assert [p.accumulation_steps for p in plans] == [1, 1, 5, 25]
    assert [p.micro_batch for p in plans] == [4, 20, 20, 20]  # whole ghost batches of 4
    assert sorted(steps) == [(32, 1), (160, 1), (800, 5), (4000, 25)]
    assert all(memory.StepMemory.of(s).total_bytes <= 2_000_000 for s in steps.values())
    # a stage already trained is neither compiled nor changed
    later, steps = precompile.precompile(
        run, run.plans, schedule_from_config(config).plan()[2].start_example,
        lambda p, b: stage.compile_step(run, p, state, b)[0], config.device_memory_bytes)
    assert [p.accumulation_steps for p in later] == [1, 1, 5, 25]
    assert sorted(steps) == [(800, 5), (4000, 25)]


def test_memory_limit_is_the_override_or_the_devices_report():
    config = small_config("increase_batch")
    assert precompile.memory_limit(config) is None  # host CPU devices report none
    config.device_memory_bytes = 123
    assert precompile.memory_limit(config) == 123


@pytest.mark.slow  # full runs with compiles of every stage (~25 s)
def test_a_rerun_after_preemption_reads_its_compiles_from_the_cache(tmp_path, data_dir,
                                                                     monkeypatch):
    config = small_config("increase_batch", data_dir, dataset_size=2000)
    config.schedule.total_epochs, config.schedule.boundaries = 2.0, (1.0,)
    # an entry planted where the cache used to be (a shared workdir): never read nor added to
    planted = tmp_path / "compilation_cache"
    planted.mkdir()
    (planted / "jit_step-0123456789abcdef-cache").write_bytes(b"someone else's code")
    monkeypatch.setenv("NOISE_SCALE_SIGTERM_AT", "2500")  # inside stage 1 (B = 160)
    with pytest.raises(errors.Preempted):
        train.train_and_evaluate(config, str(tmp_path))
    monkeypatch.delenv("NOISE_SCALE_SIGTERM_AT")
    records = train.train_and_evaluate(config, str(tmp_path))
    # read from this user's cache, one directory per run (compile_cache), not the workdir's
    assert os.listdir(planted) == ["jit_step-0123456789abcdef-cache"]
    assert os.listdir(compile_cache.user_root())
    p = gns.programs_per_batch_size(config)  # the plain step and the measuring one
    assert [r["compiles_cached"] for r in records] == [0, p]  # stage 1's programs, read back
    assert [r["compiles"] for r in records] == [p, 3 * p]  # compiled before the kill, and again
