import io
import json
import struct

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


def read_scalars(logdir) -> list[tuple[str, int, float]]:
    """(tag, step, value) from TensorBoard event files (TFRecords of Event protos)."""
    from tensorboardX.proto import event_pb2

    scalars = []
    for path in sorted(logdir.iterdir()):
        data, i = path.read_bytes(), 0
        while i < len(data):  # a record: length (8 bytes), its CRC (4), data, its CRC (4)
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            scalars += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
            i += 12 + n + 4
    return scalars


def test_tensorboard_tags_are_grouped_train_and_eval(tmp_path):
    record = {"examples_seen": 4096, "epoch": 1.0, "batch_size": 512, "learning_rate": 0.4,
              "momentum": 0.9, "train_loss": 1.5, "train_accuracy": 0.25, "test_loss": 1.25,
              "test_accuracy": 0.5, "examples_per_second": 2048.0, "cap_decisions": "grew",
              "noise_scale_measured": None, "gradient_norm_sq": float("nan")}
    w = metrics.MetricWriter(str(tmp_path))
    w.write(record)
    w.close()
    scalars = read_scalars(tmp_path / "tensorboard")
    assert len(scalars) == 10 and {step for _, step, _ in scalars} == {4096}  # examples seen
    # neither the string, nor None, nor NaN; values as float32 holds them
    assert {tag: value for tag, _, value in scalars} == pytest.approx({
        "train/examples_seen": 4096, "train/epoch": 1.0, "train/batch_size": 512,
        "train/learning_rate": 0.4, "train/momentum": 0.9, "train/loss": 1.5,
        "train/accuracy": 0.25, "eval/loss": 1.25, "eval/accuracy": 0.5,
        "train/examples_per_second": 2048}, rel=1e-7)
    # the JSONL record keeps its flat keys (the report tools and committed records read them)
    assert set(metrics.read_metrics(str(tmp_path))[0]) == set(record)


def test_disabled_writer_writes_nothing(tmp_path):
    w = metrics.MetricWriter(str(tmp_path / "x"), enabled=False)
    w.write({"examples_seen": 1})
    assert not (tmp_path / "x").exists()


