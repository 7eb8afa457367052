"""Ctrl-C or SIGTERM before the first step: status 130/143 and one line, never a crash.

Python's own KeyboardInterrupt, raised inside an XLA compile, crashed the interpreter's
exit (status -11, a segfault) or was swallowed (the run went on to status 0); raised
inside numpy's import it became an ImportError traceback (status 1).
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from noise_scale import cli, errors
from noise_scale.cluster import preemption

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_signal_during_start_up_is_raised_where_start_up_checks():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(errors.Interrupted) as info:
        with preemption.start_up() as held:
            assert preemption.StartUp.active is held
            preemption.check_start_up()  # nothing yet
            os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt here
            with preemption.Signals() as loop_signals:  # the loop takes the stop over
                assert loop_signals.received == signal.SIGINT
            preemption.check_start_up()
    assert errors.exit_status(info.value) == 130
    assert str(info.value).startswith("SIGINT received during start-up, before the first step")
    assert signal.getsignal(signal.SIGINT) is before and preemption.StartUp.active is None
    preemption.check_start_up()  # outside a command: a no-op


def test_a_signal_after_the_loop_had_its_handlers_is_not_called_start_ups():
    """After training (the loop's handlers gone) a first Ctrl-C does not relabel a finished
    run as stopped "during start-up"; a second one stops at once."""
    with preemption.start_up() as held:
        with preemption.Signals():
            pass
        os.kill(os.getpid(), signal.SIGINT)
    assert held.received == signal.SIGINT and held.handed_over


def test_the_stop_is_one_line_and_its_signals_status(capsys):
    with pytest.raises(SystemExit) as info:
        cli.stop(errors.Interrupted(signal.SIGTERM))
    err = capsys.readouterr().err
    assert info.value.code == 143 and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.2, 1.0, 1.5, 2.0])
def test_ctrl_c_at_any_moment_of_start_up_exits_130_with_one_line(tmp_path, delay):
    """0.2 s: absl and numpy importing; 1-2 s: JAX initialising, the data, the first compile
    (on a slower machine the signal lands later: a saved first step also says one line)."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.Popen(
        [sys.executable, "-m", "noise_scale.main", "--config=configs/mnist1d.py:increase_batch",
         f"--workdir={tmp_path / 'run'}", f"--config.data_dir={tmp_path / 'data'}",
         "--config.dataset_size=4000", "--config.schedule.total_epochs=4",
         "--config.schedule.boundaries=(1.0,2.0,3.0)", "--config.ghost_batch_size=4"],
        cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "Fatal Python error" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("SIGINT received"), err[-3000:]
