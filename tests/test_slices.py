"""Growing the slice with the batch: stop at a boundary on purpose, resume on another device
count (8 → 2 → 4), ghost batches that must not change with the slice.

In this process the device count is changed by giving the run a mesh over the first n
of the 8 host devices; ``test_moved_by_subprocesses_*`` (slow) does it the real way, with
processes started under another ``--xla_force_host_platform_device_count``.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from noise_scale import errors, parallel, train
from noise_scale import metrics as metrics_lib
from noise_scale.cluster import slices
from noise_scale.data import ArraySource, Dataset
from noise_scale.data import load_dataset as real_load_dataset
from noise_scale.schedule import schedule_from_config
from noise_scale.train.checkpoint import experiment_fingerprint
from tests.helpers import small_config, strip_timing
from tests.test_checkpoint import OVERRIDES, ROOT
from tests.test_multihost import LR, run_two_processes

SLICES = (8, 2, 4)
PER_SLICE_KEYS = {"devices", "per_device_batch", "compiles", "compiles_cached",
                  # the measured noise scale's small batch is the per-device one: its raw norms
                  # (and so the estimates) are of another batch size on another slice
                  "gradient_norm_sq", "gradient_norm_sq_raw", "gradient_noise_trace",
                  "gradient_noise_trace_raw", "noise_scale_measured", "noise_scale_measured_se"}


def close(value):
    """A record value as the comparison takes it: numbers to 1e-4, text exactly."""
    return value if isinstance(value, str) else pytest.approx(value, rel=1e-4, abs=1e-6)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mnist1d"))


class Recording(ArraySource):
    """Training arrays that note the example ids of every step, by position."""

    def __init__(self, arrays, read):
        super().__init__(arrays)
        self.read = read

    def get_batch(self, indices, positions=None, seed=0):
        # data.checks reads examples 0..k at positions 0..k before each launch trains: not
        # a step of the stream (a shuffled step is never the identity)
        check = positions is not None and np.array_equal(indices, positions)
        if positions is not None and len(positions) and positions[0] >= 0 and not check:
            self.read[int(positions[0])] = np.asarray(indices).copy()
        return super().get_batch(indices, positions, seed)


def recorded_dataset(config, read: dict) -> Dataset:
    d = real_load_dataset(config)
    return Dataset(Recording(d.train.arrays, read), d.eval, d.num_classes, d.input_shape, d.name)


REAL_MESH = parallel.make_mesh


def on_devices(monkeypatch, n: int) -> None:
    """Runs set up from now on use a mesh over the first ``n`` host devices."""
    import jax

    monkeypatch.setattr(parallel, "make_mesh", lambda devices=None: REAL_MESH(jax.devices()[:n]))


def short_config(data_dir, **overrides):
    """Three stages (B = 32, 160, 800) over N = 2,000: the move in a few seconds."""
    config = small_config("increase_batch", data_dir, dataset_size=2000, slices=SLICES,
                          **overrides)
    config.schedule.total_epochs, config.schedule.boundaries = 3.0, (1.0, 2.0)
    return config


def run(config, workdir, read=None):
    """(records, Paused or None)."""
    dataset = recorded_dataset(config, {} if read is None else read)
    try:
        return train.train_and_evaluate(config, str(workdir), dataset), None
    except errors.Paused as e:
        return None, e


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    read = {}
    records, _ = run(short_config(data_dir), tmp_path_factory.mktemp("whole"), read)
    return records, read


@pytest.mark.slow  # runs on three slice sizes (~30 s); the subprocess forms are slow too
def test_moved_8_then_2_then_4_devices_is_the_uninterrupted_run(
        tmp_path, data_dir, uninterrupted, monkeypatch):
    whole, whole_read = uninterrupted
    read = {}
    config = short_config(data_dir, stop_at_stage=1)
    plans = schedule_from_config(config).plan()
    _, paused = run(config, tmp_path, read)
    assert paused is not None and paused.stage == 1
    assert paused.examples_seen == plans[1].start_example == 2016  # the stream rounding
    assert errors.exit_status(paused) == errors.EXIT_PAUSED == 75
    on_devices(monkeypatch, 2)
    config.stop_at_stage = 2  # a later stage: accepted (not in the fingerprint)
    _, paused = run(config, tmp_path, read)
    assert paused is not None and paused.examples_seen == plans[2].start_example
    on_devices(monkeypatch, 4)
    config.stop_at_stage = 0
    moved, _ = run(config, tmp_path, read)

    assert [r["devices"] for r in moved] == [8, 2, 4]
    assert [r["per_device_batch"] for r in moved] == [4, 80, 200]
    for r, plan in zip(moved, plans):
        assert (r["stage"], r["batch_size"], r["examples_seen"]) == (
            plan.index, plan.batch_size, plan.end_example)
    # the same example ids at every step (keyed by the step's first position)
    assert read.keys() == whole_read.keys()
    assert all(np.array_equal(read[p], whole_read[p]) for p in whole_read)
    for a, b in zip(strip_timing(moved), strip_timing(whole), strict=True):
        for k in a.keys() - PER_SLICE_KEYS:
            assert a[k] == close(b[k]), k


def test_pause_message_names_the_next_stage_its_batch_slice_and_resume():
    config = small_config("increase_batch", slices=(8, 32), max_device_batch=100,
                          stop_at_stage=3)
    config.schedule.total_epochs, config.schedule.boundaries = 3.0, (1.0, 2.0)
    plans = schedule_from_config(config).plan(8, 100)
    assert [p.batch_size for p in plans] == [32, 160, 800]
    with pytest.raises(errors.ConfigError, match=r"config.stop_at_stage=3 .* \[1, 2\]"):
        slices.check_stop_at_stage(config, plans)
    message = slices.pause_message(config, plans[2], 8, "/ckpt")
    assert "Stage 2 comes next: B=800, 100 per device on the current 8 devices;" in message
    assert "a slice of 8 devices (100 per device, no accumulation)" in message
    config.max_device_batch = 50
    message = slices.pause_message(config, schedule_from_config(config).plan(8, 50)[2], 8,
                                   "/ckpt")
    assert "in 2 accumulation steps; it wants a slice of 32 devices (25 per" in message
    assert "without config.stop_at_stage=2 (or with a later stage)" in message


def test_a_rerun_paused_at_once_says_the_same_command_pauses_again(monkeypatch):
    """The message used to read as if the same command resumed; it pauses there forever."""
    from types import SimpleNamespace

    from noise_scale.train import Loop

    config = small_config("increase_batch", stop_at_stage=2)
    plan = schedule_from_config(config).plan(8)[2]
    monkeypatch.setattr(sys, "argv", ["/x/noise_scale/main.py", "--config=c.py:v",
                                      "--config.stop_at_stage=2", "--workdir=/w"])
    saved = []
    run = SimpleNamespace(config=config, mesh=SimpleNamespace(size=8))
    for steps_taken in (0, 5):
        clock = SimpleNamespace(examples_seen=plan.start_example, steps_taken=steps_taken)
        loop = SimpleNamespace(run=run, clock=clock,
                               ckpt=SimpleNamespace(directory="/w/checkpoints"),
                               save=lambda wait: saved.append(wait))
        with pytest.raises(errors.Paused) as info:
            Loop.pause_if_asked(loop, plan)
        message = str(info.value)
        assert message.endswith("resume with: python -m noise_scale.main --config=c.py:v "
                                "--workdir=/w")
        assert message.startswith("nothing trained: the run already stands at the start of "
                                  "stage 2") == (steps_taken == 0), message
    assert saved == [True, True]


def test_ghost_size_must_fit_every_named_slice():
    # B = 32 on 8 devices is 4 per device: ghost batches of 16 would be cut to 4 there, but
    # not on 2 devices (16 each). The run refuses, naming the largest size that fits all.
    config = small_config("increase_batch", ghost_batch_size=16, slices=SLICES)
    with pytest.raises(errors.ConfigError, match="--config.ghost_batch_size=4 "):
        slices.check_ghost_on_slices(config, schedule_from_config(config), 8)
    config.ghost_batch_size = 4
    slices.check_ghost_on_slices(config, schedule_from_config(config), 8)
    config.slices = (8, 3)  # B = 32 does not divide over 3 devices
    with pytest.raises(errors.ConfigError, match="on 3 devices"):
        slices.check_ghost_on_slices(config, schedule_from_config(config), 8)


def test_fingerprint_has_no_device_count_nor_slice_fields():
    a = small_config("increase_batch")
    b = small_config("increase_batch", slices=(8, 64), stop_at_stage=2, max_device_batch=8,
                     allow_ghost_change=True)
    s = schedule_from_config(a)
    assert experiment_fingerprint(a, s) == experiment_fingerprint(b, s)


@pytest.mark.slow  # runs on three slice sizes (~30 s); the subprocess forms are slow too
def test_resume_with_other_ghost_batches_is_refused_unless_allowed(tmp_path, data_dir,
                                                                   monkeypatch):
    """Trained on 8 devices with ghost size 16 and no slices named (B = 160: 20 per device,
    ghost batches of 10); on 2 devices stage 1 would use 16 (80 per device)."""
    config = small_config("increase_batch", data_dir, ghost_batch_size=16, stop_at_stage=1)
    config.schedule.total_epochs, config.schedule.boundaries = 2.0, (1.0,)
    _, paused = run(config, tmp_path)
    assert paused is not None
    on_devices(monkeypatch, 2)
    config.stop_at_stage = 0
    with pytest.raises(errors.SetupError, match=r"stage 1 .* ghost batches of 16, but the "
                       r"checkpoint's run planned 10 on 8 devices"):
        run(config, tmp_path)
    config.allow_ghost_change = True
    records, _ = run(config, tmp_path)
    assert [r["devices"] for r in records] == [8, 2]


# ------------------------------------------------ the real way: other processes, other flags
def main_on(workdir, data_dir, devices, *extra):
    """``python -m noise_scale.main`` on ``devices`` host devices, the small config's flags."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu")
    env.pop("NOISE_SCALE_SIGTERM_AT", None)
    cmd = [sys.executable, "-m", "noise_scale.main", "--config=configs/mnist1d.py:increase_batch",
           f"--workdir={workdir}", f"--config.data_dir={data_dir}", *OVERRIDES,
           f"--config.schedule.learning_rate={LR}", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run on 8 devices, at the multi-process tests' ε."""
    workdir = tmp_path_factory.mktemp("reference")
    r = main_on(workdir, data_dir, 8)
    assert r.returncode == 0, r.stderr
    return metrics_lib.read_metrics(str(workdir))


def assert_agree(moved, reference):
    for a, b in zip(strip_timing(moved), strip_timing(reference), strict=True):
        for k in a.keys() - PER_SLICE_KEYS - {"processes"}:
            assert a[k] == close(b[k]), k


@pytest.mark.slow
def test_moved_by_subprocesses_8_then_2_then_4_devices(tmp_path, data_dir, reference):
    slices_flag = "--config.slices=(8,2,4)"
    r = main_on(tmp_path, data_dir, 8, slices_flag, "--config.stop_at_stage=1")
    assert r.returncode == 75, r.stderr
    assert "Stage 1 comes next: B=160" in r.stderr and "Traceback" not in r.stderr
    assert "python -m noise_scale.main" in r.stderr and "stop_at_stage=1" not in \
        r.stderr.split("resume with:")[1]
    r = main_on(tmp_path, data_dir, 2, slices_flag, "--config.stop_at_stage=2")
    assert r.returncode == 75, r.stderr
    r = main_on(tmp_path, data_dir, 4, slices_flag)
    assert r.returncode == 0, r.stderr
    moved = metrics_lib.read_metrics(str(tmp_path))
    assert [r["devices"] for r in moved] == [8, 2, 4, 4]
    assert_agree(moved, reference)


@pytest.mark.slow
def test_two_processes_paused_then_one_process_and_the_reverse(tmp_path, data_dir, reference):
    a, b = tmp_path / "two_then_one", tmp_path / "one_then_two"
    codes, outs, _ = run_two_processes(a, data_dir, tmp_path, tag="a", stop_at_stage=2)
    assert codes == [75, 75], outs
    r = main_on(a, data_dir, 8, "--config.checkpoint_every_epochs=0.5")
    assert r.returncode == 0, r.stderr
    r = main_on(b, data_dir, 8, "--config.checkpoint_every_epochs=0.5",
                "--config.stop_at_stage=2")
    assert r.returncode == 75, r.stderr
    codes, outs, _ = run_two_processes(b, data_dir, tmp_path, tag="b")
    assert codes == [0, 0], outs
    for workdir, processes in ((a, [2, 2, 1, 1]), (b, [1, 1, 2, 2])):
        moved = metrics_lib.read_metrics(str(workdir))
        assert [r["processes"] for r in moved] == processes
        assert_agree(moved, reference)


def test_schedule_slice_column_is_what_a_run_on_that_slice_plans(tmp_path, data_dir,
                                                                  monkeypatch):
    """``python -m noise_scale.schedule --slices``: each stage's slice is the smallest on
    which a run (its plan, set up on that many devices) needs no accumulation."""
    from tests.test_schedule_cli import run as schedule_command

    r = schedule_command("--config=configs/mnist1d.py:increase_batch", "--json",
                         "--slices=2,4,8", "--max_device_batch=100", "--devices=2",
                         *OVERRIDES)
    assert r.returncode == 0, r.stderr
    stages = json.loads(r.stdout)["stages"]
    assert [(s["batch_size"], s["slice"]) for s in stages] == [
        (32, 2), (160, 2), (800, 8), (4000, None)]
    assert [s["accumulation_steps"] for s in stages] == [1, 1, 4, 20]  # on 2 devices
    config = small_config("increase_batch", data_dir, max_device_batch=100)
    for n in (2, 4, 8):
        on_devices(monkeypatch, n)
        plans = train.setup(config, str(tmp_path)).plans
        for s, p in zip(stages, plans):
            if s["slice"] == n:
                assert (p.per_device_batch, p.accumulation_steps) == (s["batch_size"] // n, 1)
            elif s["slice"] is None or s["slice"] > n:
                assert p.accumulation_steps > 1


@pytest.mark.parametrize("name, devices", [("8", 8), ("v3-8", 8), ("v4-32", 16), ("v5p-128", 64),
                                           ("v5e-16", 16), ("v5litepod-256", 256), ("v6e-8", 8)])
def test_slices_may_be_named_as_tpu_types(name, devices):
    assert slices.slice_devices(name) == devices


@pytest.mark.parametrize("name", ["v9-8", "v4-1", "v4", "eight", "-8"])
def test_unknown_slice_names_are_refused(name):
    with pytest.raises(ValueError):
        slices.slice_devices(name)
