"""One run per workdir: the lease file, its refresh, and taking over a dead run's lock."""

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from noise_scale.cluster import workdir_lock
from noise_scale.cluster.workdir_lock import Lease, WorkdirBusy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def race(make_lease, launches: int = 8) -> list:
    """``launches`` threads take a fresh lease at once; exactly one must win. Returns [winner]."""
    won, refused = [], []

    def launch():
        try:
            won.append(make_lease().take())
        except WorkdirBusy:
            refused.append(1)

    threads = [threading.Thread(target=launch) for _ in range(launches)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(won), len(refused)) == (1, launches - 1)
    return won

def write_lock(workdir, **fields):
    now = time.time()
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": now - 60,
              "refreshed": now, "lease_seconds": 120.0, "token": "0123456789abcdef", **fields}
    (workdir / "run.lock").write_text(json.dumps(holder))
    return holder


def wait_for(condition, seconds=10.0):
    """Poll until ``condition()`` (a loaded machine may delay a thread by seconds)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_lock_names_host_pid_and_times_and_is_removed_on_release(tmp_path):
    lease = Lease(str(tmp_path / "w")).take()
    held = json.loads((tmp_path / "w" / "run.lock").read_text())
    assert (held["host"], held["pid"]) == (socket.gethostname(), os.getpid())
    assert time.time() - 5 < held["started"] <= held["refreshed"] <= time.time()
    lease.release()
    assert not (tmp_path / "w" / "run.lock").exists()
    Lease(str(tmp_path / "w")).take().release()  # free again


def test_a_second_take_on_a_live_lock_is_refused_naming_the_holder(tmp_path):
    lease = Lease(str(tmp_path)).take()
    before = (tmp_path / "run.lock").read_text()
    with pytest.raises(WorkdirBusy, match=f"pid {os.getpid()} on host {socket.gethostname()}"):
        Lease(str(tmp_path)).take()
    assert (tmp_path / "run.lock").read_text() == before  # the holder's lock untouched
    lease.release()


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    write_lock(tmp_path, pid=dead_pid())  # refreshed just now: only the pid says it is dead
    with caplog.at_level(logging.WARNING):
        lease = Lease(str(tmp_path)).take()
    assert "no longer exists on this host" in caplog.text
    assert json.loads((tmp_path / "run.lock").read_text())["token"] == lease.content["token"]
    lease.release()


@pytest.mark.parametrize("seconds_ago,taken", [(200, True), (30, False)])
def test_another_hosts_lock_is_stale_only_once_its_lease_expired(tmp_path, seconds_ago, taken):
    write_lock(tmp_path, host="tpu-worker-7", pid=1, refreshed=time.time() - seconds_ago)
    if taken:
        Lease(str(tmp_path)).take().release()
    else:
        with pytest.raises(WorkdirBusy, match="on host tpu-worker-7.*refreshed 30 s ago"):
            Lease(str(tmp_path)).take()


def test_the_holder_refreshes_its_lease(tmp_path):
    lease = Lease(str(tmp_path), lease_seconds=0.4).take()
    first = json.loads((tmp_path / "run.lock").read_text())["refreshed"]
    assert wait_for(lambda: json.loads((tmp_path / "run.lock").read_text())["refreshed"] > first)
    lease.release()


def test_of_many_launches_taking_over_one_stale_lock_exactly_one_wins(tmp_path):
    write_lock(tmp_path, host="gone", refreshed=0)
    won = race(lambda: Lease(str(tmp_path)))
    assert json.loads((tmp_path / "run.lock").read_text())["token"] == won[0].content["token"]
    won[0].release()
    assert sorted(os.listdir(tmp_path)) == []  # no temporary or set-aside file left


def test_a_second_main_on_a_live_workdir_exits_2_touching_nothing(tmp_path):
    """This test process plays the live run: its pid, on this host, refreshed just now."""
    holder = write_lock(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_"))}
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "noise_scale.main", "--config=configs/mnist1d.py:increase_batch",
         f"--workdir={tmp_path}", f"--config.data_dir={tmp_path / 'data'}"],
        cwd=ROOT, env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
        timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"in use by another run (pid {holder['pid']} on host {holder['host']}" in r.stderr
    assert "Traceback" not in r.stderr
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert time.monotonic() - t0 < 60  # seconds: starting Python and JAX, no training


class HttpError(Exception):
    def __init__(self, code):
        super().__init__(f"HTTP {code}")
        self.code = code


class FakeBucket:
    """GCS's semantics for one bucket: objects with generations, writes conditional on them."""

    def __init__(self):
        self.objects, self.next_generation, self.mutex = {}, 1, threading.Lock()

    def _check(self, name, if_generation_match):
        current = self.objects.get(name, (None, 0))[1]
        if if_generation_match is not None and if_generation_match != current:
            raise HttpError(412 if name in self.objects or if_generation_match == 0 else 404)

    def get_blob(self, name):
        with self.mutex:
            return FakeBlob(self, name, self.objects[name][1]) if name in self.objects else None

    def blob(self, name):
        return FakeBlob(self, name, None)


