"""The MNIST-1D cache is derived data: a damaged one is generated again, with a warning."""

import io
import logging
import os

import numpy as np
import pytest

from noise_scale.data import mnist1d

N = 1000


@pytest.fixture(scope="module")
def good_cache(tmp_path_factory):
    """A real cache file's bytes (generating 1,000 examples takes a second)."""
    folder = tmp_path_factory.mktemp("mnist1d")
    mnist1d.arrays(N, str(folder))
    (path,) = folder.iterdir()
    return path.name, path.read_bytes()


def damage(kind: str, good: bytes, path) -> None:
    if kind == "cut short":  # a zip without its directory: zipfile.BadZipFile
        path.write_bytes(good[: len(good) // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x93NUMPY garbage" * 10)
    elif kind == "other arrays":
        np.savez(path, x=np.zeros((N, 40), np.float32))
    elif kind == "a folder":
        path.mkdir()


@pytest.mark.parametrize("kind", ["cut short", "garbage", "other arrays", "a folder"])
def test_a_damaged_cache_is_generated_again_with_a_warning(tmp_path, good_cache, caplog, kind):
    """Cut short it ended in a BadZipFile traceback; with other arrays, in a KeyError."""
    name, good = good_cache
    damage(kind, good, tmp_path / name)
    with caplog.at_level(logging.WARNING):
        data = mnist1d.arrays(N, str(tmp_path))
    assert f"the MNIST-1D cache {tmp_path / name} is " in caplog.text
    assert "generating the data again" in caplog.text
    with np.load(io.BytesIO(good)) as f:
        assert all(np.array_equal(data[k], f[k]) for k in f.files)
    if kind != "a folder":  # replaced: the next run reads it, quietly
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = mnist1d.arrays(N, str(tmp_path))
        assert caplog.text == "" and np.array_equal(again["x"], data["x"])


def test_a_whole_cache_is_read_without_a_word(tmp_path, good_cache, caplog):
    name, good = good_cache
    (tmp_path / name).write_bytes(good)
    os.utime(tmp_path / name, (0, 0))
    with caplog.at_level(logging.WARNING):
        data = mnist1d.arrays(N, str(tmp_path))
    assert caplog.text == "" and data["x"].shape == (N, 40)
    assert os.stat(tmp_path / name).st_mtime == 0  # read, not written again
