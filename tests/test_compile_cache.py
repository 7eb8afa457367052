"""The compile cache: this user's, one directory per run, never the workdir's.

conftest puts ``$XDG_CACHE_HOME`` in the session's temporary directory. A run that neither
reads nor writes entries planted in its workdir, and reads its own back on a resume:
tests/test_precompile.py.
"""

import os

import pytest

from noise_scale.errors import UsageError
from noise_scale.train import compile_cache
from tests.helpers import small_config


def test_each_run_has_its_own_private_directory_outside_the_workdir(tmp_path):
    config = small_config()
    root = compile_cache.user_root()
    here = compile_cache.cache_dir(config, str(tmp_path / "a"), "d1")
    assert os.path.dirname(here) == root and not here.startswith(str(tmp_path))
    bucket = compile_cache.cache_dir(config, "gs://shared/run", "d1")
    assert os.path.dirname(bucket) == root  # a shared bucket holds no code this run runs
    # a resume (same workdir, same experiment) reads its own entries back; no one else does
    assert compile_cache.cache_dir(config, str(tmp_path / "a"), "d1") == here
    assert compile_cache.cache_dir(config, str(tmp_path / "b"), "d1") != here
    assert compile_cache.cache_dir(config, str(tmp_path / "a"), "d2") != here
    config.compilation_cache_dir = str(tmp_path / "chosen")
    assert compile_cache.cache_dir(config, str(tmp_path / "a"), "d1") == str(tmp_path / "chosen")
    config.compilation_cache_dir = "off"
    assert compile_cache.cache_dir(config, str(tmp_path / "a"), "d1") is None


def test_a_cache_root_others_may_write_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = compile_cache.user_root()
    os.makedirs(root)
    os.chmod(root, 0o777)
    with pytest.raises(UsageError, match=r"is not private: others may write it \(mode drwxrwxrwx"):
        compile_cache.enable(small_config(), str(tmp_path / "run"), "d1")
    os.chmod(root, 0o755)
    compile_cache.check_private(root)
