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
- **gs://** with google-cloud-storage (in the ``tpu`` and ``cuda`` extras): every write
  is conditional on the object's generation, GCS's compare-and-swap. Creating needs
  ``if_generation_match=0`` (absent); a refresh, the generation this run last wrote; a
  takeover's delete, the stale generation it read. Whoever loses a race gets HTTP 412
  and reads again.
- **other schemes**, or gs:// without that package: epath has no create-if-absent, so
  the lock is written and read back; a launch seconds after a live run's is refused as
  on a local disk, but two launches within the same second may both take it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import secrets
import socket
import threading
import time

from etils import epath

from noise_scale import run_files
from noise_scale.errors import UsageError

LOCK_NAME = run_files.LOCK
LEASE_SECONDS = 120.0  # minutes would leave a crashed run's workdir locked too long
TAKEOVER_SECONDS = 30.0  # a takeover takes milliseconds; a guard this old was left by a crash


class WorkdirBusy(UsageError):
    """Another run holds the workdir's lock; the message names it."""


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

    def __init__(self, workdir: str, lease_seconds: float = LEASE_SECONDS, store=None):
        path = run_files.path(workdir, LOCK_NAME)
        self.store = store or _store_for(path)
        self.lease_seconds = lease_seconds
        now = time.time()
        self.content = {"host": socket.gethostname(), "pid": os.getpid(), "started": now,
                        "refreshed": now, "lease_seconds": lease_seconds,
                        "token": secrets.token_hex(8)}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self) -> Lease:
        """Take the lock (over a stale one, with a warning); WorkdirBusy while it is live."""
        where = self.store.workdir
        for _ in range(3):  # a holder that vanishes between our read and our write: retry
            if self.store.create(json.dumps(self.content)):
                self._thread = threading.Thread(target=self._refresh_loop, daemon=True,
                                                name="workdir-lease")
                self._thread.start()
                return self
            holder = self.store.read()
            if holder is None:
                continue
            reason = stale_reason(holder)
            if not reason:
                raise WorkdirBusy(
                    f"{where} is in use by another run ({describe(holder)}): two runs on one "
                    "workdir would overwrite each other's checkpoints and records. Wait for it "
                    "to finish or stop it, or pass another --workdir. If that run is gone, "
                    f"delete {where}/{LOCK_NAME} (it expires by itself "
                    f"{float(holder.get('lease_seconds', LEASE_SECONDS)):.0f} s after its last "
                    "refresh); nothing was written.")
            logging.warning("taking over the lock of %s from %s: %s.", where, describe(holder),
                            reason)
            self.store.remove(holder)
        raise WorkdirBusy(f"could not take the lock of {where}: other launches keep taking "
                          "it. Check that only one run is started on this --workdir.")

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 4):
            self.content["refreshed"] = time.time()
            if not self.store.rewrite(json.dumps(self.content), self.content["token"]):
                current = self.store.read()
                logging.error("lost the lock of %s to %s; this run keeps going, but two runs "
                              "may now write there.", self.store.workdir,
                              describe(current) if current else "nobody (it was deleted)")
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.store.delete(self.content["token"])


def _store_for(path: epath.Path):
    text = str(path)
    if "://" not in text:
        return LocalStore(text)
    if text.startswith("gs://") and importlib.util.find_spec("google.cloud.storage"):
        try:
            return GcsStore(text)
        except Exception as e:  # noqa: BLE001 - e.g. no credentials for this client
            logging.warning("the workdir lock cannot use google-cloud-storage (%s: %s); "
                            "writing it through epath, which cannot refuse two launches in "
                            "the same second.", type(e).__name__, e)
    return EpathStore(path)


def _parse(text: str) -> dict:
    try:
        holder = json.loads(text)
        if isinstance(holder, dict):
            return holder
    except ValueError:
        pass
    logging.warning("the workdir's %s is unreadable; treating it as stale.", LOCK_NAME)
    return {"refreshed": 0, "host": "?", "pid": -1}  # unreadable: a lease long expired