class FakeClock:
    """Seconds that pass only when a test says so: rate and ETA checked to the digit."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_line_counts_examples_not_steps():
    clock, out = FakeClock(), io.StringIO()
    p = metrics.Progress(total_examples=1000, dataset_size=100, stream=out, min_interval=0,
                         clock=clock)
    p.update(0, stage=0, num_stages=2, batch_size=10, updates=0, total_updates=60)
    clock.now = 10.0
    line = p.update(400, stage=1, num_stages=2, batch_size=40, updates=25, total_updates=60,
                    loss=0.5)
    # 400 examples in 10 s → 40 ex/s; 600 left → 15 s
    assert "40 ex/s" in line and "ETA 15s" in line and "epoch 4.00/10 (40%)" in line
    assert "stage 2/2 B=40" in line and "updates 25/60" in line


IMAGENET = 1_281_167  # examples in ImageNet's training split


def imagenet_progress(clock, out):
    """Progress of a 90-epoch ImageNet run whose log lines come 35 s apart (a TPU stage)."""
    return metrics.Progress(total_examples=90 * IMAGENET, dataset_size=IMAGENET, stream=out,
                            clock=clock)


def test_progress_line_has_a_rate_and_eta_when_log_lines_are_35_seconds_apart():
    """The rate spans the last log points however far apart: 50 updates of B = 8,192 per line."""
    clock, out = FakeClock(), io.StringIO()
    p = imagenet_progress(clock, out)
    args = dict(stage=2, num_stages=4, batch_size=8192, total_updates=20_000)
    first = p.update(0, updates=0, **args)
    lines = []
    for k in range(1, 8):
        clock.now = 35.0 * k
        lines.append(p.update(k * 50 * 8192, updates=50 * k, loss=2.5, **args))
    # 409,600 examples every 35 s: 11,703 ex/s; (115,305,030 - 2,867,200) left → 2h40m
    assert "11,703 ex/s" in lines[-1] and "ETA 2h40m" in lines[-1]
    assert all(" ex/s | ETA " in line and "– ex/s" not in line for line in lines)
    # the first line has no rate yet: a dash, never nan
    assert "– ex/s | ETA –" in first
    assert "nan" not in out.getvalue()


def one_stage_progress():
    """(clock, progress, update args): 10,000 examples at B = 100, a line at every update,
    the first (examples seen 0) already written."""
    clock = FakeClock()
    p = metrics.Progress(total_examples=10_000, dataset_size=1000, stream=io.StringIO(),
                         min_interval=0, clock=clock)
    args = dict(stage=0, num_stages=1, batch_size=100, total_updates=100)
    p.update(0, updates=0, **args)
    return clock, p, args


def test_the_rate_forgets_points_older_than_the_last_few():
    """A slow start (a compile) leaves the rate after RATE_POINTS more log points."""
    clock, p, args = one_stage_progress()
    clock.now = 100.0  # the compile: 100 examples in 100 s
    p.update(100, updates=1, **args)
    for k in range(2, 2 + metrics.RATE_POINTS):
        clock.now += 1.0  # then 100 examples per second
        line = p.update(100 * k, updates=k, **args)
    assert p.rate() == 100.0 and "100 ex/s" in line


def test_a_probe_s_seconds_are_left_out_of_the_rate():
    """A branching probe trains nothing for the run: its 30 s must not read as a slow rate."""
    clock, p, args = one_stage_progress()
    clock.now = 1.0
    p.update(100, updates=1, **args)
    clock.now += 30.0  # the probe
    p.skip(30.0)
    clock.now += 1.0
    line = p.update(200, updates=2, **args)
    assert p.rate() == 100.0 and "100 ex/s" in line and "ETA 1m38s" in line  # 9,800 left


def test_the_last_line_says_eta_0s_and_eta_is_never_negative():
    clock, out = FakeClock(), io.StringIO()
    p = metrics.Progress(total_examples=1000, dataset_size=100, stream=out, min_interval=0,
                         clock=clock)
    args = dict(stage=0, num_stages=1, batch_size=100, total_updates=10)
    p.update(900, updates=9, **args)  # a resumed run's first line: one point, no rate
    assert p.eta(900) is None
    clock.now = 2.0
    assert p.update(1000, updates=10, **args).endswith("| 50 ex/s | ETA 0s")
    assert p.eta(1000) == 0.0 and p.eta(1010) == 0.0  # never negative
    # even the only line of a run that logs once has ETA 0s at its end, not a dash
    q = metrics.Progress(total_examples=1000, dataset_size=100, stream=out, clock=clock)
    assert q.update(1000, updates=10, **args).endswith("| – ex/s | ETA 0s")


def test_progress_line_shows_a_dash_for_a_measured_noise_scale_not_yet_finite():
    out = io.StringIO()
    p = metrics.Progress(total_examples=1000, dataset_size=100, stream=out, clock=FakeClock())
    line = p.update(100, stage=0, num_stages=1, batch_size=100, updates=1, total_updates=10,
                    noise_scale_measured=float("inf"))
    assert "B_simple – |" in line and "inf" not in line


RECORD = {"epoch": 90.0, "examples_seen": 90 * IMAGENET, "updates": 22_517, "stage": 3,
          "batch_size": 8192, "learning_rate": 3.2, "momentum": 0.9, "test_accuracy": 0.76134,
          "test_loss": 0.96318, "wall_time": 22_100.0, "compiles": 4}


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_evaluation_and_summary_lines_leave_the_progress_line_on_a_terminal():
    """The \r progress line is ended by a newline before each evaluation or summary line."""
    out = Terminal()
    p = imagenet_progress(FakeClock(), out)
    p.update(90 * IMAGENET, stage=3, num_stages=4, batch_size=8192, updates=22_517,
             total_updates=22_517, loss=1.1)
    eval_line = p.evaluation(RECORD, num_stages=4)
    assert eval_line == ("eval | epoch 90.00 | test accuracy 76.13% | test loss 0.9632 | "
                         "stage 4/4 B=8,192 ε=3.2 m=0.9")
    summary = p.summary(RECORD)
    assert summary == ("done | test accuracy 76.13% | 22,517 updates | 115,305,030 examples "
                       "(90 epochs) | wall time 6h08m | 4 compiles")
    p.done()  # nothing left open: no blank line after the summary
    screen = out.getvalue().split("\n")
    assert screen[0].startswith("\r\033[Kstage 4/4 B=8,192") and screen[0].endswith("ETA 0s")
    assert screen[1:] == [eval_line, summary, ""]


def test_evaluation_lines_go_only_where_the_progress_line_goes():
    """Process 0 alone prints; the others' Progress is disabled and prints nothing."""
    out = io.StringIO()
    p = metrics.Progress(1000, 100, enabled=False, stream=out)
    assert p.evaluation(RECORD, 4) == "" and p.summary(RECORD) == "" and out.getvalue() == ""


