"""noise_scale.config.storage: a gs:// (or s3://) workdir or data_dir is checked before JAX starts.

No test reaches a bucket: a missing package is made missing (``storage.importable``
answers for it, or ``sys.modules[name] = None`` in a subprocess), and the bucket is a
fake filesystem object put in place of ``storage.open_filesystem``.
"""

import os
import subprocess
import sys
import time

import pytest

from noise_scale.config import storage
from noise_scale.errors import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def no_bucket_remembered(monkeypatch):
    monkeypatch.setattr(storage, "_REACHED", set())


def installed(monkeypatch, *modules):
    """Only ``modules`` can be imported, as far as the preflight can tell."""
    monkeypatch.setattr(storage, "importable", lambda name: name in modules)


class FakeBucket:
    """A filesystem whose ``info`` answers as told and records what it was asked."""

    def __init__(self, answer=None, delay=0.0):
        self.answer, self.delay, self.asked = answer, delay, []

    def info(self, path):
        self.asked.append(path)
        time.sleep(self.delay)
        if self.answer is not None:
            raise self.answer
        return {"name": path, "type": "directory"}


def with_bucket(monkeypatch, bucket: FakeBucket) -> FakeBucket:
    monkeypatch.setattr(storage, "open_filesystem", lambda kind: bucket)
    return bucket


