"""The engine end to end on 8 host devices: compiles, schedule-following, determinism."""

import contextlib
import io

import numpy as np
import pytest

from noise_scale import errors, gns, train
from noise_scale import metrics as metrics_lib
from noise_scale.schedule import schedule_from_config
from noise_scale.train import counters
from tests.helpers import small_config, strip_timing


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mnist1d"))


@pytest.fixture(scope="module")
def terminal():
    """What the increase_batch run printed to stderr: progress, evaluation and summary lines."""
    return io.StringIO()


@pytest.fixture(scope="module")
def increase_run(tmp_path_factory, data_dir, terminal):
    workdir = str(tmp_path_factory.mktemp("run"))
    config = small_config("increase_batch", data_dir)
    with contextlib.redirect_stderr(terminal):
        records = train.train_and_evaluate(config, workdir)
    return config, workdir, records


def test_one_compile_per_batch_size(increase_run):
    config, _, records = increase_run
    schedule = schedule_from_config(config)
    assert schedule.batch_sizes() == [32, 160, 800, 4000]
    p = gns.programs_per_batch_size(config)  # 2: the plain step and the measuring one
    assert p == 2 and records[-1]["compiles"] == 4 * p
    # each compile happened when its batch size first appeared, never later
    assert [r["compiles"] for r in records] == [p, 2 * p, 3 * p, 4 * p]


@pytest.mark.slow  # a hybrid run (~8 s); test_parallel::test_changing_lr_and_momentum_never_recompiles keeps the rule in the default tier
def test_hybrid_reuses_the_step_when_only_lr_changes(tmp_path, data_dir):
    config = small_config("hybrid", data_dir)
    records = train.train_and_evaluate(config, str(tmp_path))
    assert [r["batch_size"] for r in records] == [32, 160, 160, 160]
    assert [round(r["learning_rate"], 6) for r in records] == [0.05, 0.05, 0.01, 0.002]
    assert records[-1]["compiles"] == 2 * gns.programs_per_batch_size(config)


def test_logged_values_follow_the_schedule(increase_run):
    config, _, records = increase_run
    s = schedule_from_config(config)
    assert len(records) == 4
    for r in records:
        last_step = r["examples_seen"] - r["batch_size"]  # the logged step's start
        assert r["batch_size"] == s.batch_size_at(last_step)
        assert r["learning_rate"] == pytest.approx(s.learning_rate_at(last_step), rel=1e-6)
        assert r["momentum"] == pytest.approx(s.momentum_at(last_step), rel=1e-6)
        assert r["noise_scale"] == pytest.approx(s.noise_scale_at(last_step), rel=1e-5)
        assert r["stage"] == s.stage_index_at(last_step)
    assert [r["updates"] for r in records] == np.cumsum(s.updates_per_stage()).tolist()
    assert records[-1]["examples_seen"] == s.plan()[-1].end_example


def test_metrics_file_and_evaluation_counts(increase_run):
    _, workdir, records = increase_run
    on_disk = metrics_lib.read_metrics(workdir)
    assert on_disk == records
    for r in records:
        assert set(metrics_lib.REQUIRED_KEYS) <= set(r)
        assert r["test_examples"] == 1000  # every test example exactly once (500 + 500)
        assert np.isfinite(r["train_loss"]) and r["examples_per_second"] > 0


def test_the_terminal_shows_every_evaluation_and_the_run_summary(increase_run, terminal):
    _, _, records = increase_run
    text = terminal.getvalue()
    evals = [line for line in text.splitlines() if line.startswith("eval | ")]
    assert [line.split(" | ")[2] for line in evals] == [
        f"test accuracy {100 * r['test_accuracy']:.2f}%" for r in records]
    assert evals[-1].endswith(f"stage 4/4 B=4,000 ε={records[-1]['learning_rate']:.4g} m=0.9")
    last = records[-1]
    done = [line for line in text.splitlines() if line.startswith("done | ")]
    assert done == [metrics_lib.summary_line(last)]
    assert f"{last['updates']:,} updates | 16,000 examples (4 epochs)" in done[0]
    assert text.index(evals[-1]) < text.index(done[0])
    assert "ETA 0s" in text and "nan" not in text


def test_learns_far_above_chance(increase_run):
    _, _, records = increase_run
    assert records[-1]["test_accuracy"] > 0.6  # chance is 0.1
    assert records[-1]["train_loss"] < records[0]["train_loss"]


@pytest.mark.slow  # two runs (~20 s); every resume test compares a rerun bit for bit
def test_same_seed_same_metrics(increase_run, tmp_path, data_dir):
    config, _, records = increase_run
    again = train.train_and_evaluate(small_config("increase_batch", data_dir), str(tmp_path))
    assert strip_timing(again) == strip_timing(records)


def test_divergence_names_the_first_non_finite_update_not_the_log_step():
    """Fetched at update 40 (examples 8,096): 3 steps of B=160 back is update 38, in stage
    1 at examples 7,616; the message used to name update 40."""
    schedule = schedule_from_config(small_config("increase_batch"))
    bad = metrics_lib.NonFinite(float("nan"), steps_back=3, examples_back=480)
    message = counters.divergence_message(schedule, bad, 40, 8096, "/ckpt")
    assert message.startswith("training loss became nan at update 38 (stage 1, B=160, "
                              "examples_seen=7,616, epoch 1.904), the first non-finite one")


