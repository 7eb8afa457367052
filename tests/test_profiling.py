"""config.profile_steps: a jax.profiler trace of a stage's first steps, and nothing else changes."""

import gzip
import json
import logging

import jax
import jax.numpy as jnp
import pytest

from noise_scale import train
from noise_scale.errors import ConfigError
from noise_scale.train import profiling
from tests.helpers import comparable, small_config

# Three stages over one epoch of N = 4,000: B = 32 (63 updates), 160 (8), 800 (1).
THREE_STAGES = {"schedule.total_epochs": 1.0, "schedule.boundaries": (0.5, 0.8),
                "measure_noise_scale": False}


def traces(workdir, stage):
    return sorted((workdir / "profile" / f"stage{stage}").glob("plugins/profile/*/*.xplane.pb"))


def trace_events(xplane):
    """(executions of the train step per device, XLA compile events) in the trace beside
    ``xplane`` (its TensorBoard trace-viewer copy: the same events, as JSON)."""
    trace = xplane.with_name(xplane.name.replace(".xplane.pb", ".trace.json.gz"))
    names = [e.get("name", "") for e in
             json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]]
    executions = [n for n in names if n.startswith("[0] ") and "per_device_step" in n]
    # Python functions are "$file:line name" events (re.compile is one): not XLA's
    return len(executions), [n for n in names if "compile" in n.lower() and n[:1] != "$"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mnist1d"))


@pytest.mark.slow  # a traced run (~20 s)
def test_a_profiled_run_traces_its_chosen_stages_and_trains_the_same(tmp_path, data_dir):
    # Evaluated mid-run (its step compiled by the first record, not inside stage 2's trace);
    # the plain run, second, reads the profiled run's compiles from the cache.
    common = dict(THREE_STAGES, eval_every_epochs=0.5,
                  compilation_cache_dir=str(tmp_path / "cache"))
    profiled_dir, plain_dir = tmp_path / "profiled", tmp_path / "plain"
    profiled = train.train_and_evaluate(small_config(
        "increase_batch", data_dir, profile_steps=2, profile_stages=(0, 2), **common),
        str(profiled_dir))
    plain = train.train_and_evaluate(small_config("increase_batch", data_dir, **common),
                                     str(plain_dir))
    # The same 63 + 8 + 1 updates and the same numbers: a trace only watches.
    assert [r["updates"] for r in profiled] == [r["updates"] for r in plain] == [63, 72]
    assert comparable(profiled) == comparable(plain)  # compiles: the plain run read them back
    assert not (plain_dir / "profile").exists()  # profile_steps=0: nothing written
    assert traces(profiled_dir, 1) == []  # not chosen
    # Stage 0: its first 2 steps, executions only (compiled before the trace began);
    # stage 2 has 1 update: the trace closed with the stage.
    for stage, steps in ((0, 2), (2, 1)):
        [xplane] = traces(profiled_dir, stage)
        assert trace_events(xplane) == (steps, [])
    jax.profiler.start_trace(str(tmp_path / "after"))  # none left open in this process
    jax.profiler.stop_trace()


def test_a_stage_the_schedule_lacks_is_refused_before_training(tmp_path, data_dir):
    config = small_config("increase_batch", data_dir, profile_steps=2, profile_stages=(1, 5),
                          **THREE_STAGES)
    with pytest.raises(ConfigError) as info:
        train.train_and_evaluate(config, str(tmp_path))
    assert str(info.value) == (
        "config.profile_stages=(1, 5) is invalid: this schedule has stages 0-2, so it must "
        "name stages among them (() = every stage). Fix: --config.profile_stages='(1,)', or "
        "--config.profile_stages='()'.")
    assert not (tmp_path / "profile").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_only_the_chief_traces_and_an_open_trace_is_left_alone(tmp_path, caplog):
    config = small_config(profile_steps=1)
    state = jnp.ones(3)
    profiling.StageTrace(config, str(tmp_path / "worker"), enabled=False).start(0, state)
    assert not (tmp_path / "worker").exists()  # process 1 of a multi-host run: no trace
    jax.profiler.start_trace(str(tmp_path / "someone_else"))  # a trace the user opened
    try:
        trace = profiling.StageTrace(config, str(tmp_path / "ours"), enabled=True)
        with caplog.at_level(logging.WARNING):
            trace.start(0, state)
        assert trace.stage is None and "stage 0: no profile taken" in caplog.text
        trace.after_step(state)  # nothing open: nothing to stop
    finally:
        jax.profiler.stop_trace()
    assert not (tmp_path / "ours").exists()


def test_wanted():
    off, every, some = (small_config(profile_steps=s, profile_stages=t)
                        for s, t in ((0, ()), (3, ()), (3, (0, 2))))
    assert [profiling.wanted(off, k) for k in range(3)] == [False] * 3
    assert [profiling.wanted(every, k) for k in range(3)] == [True] * 3
    assert [profiling.wanted(some, k) for k in range(3)] == [True, False, True]
