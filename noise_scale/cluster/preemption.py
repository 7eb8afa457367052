"""SIGTERM/SIGINT as a stop the loop checks after each step, agreed by every process.

Cloud TPU VMs and SLURM preempt with SIGTERM; the loop then writes a checkpoint and
raises ``errors.Preempted`` (exit 143). Nothing is torn mid-write: a step in flight
finishes, and the stop is taken between steps.

**One process**: a Python handler sets a flag; the loop stops after the step it lands in.

**Several processes** must stop after the *same* step: the checkpoint save and the
next step's all-reduce are both collectives, and a process in one while another is in
the other waits forever (until the slice is reclaimed and the checkpoint is lost). The
agreement is JAX's preemption sync manager, started by ``jax.distributed.initialize``
(the mechanism orbax's ``reached_preemption`` and MaxText use), not a protocol of ours:
its own SIGTERM handler tells the coordination service; every process reports how many
steps it has taken and waits until all have; each then stops after one step more than
the furthest had taken. So a Python handler must not replace SIGTERM's here (it would
silence the library's); SIGINT (Ctrl-C on one host) is passed on as SIGTERM. The steps
are counted from this launch, since all processes of a launch resume from one checkpoint;
a signal during start-up is agreed on at the first step. The library polls for the
signal once a second, so processes stop a second or so of steps after it arrives.

**Before the first step** (importing JAX, initialising it, building the data, compiling)
the command holds :class:`StartUp`: a signal is noted and raised as ``errors.Interrupted``
at the next point start-up checks (``check_start_up``), never where it lands. Python's
default raises ``KeyboardInterrupt`` wherever the main thread next runs Python, which
during start-up is often inside an XLA compile (a callback from C++); the compile's
half-finished state then crashed the interpreter's exit (a segfault, status 139), or a
library swallowed the exception and the run went on (status 0).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

from noise_scale.errors import Interrupted


def agreement_available() -> bool:
    """True in a multi-process run whose JAX preemption sync manager is running."""
    import jax

    if jax.process_count() == 1:
        return False
    from jax.experimental import multihost_utils

    try:
        multihost_utils.reached_preemption_sync_point(0)  # 0: the count before any step
    except RuntimeError:
        logging.warning(
            "jax_enable_preemption_service is off: each process stops on its own signal, and "
            "a signal that reaches the processes at different steps hangs the run. Leave the "
            "option at its default (on) for multi-process runs.")
        return False
    return True


class Signals:
    """Turns SIGTERM/SIGINT into a stop after an agreed step (main thread; elsewhere a no-op).

    ``agreed``: stop when JAX's preemption sync manager says all processes have reached
    the agreed step (``agreement_available()``); otherwise on this process's own signal.
    """

    def __init__(self, agreed: bool = False):
        self.agreed = agreed
        self.received: int | None = None  # the signal this process got, if any
        self._old = {}

    def __enter__(self):
        if StartUp.active is not None:  # a signal of start-up's last moments is this stop's
            self.received = StartUp.active.received
            StartUp.active.handed_over = True
        if threading.current_thread() is threading.main_thread():
            if self.agreed:  # SIGTERM stays with the sync manager's handler
                self._old[signal.SIGINT] = signal.signal(signal.SIGINT, self._forward)
            else:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def _forward(self, signum, frame):
        self.received = signum
        os.kill(os.getpid(), signal.SIGTERM)

    def stop_after(self, step: int) -> int | None:
        """The signal to stop for after this launch's ``step``-th step (1, 2, ...), or None."""
        if not self.agreed:
            return self.received
        from jax.experimental import multihost_utils

        if multihost_utils.reached_preemption_sync_point(step):
            return self.received or signal.SIGTERM
        return None

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class StartUp:
    """SIGTERM/SIGINT before the loop's ``Signals``: noted, raised at ``check_start_up``.

    Held by the command around all of its start-up (the module docstring says why). A
    second signal stops at once (``os._exit``: no interpreter shutdown to crash). In a
    multi-process run JAX's preemption sync manager takes SIGTERM over at initialisation.
    """

    active: StartUp | None = None  # the one held now, if any

    def __init__(self):
        self.received: int | None = None
        self.handed_over = False  # the loop's Signals took the stop over
        self._old = {}

    def __enter__(self):
        if StartUp.active is self:  # taken early (``start_up``), held on
            return self
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
            StartUp.active = self
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            sys.stderr.write(f"{signal.Signals(signum).name} received again: stopped at once.\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise Interrupted(self.received)

    def __exit__(self, exc_type, *exc):
        if StartUp.active is self:
            StartUp.active = None
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        if exc_type is None and not self.handed_over:
            self.check()  # a signal after the last check, with no loop to take it


def start_up() -> StartUp:
    """The ``StartUp`` held now (a command takes one before its heavy imports), or a new one."""
    return StartUp.active or StartUp()


def check_start_up() -> None:
    """Raise ``errors.Interrupted`` if a signal arrived during start-up (a no-op outside a
    command: a notebook calling ``train_and_evaluate`` keeps Python's own Ctrl-C)."""
    if StartUp.active is not None:
        StartUp.active.check()


class FaultInjection:
    """Tests set NOISE_SCALE_SIGTERM_AT=<examples> to deliver a real SIGTERM at that point."""

    def __init__(self):
        self.at = int(os.environ.get("NOISE_SCALE_SIGTERM_AT", "-1"))

    def after_step(self, start: int, end: int) -> None:
        if self.at >= 0 and start < self.at <= end:
            os.kill(os.getpid(), signal.SIGTERM)