def test_batch_that_does_not_divide_fails_before_compiling(tmp_path, data_dir):
    config = small_config("increase_batch", data_dir)
    config.schedule.batch_size = 12  # 12 / 8 devices
    with pytest.raises(errors.ScheduleError, match="batch_multiple=8") as info:
        train.setup(config, str(tmp_path))
    assert errors.exit_status(info.value) == errors.EXIT_USAGE


def test_a_bug_raising_value_error_in_setup_keeps_its_traceback(tmp_path, data_dir, monkeypatch):
    """Setup converts no ValueError into a usage error: a bug's own ValueError reaches the
    command as itself (exit 70, traceback shown) with the frame that raised it."""
    from noise_scale.train import profiling

    def broken(config, stages):
        raise ValueError("boom")

    monkeypatch.setattr(profiling, "check_stages", broken)
    with pytest.raises(ValueError, match="^boom$") as info:
        train.setup(small_config("increase_batch", data_dir), str(tmp_path))
    assert type(info.value) is ValueError
    assert errors.exit_status(info.value) == errors.EXIT_INTERNAL and errors.is_bug(info.value)
    assert info.traceback[-1].name == "broken"


def test_dataset_size_mismatch_is_named(data_dir):
    # MNIST-1D is generated at config.dataset_size, so a mismatch can only come from a
    # source of another size: the sampler's guard names the field and the value to set.
    from noise_scale.data import ArraySource, Sampler
    schedule = schedule_from_config(small_config("increase_batch", data_dir))
    with pytest.raises(ValueError, match="--config.dataset_size=10"):
        Sampler(ArraySource({"x": np.zeros(10)}), schedule, 0)


def test_ghost_batches_that_do_not_divide_are_reported_not_hidden(tmp_path, data_dir, caplog):
    config = small_config("increase_batch", data_dir, ghost_batch_size=3)
    config.schedule.total_epochs, config.schedule.boundaries = 1.0, ()
    config.schedule.batch_size = 64  # 8 per device: ghost batches of 2, the largest divisor ≤ 3
    with caplog.at_level("WARNING"):
        train.setup(config, str(tmp_path))
    assert "batch norm uses ghost batches of 2" in caplog.text
    assert "config.ghost_batch_size=3" in caplog.text


def test_effective_ghost_size():
    from noise_scale.models.layers import effective_ghost_size

    assert effective_ghost_size(400, 128) == 100  # CIFAR-10's B = 3,200 on 8 devices
    assert effective_ghost_size(2000, 128) == 125
    assert effective_ghost_size(16, 128) == 16
    assert effective_ghost_size(256, 32) == 32


class _SlowSource:
    """An in-memory source whose every batch takes ``delay`` seconds to read."""

    def __init__(self, source, delay):
        self.source, self.delay = source, delay

    def __len__(self):
        return len(self.source)

    def get_batch(self, indices, positions=None, seed=0):
        import time

        time.sleep(self.delay)
        return self.source.get_batch(indices, positions, seed)


@pytest.mark.slow  # a run with a slowed source (~10 s)
def test_input_wait_fraction_measures_a_slow_source(tmp_path, data_dir, increase_run):
    """A source made slow on purpose: the records say the loop waited for most of its time.

    0.5 s a batch (5 per record) outweighs a step and the stage's compile even on a loaded
    2-core machine, where 0.1 s did not (0.15 and 0.47 measured under load)."""
    import dataclasses

    from noise_scale.data import load_dataset

    config = small_config("decay_lr", data_dir, **{
        "schedule.total_epochs": 1.0, "schedule.boundaries": (), "schedule.batch_size": 400,
        "eval_every_epochs": 0.5, "prefetch": 1})
    fast = load_dataset(config)
    slow = dataclasses.replace(fast, train=_SlowSource(fast.train, 0.5))
    waits = [r["input_wait_fraction"]
             for r in train.train_and_evaluate(config, str(tmp_path), slow)]
    assert len(waits) == 2 and all(w > 0.5 for w in waits), waits
    # The in-memory source keeps up: the same loop waits far less.
    _, _, records = increase_run
    assert all(0 <= r["input_wait_fraction"] < min(waits) for r in records)


def test_records_carry_the_measured_noise_scale(increase_run):
    _, _, records = increase_run
    for r in records:
        assert r["noise_scale_measured"] == pytest.approx(
            r["gradient_noise_trace"] / r["gradient_norm_sq"])
    # every 10th step measures: the last stage (B = N, one update) holds no measuring step,
    # so its raw means are None and its smoothed values carry over from stage 3
    raw = [r["gradient_norm_sq_raw"] for r in records]
    assert all(v > 0 for v in raw[:3]) and raw[3] is None
    assert all(r["gradient_noise_trace_raw"] > 0 for r in records[:3])
    # the gradient shrinks faster than its noise as the loss falls: stage 2's raw estimate
    # reads B_simple far above stage 0's. The smoothed value lags it (98 → 104): its horizon
    # holds at least 20 measurements (config.noise_scale_min_measurements), reaching back
    # into stages 0 and 1, where τ alone made it stage 2's one raw estimate (105 → 166).
    raw_b = [r["gradient_noise_trace_raw"] / r["gradient_norm_sq_raw"] for r in records[:3]]
    assert raw_b[2] > 1.4 * raw_b[0], raw_b
    assert records[-1]["noise_scale_measured"] < raw_b[2]
    assert records[-1]["noise_scale_measurements"] > 10
