"""An installed wheel, with no clone beside it, runs a shipped config from any directory.

What a ``pip install 'noise_scale[tpu] @ git+...'`` on a TPU VM gets: the package and
nothing else of the repository. The wheel is built from a copy of the sources (the build
leaves nothing in the checkout), installed with ``--target`` into a temporary directory,
and run with ``python -S`` from ``/``: without the site module no ``.pth`` file is read,
so the editable install of the checkout cannot supply ``noise_scale``; the dependencies
come from this interpreter's site-packages, named on ``PYTHONPATH`` after the target.
"""

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pip(*args, cwd=None):
    r = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                       cwd=cwd, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def build_and_install(tmp_path) -> str:
    """The wheel of a copy of the sources, installed into a directory; its path."""
    src, dist, target = tmp_path / "src", tmp_path / "dist", tmp_path / "target"
    shutil.copytree(os.path.join(ROOT, "noise_scale"), src / "noise_scale",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    _pip("wheel", "--no-deps", "-q", "-w", str(dist), str(src))
    (wheel,) = dist.iterdir()
    _pip("install", "--no-deps", "-q", "--target", str(target), str(wheel))
    return str(target)


def run_installed(target: str, *args: str) -> subprocess.CompletedProcess:
    """``python -S -s ARGS`` from ``/`` with only the target and the dependencies importable."""
    dependencies = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join([target, *dependencies])
    return subprocess.run([sys.executable, "-S", "-s", *args], capture_output=True, text=True,
                          cwd="/", env=env, timeout=300)


@pytest.mark.slow  # an isolated build (pip fetches setuptools) and three commands: 8-30 s
def test_installed_wheel_prints_a_shipped_configs_schedule_from_the_root_directory(tmp_path):
    target = build_and_install(tmp_path)
    where = run_installed(target, "-c", "import noise_scale, noise_scale.config_lib as c; "
                          "print(list(noise_scale.__path__), c.CONFIG_DIR)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [f"['{target}/noise_scale']", f"{target}/noise_scale/configs"]
    for spec in ("mnist1d:increase_batch", "configs/mnist1d.py:increase_batch"):
        r = run_installed(target, "-m", "noise_scale.schedule", f"--config={spec}")
        assert r.returncode == 0, r.stderr
        assert "increase_batch: N = 40,000" in r.stdout
        assert "total: 40 epochs, 18,480 updates, 4 batch size(s)" in r.stdout
    derived = run_installed(target, "-m", "noise_scale.schedule",
                            "--config=mnist1d_cosine:cosine_increase_batch")
    assert derived.returncode == 0 and "29,367 updates" in derived.stdout, derived.stderr
