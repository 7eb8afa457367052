"""Multi-process start-up: ``jax.distributed.initialize`` before anything touches a device.

On a Cloud TPU pod slice every VM runs the same command; JAX finds the
coordinator and its process id from the TPU metadata, so ``initialize()``
needs no arguments. Elsewhere (GPU clusters, several processes on one machine
in the tests) the coordinator address, the process count and this process's id
come from flags. A coordinator that cannot be reached fails after
``timeout_seconds`` with a message, not a hang.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import jax

from noise_scale.errors import UsageError


class DistributedError(UsageError):
    """The multi-process runtime could not start; the message says what to check."""


def on_tpu_pod() -> bool:
    """True on a multi-host Cloud TPU slice (more than one worker hostname)."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return len([h for h in hosts.split(",") if h.strip()]) > 1


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               timeout_seconds: int = 300) -> bool:
    """Start the multi-controller runtime if this run has several processes.

    Returns True if it did. Must run before the first use of ``jax.devices()``.
    """
    explicit = bool(coordinator_address) or num_processes > 1
    if not explicit and not on_tpu_pod():
        return False
    if explicit:
        missing = [name for name, bad in (
            ("--coordinator_address", not coordinator_address),
            ("--num_processes", num_processes < 1),
            ("--process_id", not 0 <= process_id < max(num_processes, 1)),
        ) if bad]
        if missing:
            raise DistributedError(
                f"a multi-process run needs --coordinator_address=HOST:PORT, --num_processes=N "
                f"and --process_id in [0, N) on every process; check {', '.join(missing)} "
                f"(got {coordinator_address!r}, {num_processes}, {process_id})."
            )
    def failure(reason: str) -> str:
        return (
            f"could not join the multi-process run (coordinator "
            f"{coordinator_address or 'from the TPU metadata'}, process {process_id} of "
            f"{num_processes or '?'}) within {timeout_seconds} s: {reason}. "
            + ("Check that all other processes were started with this --coordinator_address "
               "and the same --num_processes, and can reach this host's port."
               if process_id == 0 else
               "Check that process 0 is running, that the address and port are reachable from "
               "this host, and that every process got the same --num_processes.")
        )

    if explicit and process_id != 0:
        _wait_until_reachable(coordinator_address, timeout_seconds, failure)
    # JAX's client aborts the whole process (no Python exception) when its deadline passes,
    # so a watchdog with a shorter fuse reports the failure first, then exits with status 2.
    watchdog = threading.Timer(timeout_seconds, _give_up, args=(failure("timed out"),))
    watchdog.daemon = True
    watchdog.start()
    try:
        if explicit:
            jax.distributed.initialize(
                coordinator_address=coordinator_address, num_processes=num_processes,
                process_id=process_id, initialization_timeout=timeout_seconds + 30)
        else:
            jax.distributed.initialize(initialization_timeout=timeout_seconds + 30)
    except Exception as e:  # noqa: BLE001 - surfaced with what to check
        raise DistributedError(failure(f"{type(e).__name__}: {e}")) from None
    finally:
        watchdog.cancel()
    return True


def _wait_until_reachable(address: str, timeout_seconds: float, failure) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise DistributedError(f"--coordinator_address must be HOST:PORT, got {address!r}.")
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(failure(f"nothing answers at {address} ({e})")) from None
            time.sleep(0.5)


def _give_up(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(2)