class LocalStore:
    """The lock on a local (or NFS) disk: created by os.link, removed under a guard file."""

    def __init__(self, path: str):
        self.path, self.workdir = path, os.path.dirname(path)

    def create(self, text: str) -> bool:
        os.makedirs(self.workdir, exist_ok=True)
        tmp = f"{self.path}.{secrets.token_hex(8)}"
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.link(tmp, self.path)  # fails if it exists: the atomic create-if-absent
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def read(self) -> dict | None:
        try:
            with open(self.path) as f:
                return _parse(f.read())
        except FileNotFoundError:
            return None

    def remove(self, holder: dict) -> None:
        """Remove the stale lock ``holder``, unless another launch is taking it over now."""
        guard = f"{self.path}.takeover"
        with contextlib.suppress(FileNotFoundError):  # left by a launch that died taking over
            if time.time() - os.stat(guard).st_mtime > TAKEOVER_SECONDS:
                os.unlink(guard)
        try:
            os.close(os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            raise WorkdirBusy(f"another launch is taking over the stale lock of {self.workdir} "
                              "at this moment; nothing was written.") from None
        try:  # only the guard's holder removes a lock, and only the stale one it read
            if (self.read() or {}).get("token") == holder.get("token"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.unlink(guard)

    def rewrite(self, text: str, token: str) -> bool:
        if (self.read() or {}).get("token") != token:
            return False
        tmp = f"{self.path}.{token}"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)  # readers see the old lock or the new, never half
        return True

    def delete(self, token: str) -> None:
        if (self.read() or {}).get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _http_status(error: Exception) -> int | None:
    """412/404 of google.api_core's exceptions (``.code``), without importing them."""
    code = getattr(error, "code", None)
    return int(code) if isinstance(code, int) else None


class GcsStore:
    """The lock as a GCS object; every write conditional on its generation."""

    def __init__(self, path: str, bucket=None):
        name, _, self.name = path[len("gs://"):].partition("/")
        self.workdir = path.rsplit("/", 1)[0]
        if bucket is None:
            from google.cloud import storage

            bucket = storage.Client().bucket(name)
        self.bucket, self.generation = bucket, None

    def _write(self, text: str, generation: int) -> bool:
        blob = self.bucket.blob(self.name)
        try:
            blob.upload_from_string(text, if_generation_match=generation)
        except Exception as e:
            if _http_status(e) == 412:  # someone else's generation: lost the race
                return False
            raise
        self.generation = blob.generation
        return True

    def create(self, text: str) -> bool:
        return self._write(text, 0)  # generation 0: only if no object exists

    def read(self) -> dict | None:
        blob = self.bucket.get_blob(self.name)
        if blob is None:
            return None
        try:
            holder = _parse(blob.download_as_bytes(if_generation_match=blob.generation).decode())
        except Exception as e:
            if _http_status(e) in (404, 412):  # replaced or removed since: read again later
                return None
            raise
        return dict(holder, generation=blob.generation)

    def _delete(self, generation) -> None:
        try:
            self.bucket.blob(self.name).delete(if_generation_match=generation)
        except Exception as e:
            if _http_status(e) not in (404, 412):  # gone, or no longer that generation
                raise

    def remove(self, holder: dict) -> None:
        self._delete(holder.get("generation"))

    def rewrite(self, text: str, token: str) -> bool:
        return self._write(text, self.generation)

    def delete(self, token: str) -> None:
        self._delete(self.generation)


class EpathStore:
    """Any other scheme: written and read back through epath (no create-if-absent)."""

    def __init__(self, path: epath.Path):
        self.path, self.workdir = path, str(path.parent)

    def create(self, text: str) -> bool:
        if self.path.exists():
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(text)
        return (self.read() or {}).get("token") == json.loads(text)["token"]

    def read(self) -> dict | None:
        try:
            return _parse(self.path.read_text())
        except FileNotFoundError:
            return None

    def remove(self, holder: dict) -> None:
        self.path.unlink(missing_ok=True)

    def rewrite(self, text: str, token: str) -> bool:
        if (self.read() or {}).get("token") != token:
            return False
        self.path.write_text(text)
        return True

    def delete(self, token: str) -> None:
        if (self.read() or {}).get("token") == token:
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