class FakeBlob:
    def __init__(self, bucket, name, generation):
        self.bucket, self.name, self.generation = bucket, name, generation

    def upload_from_string(self, text, if_generation_match=None):
        with self.bucket.mutex:
            self.bucket._check(self.name, if_generation_match)
            self.generation, self.bucket.next_generation = (self.bucket.next_generation,
                                                            self.bucket.next_generation + 1)
            self.bucket.objects[self.name] = (text.encode(), self.generation)

    def download_as_bytes(self, if_generation_match=None):
        with self.bucket.mutex:
            self.bucket._check(self.name, if_generation_match)
            return self.bucket.objects[self.name][0]

    def delete(self, if_generation_match=None):
        with self.bucket.mutex:
            if self.name not in self.bucket.objects:
                raise HttpError(404)
            self.bucket._check(self.name, if_generation_match)
            del self.bucket.objects[self.name]


def gcs_lease(bucket, lease_seconds=120.0):
    store = workdir_lock.GcsStore("gs://b/runs/a/run.lock", bucket=bucket)
    return Lease("gs://b/runs/a", lease_seconds, store=store)


def test_on_gcs_a_live_lock_refuses_and_a_release_frees_it():
    bucket = FakeBucket()
    first = gcs_lease(bucket).take()
    with pytest.raises(WorkdirBusy, match=f"gs://b/runs/a is in use .*pid {os.getpid()}"):
        gcs_lease(bucket).take()
    first.release()
    assert bucket.objects == {}
    gcs_lease(bucket).take().release()


def test_on_gcs_a_refresh_writes_a_new_generation_and_notices_a_lost_lock(caplog):
    bucket = FakeBucket()
    lease = gcs_lease(bucket, lease_seconds=0.2).take()
    created = bucket.objects["runs/a/run.lock"][1]
    assert wait_for(lambda: bucket.objects["runs/a/run.lock"][1] > created)
    with caplog.at_level(logging.ERROR):
        bucket.objects["runs/a/run.lock"] = (b'{"host": "x", "pid": 1, "refreshed": 0}', 99)
        assert wait_for(lambda: "lost the lock" in caplog.text)
    assert "lost the lock of gs://b/runs/a to pid 1 on host x" in caplog.text
    lease.release()
    assert bucket.objects["runs/a/run.lock"][1] == 99  # not ours: left in place


def test_on_gcs_of_many_launches_taking_over_one_stale_lock_exactly_one_wins():
    bucket = FakeBucket()
    bucket.objects["runs/a/run.lock"] = (json.dumps({"host": "gone", "pid": 1, "refreshed": 0,
                                                     "token": "old"}).encode(), 7)
    won = race(lambda: gcs_lease(bucket))
    held = json.loads(bucket.objects["runs/a/run.lock"][0])
    assert held["token"] == won[0].content["token"]
    won[0].release()