def refused(*args, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        storage.preflight(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- packages
def test_gs_workdir_without_gcsfs_names_it_and_the_pip_command(monkeypatch):
    installed(monkeypatch, "google.cloud.storage")
    message = refused("gs://bucket/run", "")
    assert message == (
        "--workdir=gs://bucket/run is on gs://, which needs the package gcsfs (not installed) "
        "to be read and written. Fix: pip install gcsfs, or pip install 'noise_scale[tpu]' "
        "(or [cuda]), which has both; or use a local path.")


def test_gs_workdir_without_google_cloud_storage_names_it_for_tensorboard(monkeypatch):
    installed(monkeypatch, "gcsfs")
    with_bucket(monkeypatch, FakeBucket())
    message = refused("gs://bucket/run", "")
    assert message.startswith("--workdir=gs://bucket/run is on gs://, where TensorBoard's event "
                              "files are written through the package google-cloud-storage (not "
                              "installed). Fix: pip install google-cloud-storage, or pip install "
                              "'noise_scale[tpu]'")
    storage.preflight("gs://bucket/run", "", tensorboard=False)  # no TensorBoard: no need


def test_gs_data_dir_without_gcsfs_names_the_field(monkeypatch):
    installed(monkeypatch, "google.cloud.storage")
    message = refused("/tmp/run", "gs://bucket/tensorflow_datasets")
    assert message.startswith("config.data_dir='gs://bucket/tensorflow_datasets' is on gs://, "
                              "which needs the package gcsfs (not installed)")


def test_with_tensorflow_gs_needs_no_gcsfs_and_no_bucket_call(monkeypatch):
    """epath opens gs:// with tf.io.gfile then; the reachability call would import TF."""
    installed(monkeypatch, "tensorflow", "google.cloud.storage")
    bucket = with_bucket(monkeypatch, FakeBucket(PermissionError("never asked")))
    storage.preflight("gs://bucket/run", "gs://bucket/data")
    assert bucket.asked == []


def test_s3_needs_s3fs_and_boto3(monkeypatch):
    installed(monkeypatch, "boto3", "tensorflow")  # TensorFlow does not open s3:// here
    assert "needs the package s3fs (not installed)" in refused("s3://b/run", "")
    assert "Fix: pip install s3fs; or use a local path." in refused("s3://b/run", "")
    installed(monkeypatch, "s3fs")
    with_bucket(monkeypatch, FakeBucket())
    assert "the package boto3 (not installed). Fix: pip install boto3;" in refused(
        "s3://b/run", "")


def test_local_paths_and_other_schemes_are_not_looked_at(monkeypatch):
    installed(monkeypatch)  # nothing at all
    with_bucket(monkeypatch, FakeBucket(PermissionError("never asked")))
    for workdir, data_dir in ((None, ""), ("/tmp/run", "/data"), ("az://c/run", "hf://d/x")):
        storage.preflight(workdir, data_dir)


def test_importable_does_not_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)  # what a failed import leaves
    assert not storage.importable("gcsfs")
    assert not storage.importable("no_such_package.sub")
    assert storage.importable("json")


# ---------------------------------------------------------------- reachability
def test_a_reachable_bucket_is_asked_once_per_process(monkeypatch):
    installed(monkeypatch, "gcsfs", "google.cloud.storage")
    bucket = with_bucket(monkeypatch, FakeBucket())
    storage.preflight("gs://bucket/runs/a", "gs://bucket/tensorflow_datasets")
    storage.preflight("gs://bucket/runs/b", "")
    assert bucket.asked == ["gs://bucket"]


def test_a_missing_bucket_is_named(monkeypatch):
    installed(monkeypatch, "gcsfs", "google.cloud.storage")
    with_bucket(monkeypatch, FakeBucket(FileNotFoundError("bucket")))
    assert refused("gs://bucket/run", "") == (
        "--workdir=gs://bucket/run: the bucket gs://bucket does not exist or this account "
        "cannot see it. Fix: correct the bucket's name, create it, or grant access to it "
        "(gcloud auth application-default login, or the VM's service account).")


def test_a_refused_bucket_says_what_it_said_in_one_line(monkeypatch):
    installed(monkeypatch, "gcsfs", "google.cloud.storage")
    with_bucket(monkeypatch, FakeBucket(PermissionError("403 Forbidden\nlong body")))
    message = refused("/tmp/run", "gs://data/tfds")
    assert message.startswith("config.data_dir='gs://data/tfds': the bucket gs://data cannot be "
                              "reached (PermissionError: 403 Forbidden). Fix: check the "
                              "credentials")


def test_a_bucket_that_does_not_answer_is_given_up_on_after_the_timeout(monkeypatch):
    installed(monkeypatch, "gcsfs", "google.cloud.storage")
    monkeypatch.setattr(storage, "TIMEOUT_S", 0.2)
    with_bucket(monkeypatch, FakeBucket(delay=5.0))
    start = time.monotonic()
    message = refused("gs://slow/run", "")
    assert time.monotonic() - start < 4.0  # not the 5 s answer; slack for a loaded CI
    assert message.startswith("--workdir=gs://slow/run: the bucket gs://slow did not answer "
                              "within 0.2 s. Fix: check the network and the credentials")


# ---------------------------------------------------------------- the commands
RUN_WITHOUT_GCSFS = """
import runpy, sys
sys.modules["gcsfs"] = None  # not installed, whatever this environment has
sys.modules["tensorflow"] = None
sys.argv = {argv!r}
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as e:
    code = e.code
print(code, "jax" in sys.modules)
"""


@pytest.mark.parametrize("argv", [
    ["noise_scale.main", "--config=mnist1d:increase_batch", "--workdir=gs://bucket/run"],
    ["noise_scale.main", "--config=mnist1d:increase_batch", "--workdir=run",
     "--config.data_dir=gs://bucket/cache"],
    ["noise_scale.reproduce", "--config=mnist1d", "--workdir=gs://bucket/repro"],
], ids=["main-workdir", "main-data_dir", "reproduce-workdir"])
def test_commands_exit_2_naming_gcsfs_before_jax_and_write_nothing(tmp_path, argv):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([sys.executable, "-c", RUN_WITHOUT_GCSFS.format(argv=argv)],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert r.stdout.split() == ["2", "False"], (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("error: ") and "needs the package gcsfs (not installed)" in r.stderr
    assert "pip install gcsfs" in r.stderr
    assert list(tmp_path.iterdir()) == []  # no run/, no local gs:/ directory
