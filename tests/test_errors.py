"""What the stop messages say: a checkpoint's folder as the user would write it."""

import os
import signal

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
