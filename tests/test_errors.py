"""What the stop messages say: a checkpoint's folder as the user would write it."""

import os
import signal

import pytest

from noise_scale import errors


def test_a_checkpoint_under_the_working_directory_is_shown_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = str(tmp_path / "runs" / "a" / "checkpoints")
    message = str(errors.Preempted(signal.SIGTERM, 32, inside))
    assert f"in {os.path.join('runs', 'a', 'checkpoints')} and stopped" in message
    assert str(tmp_path) not in message
    # outside the working directory, or in a bucket, the path stays as it is
    assert errors.shown_path("/elsewhere/ckpt") == "/elsewhere/ckpt"
    assert errors.shown_path("gs://bucket/run/checkpoints") == "gs://bucket/run/checkpoints"


def test_a_stop_agreed_on_another_processs_signal_says_so():
    here = str(errors.Preempted(signal.SIGTERM, 4_160, "/ckpt"))
    there = str(errors.Preempted(signal.SIGTERM, 4_160, "/ckpt", elsewhere=True))
    assert here.startswith("SIGTERM received: saved a checkpoint at examples_seen=4,160")
    assert there.startswith("SIGTERM received by another process of this run: saved a "
                            "checkpoint at examples_seen=4,160")
    assert errors.exit_status(errors.Preempted(signal.SIGTERM, 0, "/c", elsewhere=True)) == 143


def test_every_stop_has_its_documented_status():
    """0 done, 1 diverged, 2 bad input, 70 a bug, 74 I/O, 75 paused, 128 + n signals: a
    bug, a full disk and a killed worker all used to exit 1, like a diverged run."""
    statuses = {
        errors.TrainingDiverged("nan"): 1,
        errors.ConfigError("bad"): 2,
        errors.SetupError("bad"): 2,
        RuntimeError("a bug"): 70,
        KeyError("a bug"): 70,
        OSError(28, "No space left on device"): 74,
        errors.WorkerDied("killed"): 74,
        errors.Paused("paused"): 75,
        KeyboardInterrupt(): 130,
        errors.Preempted(signal.SIGTERM, 0, "/c"): 143,
        errors.Interrupted(signal.SIGINT): 130,  # during start-up, before the first step
    }
    assert {repr(e): errors.exit_status(e) for e in statuses} == {
        repr(e): s for e, s in statuses.items()}
    for code in (1, 2, 70, 74, 75, 130, 143):  # the map is the module's documentation
        assert f"\n{code}" in errors.__doc__ or f"{code} for" in errors.__doc__, code


def run_stop(error, capsys):
    from noise_scale import cli

    with pytest.raises(SystemExit) as info:
        cli.stop(error)
    return info.value.code, capsys.readouterr().err


def test_a_known_stop_prints_one_line_a_bug_its_traceback_and_70(capsys):
    code, err = run_stop(OSError(28, "No space left on device", "/w/metrics.jsonl"), capsys)
    assert code == 74 and "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("error: [Errno 28] No space left on device: '/w/metrics.jsonl'")
    code, err = run_stop(KeyboardInterrupt(), capsys)
    assert code == 130 and err.startswith("error: interrupted (Ctrl-C)")
    try:
        {}["missing"]
    except KeyError as e:
        code, err = run_stop(e, capsys)
    assert code == 70 and "Traceback" in err and "KeyError: 'missing'" in err
    assert err.splitlines()[-1].startswith("error: internal error (KeyError: 'missing'): a bug")


def test_the_judge_command_refuses_a_damaged_summary_without_a_traceback(tmp_path, capsys):
    """It used to end in a TypeError traceback, status 1 (like a diverged run)."""
    from noise_scale.experiments import judge

    for text in ('{"variants": 3}', '{"variants": {"a": {"ro'):
        (tmp_path / "summary.json").write_text(text)
        assert judge.main(["judge", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "summary.json is damaged or not a summary" in err


def test_a_usage_errors_field_survives_pickling():
    """A --jobs worker's error crosses a process boundary with its field."""
    import pickle

    error = pickle.loads(pickle.dumps(errors.ScheduleError("bad B", field="schedule.batch_size")))
    assert (type(error), str(error), error.field) == (errors.ScheduleError, "bad B",
                                                      "schedule.batch_size")
    assert errors.ConfigError("plain").field is None
