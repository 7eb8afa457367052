"""SIGTERM/SIGINT as a flag the loop checks after each step, and a test hook that sends one.

Cloud TPU VMs are preempted with SIGTERM; the loop then writes a checkpoint and
raises ``errors.Preempted`` (exit 143). The handler only sets a flag: a step in
flight finishes, nothing is torn mid-write.
"""

from __future__ import annotations

import os
import signal
import threading


class Signals:
    """Turns SIGTERM/SIGINT into ``received`` (main thread only; elsewhere a no-op)."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


class FaultInjection:
    """Tests set NOISE_SCALE_SIGTERM_AT=<examples> to deliver a real SIGTERM at that point."""

    def __init__(self):
        self.at = int(os.environ.get("NOISE_SCALE_SIGTERM_AT", "-1"))

    def after_step(self, start: int, end: int) -> None:
        if self.at >= 0 and start < self.at <= end:
            os.kill(os.getpid(), signal.SIGTERM)
