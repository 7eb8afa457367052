"""One run per workdir: a lease file that process 0 takes before the run writes anything.

Why: a job resubmitted while the first still runs (or a second person's launch on the
same ``--workdir``) would write the same checkpoints and ``metrics.jsonl``, each run
cutting the other's records back to its own resume point. Now the second launch stops
with exit status 2 naming the holder, and has written nothing.

``<workdir>/run.lock`` holds JSON: host, pid, start time, last refresh, the lease's
length and a random token. Process 0 takes it; a thread refreshes it every quarter
lease; it is removed when the run ends in any way Python sees (a crash or ``kill -9``
leaves it, and the next launch takes it over). The other processes learn process 0's
outcome by a broadcast, so a refused launch stops on every host at once.

A holder is **live** while its lease (``LEASE_SECONDS`` since its last refresh) has not
expired and, when it ran on this host, its pid still exists; one that crashed on this host
is stale at once, one on another host once its lease has expired (the hosts' clocks need
only agree to within the lease). A stale lock is taken over with a warning.

How taking is made atomic:

- **local disk (and NFS)**: the complete lock is written to a temporary file and linked to
  ``run.lock`` (``os.link`` fails if it exists, so readers never see half a file and two
  launches cannot both create it). Only the launch that creates ``run.lock.takeover``
  (exclusively) may remove a stale lock, and only the one it read; a launch that meets
  the guard, or finds a new lock after it, is refused.
- **gs://**: GCS creates an object only if absent through a generation precondition
  (``if_generation_match=0`` in google-cloud-storage), which etils' epath does not
  expose and which this project does not depend on. There, the lock is written through
  epath and read back: a launch seconds after a live run's is refused as on a local disk,
  but two launches within the same second may both take it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time

from etils import epath

from noise_scale.errors import UsageError

LOCK_NAME = "run.lock"
LEASE_SECONDS = 120.0  # minutes would leave a crashed run's workdir locked too long
TAKEOVER_SECONDS = 30.0  # a takeover takes milliseconds; a guard this old was left by a crash


class WorkdirBusy(UsageError):
    """Another run holds the workdir's lock; the message names it."""


def _is_local(path: str) -> bool:
    return "://" not in path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def describe(holder: dict) -> str:
    """'pid 123 on host a, started 2026-12-03 16:00:00 UTC, refreshed 12 s ago'."""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    ago = time.time() - holder.get("refreshed", 0)
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {started}, "
            f"refreshed {ago:.0f} s ago")


def stale_reason(holder: dict, now: float | None = None) -> str:
    """Why ``holder`` no longer holds the lock, or '' while it is live."""
    now = time.time() if now is None else now
    lease = float(holder.get("lease_seconds", LEASE_SECONDS))
    if now - float(holder.get("refreshed", 0)) > lease:
        return f"its lease of {lease:.0f} s expired"
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return "its process no longer exists on this host"
    return ""


class Lease:
    """The lock of one workdir, held by this process: refreshed until released."""

    def __init__(self, workdir: str, lease_seconds: float = LEASE_SECONDS):
        self.path = epath.Path(workdir) / LOCK_NAME
        self.lease_seconds = lease_seconds
        now = time.time()
        self.content = {"host": socket.gethostname(), "pid": os.getpid(), "started": now,
                        "refreshed": now, "lease_seconds": lease_seconds,
                        "token": secrets.token_hex(8)}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> Lease:
        """Take the lock (over a stale one, with a warning); WorkdirBusy while it is live."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a holder that vanishes between our read and our write: retry
            if self._create():
                self._start_refreshing()
                return self
            holder = self._read()
            if holder is None:
                continue
            reason = stale_reason(holder)
            if not reason:
                raise WorkdirBusy(
                    f"{self.path.parent} is in use by another run ({describe(holder)}): two "
                    "runs on one workdir would overwrite each other's checkpoints and records. "
                    "Wait for it to finish or stop it, or pass another --workdir. If that run "
                    f"is gone, delete {self.path} (it expires by itself "
                    f"{float(holder.get('lease_seconds', LEASE_SECONDS)):.0f} s after its last "
                    "refresh); nothing was written.")
            logging.warning("taking over the lock of %s from %s: %s.", self.path.parent,
                            describe(holder), reason)
            self._remove_stale(holder)
        raise WorkdirBusy(f"could not take {self.path}: other launches keep taking it. Check "
                          "that only one run is started on this --workdir.")

    def _create(self) -> bool:
        text = json.dumps(self.content)
        if not _is_local(str(self.path)):
            if self.path.exists():
                return False
            self.path.write_text(text)
            return (self._read() or {}).get("token") == self.content["token"]
        tmp = f"{self.path}.{self.content['token']}"
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as e:  # unreadable: treated as a lock long expired
            logging.warning("%s is unreadable (%s); treating it as stale.", self.path, e)
            return {"refreshed": 0, "host": "?", "pid": -1}

    def _remove_stale(self, holder: dict) -> None:
        """Remove the stale lock ``holder``, unless another launch is already taking it over."""
        if not _is_local(str(self.path)):
            self.path.unlink(missing_ok=True)
            return
        guard = f"{self.path}.takeover"
        with contextlib.suppress(FileNotFoundError):  # left by a launch that died taking over
            if time.time() - os.stat(guard).st_mtime > TAKEOVER_SECONDS:
                os.unlink(guard)
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise WorkdirBusy(f"another launch is taking over the stale lock of "
                              f"{self.path.parent} at this moment; nothing was written.") from None
        try:  # only the guard's holder removes a lock, and only the stale one it read
            if (self._read() or {}).get("token") == holder.get("token"):
                self.path.unlink(missing_ok=True)
        finally:
            os.unlink(guard)

    def _start_refreshing(self) -> None:
        self._thread = threading.Thread(target=self._refresh_loop, name="workdir-lease",
                                        daemon=True)
        self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            current = self._read()
            if current is None or current.get("token") != self.content["token"]:
                logging.error("lost the lock of %s to %s; this run keeps going, but two runs "
                              "may now write there.", self.path.parent,
                              describe(current) if current else "nobody (it was deleted)")
                return
            self.content["refreshed"] = time.time()
            self._write(self.content)

    def _write(self, content: dict) -> None:
        if not _is_local(str(self.path)):
            self.path.write_text(json.dumps(content))
            return
        tmp = f"{self.path}.{self.content['token']}"
        with open(tmp, "w") as f:
            f.write(json.dumps(content))
        os.replace(tmp, self.path)  # readers see the old lock or the new, never half

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (self._read() or {}).get("token") == self.content["token"]:
            self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def hold(workdir: str, lease_seconds: float = LEASE_SECONDS):
    """Hold ``workdir``'s lock for the ``with`` block: taken by process 0, agreed by all."""
    import jax

    lease, refused = None, None
    if jax.process_index() == 0:
        try:
            lease = Lease(workdir, lease_seconds).take()
        except WorkdirBusy as e:
            refused = e
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        taken = bool(multihost_utils.broadcast_one_to_all(np.int32(refused is None)))
        if not taken and refused is None:
            raise WorkdirBusy(f"process 0 could not take the lock of {workdir}; its error "
                              "names the run that holds it. Nothing was written.")
    if refused is not None:
        raise refused
    try:
        yield lease
    finally:
        if lease is not None:
            lease.release()