def test_format_duration():
    assert metrics.format_duration(59) == "59s"
    assert metrics.format_duration(61) == "1m01s"
    assert metrics.format_duration(3725) == "1h02m"
    assert metrics.format_duration(-60) == "0s"  # a minute past the end was "-1h59m"


def test_window_sums_by_examples_and_carries_through_a_checkpoint():
    import numpy as np

    w = metrics.Window()
    unpack = lambda a: {"loss": float(a[0]), "accuracy": float(a[1])}  # noqa: E731
    w.pending = [(10, np.array([1.0, 0.5])), (30, np.array([3.0, 1.0]))]
    assert w.flush(unpack) == 3.0 and w.flush(unpack) is None
    assert w.state == [40, 10 * 1.0 + 30 * 3.0, 10 * 0.5 + 30 * 1.0]
    resumed = metrics.Window(w.state)
    assert resumed.state == w.state and resumed.pending == []


def test_window_finds_the_first_non_finite_step_of_a_fetch():
    """Steps are fetched at log steps: the window names the first bad one, counted back."""
    import numpy as np

    w = metrics.Window()
    unpack = lambda a: {"loss": float(a[0]), "accuracy": float(a[1])}  # noqa: E731
    w.pending = [(32, np.array([1.0, 0.5])), (32, np.array([np.inf, 0.1])),
                 (64, np.array([np.nan, 0.1])), (64, np.array([np.nan, 0.1]))]
    assert np.isnan(w.flush(unpack))
    assert w.nonfinite == (np.inf, 3, 32 + 64 + 64)
    w.pending = [(32, np.array([1.0, 0.5]))]
    w.flush(unpack)
    assert w.nonfinite is None


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


def test_input_wait_times_only_the_wait_for_the_next_batch(monkeypatch):
    """A fake clock, not sleeps: 0.02 s in ``next`` and 0.03 s in the "step" give exactly
    0.1 s waited and 40 % of the wall time (a loaded 2-core CI stretches real sleeps)."""
    now = [100.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])

    def slow():
        while True:
            now[0] += 0.02
            yield 0

    wait, batches = metrics.InputWait(), slow()
    for _ in range(5):
        wait.take(batches)
        now[0] += 0.03  # the "step": not waiting
    assert wait.seconds == pytest.approx(0.1)
    assert wait.fraction("record") == pytest.approx(0.4)
    assert wait.fraction("record", exclude=0.05) == pytest.approx(0.5)  # e.g. a compile
    wait.mark("record")
    now[0] += 0.02
    assert wait.fraction("record") == 0.0


def test_the_input_bound_advice_fits_the_data_path():
    """Decoded images: more worker processes; arrays in memory: workers cannot help."""
    from noise_scale.metrics import input_bound_note

    assert "--config.data_workers" in input_bound_note(0.3, decodes=True)
    note = input_bound_note(0.14, decodes=False)
    assert note.startswith("input-bound: 14%") and "data_workers" not in note
