"""The path layer: a gs:// workdir's files (checkpoints included) stay in the bucket; bad
schemes and planted links are refused before anything is written; files are replaced whole.

No test reaches a bucket: ``gs://`` is served by ``BucketOnDisk``, an epath backend put in
place of fsspec's that keeps ``gs://b/x`` in ``<tmp>/bucket/b/x``.
"""

import os

import pytest
from etils.epath import backend, gpath

from noise_scale import metrics as metrics_lib
from noise_scale import run_files
from noise_scale.config import validation
from noise_scale.errors import UsageError
from noise_scale.train import checkpoint, identity
from tests.helpers import small_config


class BucketOnDisk(backend._OsPathBackend):
    """epath's gs:// backend, kept in a local directory (``root``/bucket/path): each call
    goes to epath's own local backend with the path translated."""

    def __init__(self, root):
        self.root = str(root)

    def local(self, p):
        p = os.fspath(p)
        assert p.startswith("gs://"), p  # a local path here means the URL was lost
        return os.path.join(self.root, p[len("gs://"):])

    def url(self, p):
        return "gs://" + os.path.relpath(p, self.root)

    def glob(self, path):
        return [self.url(p) for p in backend.os_backend.glob(self.local(path))]

    def walk(self, top, **kwargs):
        for d, dirs, files in backend.os_backend.walk(self.local(top), **kwargs):
            yield self.url(d), dirs, files


def _on_one_path(name):
    def method(self, path, *args, **kwargs):
        return getattr(backend.os_backend, name)(self.local(path), *args, **kwargs)
    return method


def _on_two_paths(name):
    def method(self, path, dst, *args, **kwargs):
        return getattr(backend.os_backend, name)(self.local(path), self.local(dst), *args,
                                                 **kwargs)
    return method


for _name in ("open", "exists", "isdir", "listdir", "makedirs", "mkdir", "rmtree", "remove",
              "stat"):
    setattr(BucketOnDisk, _name, _on_one_path(_name))
for _name in ("rename", "replace", "copy"):
    setattr(BucketOnDisk, _name, _on_two_paths(_name))


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """gs:// served from ``tmp_path/bucket``; the working directory is ``tmp_path/cwd``."""
    from orbax.checkpoint._src.path import gcs_utils

    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "gs", BucketOnDisk(tmp_path / "bucket"))
    # orbax asks the real bucket (google-cloud-storage) for its layout; the fake has none
    monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path / "bucket"


# ------------------------------------------------------------------ URLs stay URLs
def test_a_gs_workdir_keeps_its_checkpoints_in_the_bucket(bucket, tmp_path):
    ckpt = checkpoint.Checkpointer("gs://b/run", {"config": {}})  # orbax's real manager
    try:
        assert ckpt.directory == "gs://b/run/checkpoints"
        assert ckpt.steps() == []
    finally:
        ckpt.close()
    assert (bucket / "b" / "run" / "checkpoints").is_dir()
    assert os.listdir(tmp_path / "cwd") == []  # not <cwd>/gs:/b/run/checkpoints


def test_every_run_file_of_a_gs_workdir_is_written_in_the_bucket(bucket, tmp_path):
    workdir = "gs://b/run/"
    assert {str(run_files.path(workdir, name)) for name in run_files.RUN_FILES} == {
        f"gs://b/run/{name}" for name in run_files.RUN_FILES}
    writer = metrics_lib.MetricWriter(workdir, tensorboard=False)
    writer.write({"examples_seen": 100, "train_loss": 0.5})
    identity.write(workdir, {"config": {"seed": 1}})
    assert metrics_lib.read_metrics(workdir) == [{"examples_seen": 100, "train_loss": 0.5}]
    assert sorted(os.listdir(bucket / "b" / "run")) == ["fingerprint.json", "metrics.jsonl"]
    assert os.listdir(tmp_path / "cwd") == []


def test_a_local_workdir_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(run_files.path("runs/a", "checkpoints")) == f"{tmp_path}/runs/a/checkpoints"


# ------------------------------------------------------------ refused before writing
@pytest.mark.parametrize("workdir,fix", [
    ("file:///data/run", "--workdir=/data/run"),
    ("memory://run", "gs://, s3://, az://, hf:// URL"),
    ("gcs://bucket/run", "gs://, s3://, az://, hf:// URL"),
])
def test_a_scheme_epath_cannot_open_is_refused_writing_nothing(tmp_path, monkeypatch, workdir,
                                                                fix):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as e:
        validation.validate_paths(small_config(), workdir)
    message = str(e.value)
    assert message.startswith(f"--workdir={workdir}: the scheme ") and fix in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "checkpoints", "run.lock"])
def test_a_link_where_a_run_file_belongs_is_refused(tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_text("someone else's file")
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / name).symlink_to(victim)
    with pytest.raises(UsageError) as e:
        validation.validate_paths(small_config(), str(workdir))
    assert f"{workdir / name} is a symbolic link (to {victim})" in str(e.value)
    assert "remove the link" in str(e.value)
    assert victim.read_text() == "someone else's file"


def test_files_are_replaced_whole_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("someone else's file")
    workdir = tmp_path / "run"
    workdir.mkdir()
    # planted where the old code wrote its temporary file, and at the target itself
    (workdir / "metrics.jsonl.tmp").symlink_to(victim)
    (workdir / "config.json").symlink_to(victim)
    writer = metrics_lib.MetricWriter(str(workdir), tensorboard=False)
    writer.write({"examples_seen": 1})
    run_files.write_text(run_files.path(str(workdir), "config.json"), "{}")
    assert victim.read_text() == "someone else's file"
    assert (workdir / "metrics.jsonl").read_text() == '{"examples_seen": 1}\n'
    assert not (workdir / "config.json").is_symlink()
    assert (workdir / "config.json").read_text() == "{}"
    assert sorted(os.listdir(workdir)) == ["config.json", "metrics.jsonl", "metrics.jsonl.tmp"]
