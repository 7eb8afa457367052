import io
import json

import pytest

from noise_scale import metrics


def test_writer_appends_jsonl_and_tensorboard(tmp_path):
    w = metrics.MetricWriter(str(tmp_path))
    w.write({"examples_seen": 10, "test_accuracy": 0.5, "stage": 0})
    w.write({"examples_seen": 20, "test_accuracy": 0.7, "stage": 1})
    w.close()
    assert metrics.read_metrics(str(tmp_path)) == [
        {"examples_seen": 10, "test_accuracy": 0.5, "stage": 0},
        {"examples_seen": 20, "test_accuracy": 0.7, "stage": 1}]
    assert any((tmp_path / "tensorboard").iterdir())
    # one JSON object per line, keys sorted: diffable, and readable without this package
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == {
        "examples_seen": 10, "test_accuracy": 0.5, "stage": 0}
    assert lines[0] == '{"examples_seen": 10, "stage": 0, "test_accuracy": 0.5}'


def test_disabled_writer_writes_nothing(tmp_path):
    w = metrics.MetricWriter(str(tmp_path / "x"), enabled=False)
    w.write({"examples_seen": 1})
    assert not (tmp_path / "x").exists()


def test_progress_line_counts_examples_not_steps(monkeypatch):
    clock = iter([0.0, 10.0])
    monkeypatch.setattr(metrics.time, "time", lambda: next(clock))
    out = io.StringIO()
    p = metrics.Progress(total_examples=1000, dataset_size=100, stream=out, min_interval=0)
    p.update(0, stage=0, num_stages=2, batch_size=10, updates=0, total_updates=60)
    line = p.update(400, stage=1, num_stages=2, batch_size=40, updates=25, total_updates=60,
                    loss=0.5)
    # 400 examples in 10 s → 40 ex/s; 600 left → 15 s
    assert "40 ex/s" in line and "ETA 15s" in line and "epoch 4.00/10 (40%)" in line
    assert "stage 2/2 B=40" in line and "updates 25/60" in line


def test_format_duration():
    assert metrics.format_duration(59) == "59s"
    assert metrics.format_duration(61) == "1m01s"
    assert metrics.format_duration(3725) == "1h02m"


def test_window_sums_by_examples_and_carries_through_a_checkpoint():
    import numpy as np

    w = metrics.Window()
    unpack = lambda a: {"loss": float(a[0]), "accuracy": float(a[1])}  # noqa: E731
    w.pending = [(10, np.array([1.0, 0.5])), (30, np.array([3.0, 1.0]))]
    assert w.flush(unpack) == 3.0 and w.flush(unpack) is None
    assert w.state == [40, 10 * 1.0 + 30 * 3.0, 10 * 0.5 + 30 * 1.0]
    resumed = metrics.Window(w.state)
    assert resumed.state == w.state and resumed.pending == []


def test_window_averages_the_measured_noise_estimates_and_carries_them():
    import numpy as np

    names = ("loss", "accuracy", *metrics.RAW_NOISE)
    unpack = lambda a: dict(zip(names, map(float, a)))  # noqa: E731
    w = metrics.Window()
    w.pending = [(10, np.array([1.0, 0.5, 2.0, 50.0])), (30, np.array([3.0, 1.0, 1.0, 30.0])),
                 (60, np.array([3.0, 1.0, np.nan, np.nan]))]  # a stage that cannot measure
    w.flush(unpack)
    assert w.raw_means == {"gradient_norm_sq_raw": 1.25, "gradient_noise_trace_raw": 35.0}
    resumed = metrics.Window(w.state)
    assert resumed.raw_means == w.raw_means and resumed.state == w.state


def test_record_names_match_the_step():
    from noise_scale import gns, parallel

    assert metrics.RAW_NOISE == gns.RAW
    assert parallel.STEP_METRICS[4:] == gns.STEP_METRICS


def test_records_table_is_plain_aligned_text():
    records = [{"epoch": 1.0, "updates": 1250, "test_accuracy": 0.91234, "stage": 0},
               {"epoch": 2.0, "updates": 1500, "test_accuracy": 0.95, "stage": 1}]
    assert metrics.records_table(records, ["epoch", "updates", "test_accuracy"]).splitlines() == [
        "epoch  updates  test_accuracy",
        "    1    1,250         0.9123",
        "    2    1,500           0.95"]


def test_a_record_at_zero_learning_rate_has_zero_noise():
    """A cosine to 0 reaches ε = 0 in float32 on its last step: g is 0, not an error."""
    import numpy as np

    from noise_scale.schedule import Schedule, Stage

    plan = Schedule(100, (Stage(0, 1, 10, 0.1, 0.9),)).plan()[0]
    w = metrics.Window()
    w.pending = [(10, np.array([0.5, 0.9, 0.0, 0.9]))]
    w.flush(lambda a: dict(zip(("loss", "accuracy", "learning_rate", "momentum"), map(float, a))))
    r = metrics.train_record(plan, w, 100, 10, 1, 1.0, dataset_size=100, devices=1)
    assert r["learning_rate"] == 0.0 and r["noise_scale"] == 0.0 and r["train_loss"] == 0.5
    w.last["learning_rate"] = 0.1
    assert metrics.train_record(plan, w, 100, 10, 1, 1.0, dataset_size=100, devices=1)[
        "noise_scale"] == pytest.approx(0.1 / 0.1 * (100 / 10 - 1))


def test_progress_line_says_when_a_stage_is_input_bound():
    out = io.StringIO()
    p = metrics.Progress(total_examples=1000, dataset_size=100, stream=out, min_interval=0)
    args = dict(stage=0, num_stages=2, batch_size=10, updates=1, total_updates=60)
    assert "input-bound" not in p.update(10, **args, input_wait=0.05)
    line = p.update(20, **args, input_wait=0.34)
    assert "input-bound: 34% of the time waiting" in line
    assert "--config.data_workers" in line and "--config.prefetch" in line


def test_input_wait_times_only_the_wait_for_the_next_batch():
    import time

    def slow():
        while True:
            time.sleep(0.02)
            yield 0

    wait, batches = metrics.InputWait(), slow()
    for _ in range(5):
        wait.take(batches)
        time.sleep(0.02)  # the "step": not waiting
    assert wait.seconds == pytest.approx(0.1, abs=0.05)
    assert 0.3 < wait.fraction("record") < 0.7  # about half the wall time
    wait.mark("record")
    time.sleep(0.02)
    assert wait.fraction("record") == 0.0


def test_the_input_bound_advice_fits_the_data_path():
    """Decoded images: more worker processes; arrays in memory: workers cannot help."""
    from noise_scale.metrics import input_bound_note

    assert "--config.data_workers" in input_bound_note(0.3, decodes=True)
    note = input_bound_note(0.14, decodes=False)
    assert note.startswith("input-bound: 14%") and "data_workers" not in note
