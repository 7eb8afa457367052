"""A dataset and a model of the user's own, by import path, through the real commands.

The test writes both into a directory outside the package (as a user would keep
them in their own repository) and runs ``python -m noise_scale.main`` and
``python -m noise_scale.reproduce`` on them in subprocesses, with that directory
on ``PYTHONPATH`` and nothing else changed.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from noise_scale.config import validation
from noise_scale.errors import ConfigError
from tests.helpers import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

USER_MODULE = textwrap.dedent('''
    """A user's own data and network, outside the noise_scale package."""
    import flax.linen as nn
    import numpy as np

    from noise_scale.data import ArraySource, Dataset


    def load(config):
        rng = np.random.default_rng(0)
        w = rng.normal(size=(12, 3))
        def split(n, seed):
            x = np.random.default_rng(seed).normal(size=(n, 12)).astype(np.float32)
            return ArraySource({"input": x, "label": np.argmax(x @ w, -1).astype(np.int32)})
        return Dataset(train=split(config.dataset_size, 1), eval=split(200, 2), num_classes=3,
                       input_shape=(12,), name="blobs")


    class Net(nn.Module):
        num_classes: int

        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(self.num_classes)(nn.relu(nn.Dense(16)(x)))
''')

OVERRIDES = ["--config.dataset=user_blobs:load", "--config.model=user_blobs:Net",
             "--config.dataset_size=800", "--config.ghost_batch_size=0",
             "--config.schedule.batch_size=16", "--config.schedule.total_epochs=2",
             "--config.schedule.boundaries=(1.0,)", "--config.eval_batch_size=200"]


@pytest.fixture
def user_dir(tmp_path):
    d = tmp_path / "user_code"
    d.mkdir()
    (d / "user_blobs.py").write_text(USER_MODULE)
    return d


def run(user_dir, module, *args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{user_dir}"
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_own_dataset_and_model_train_through_main_and_resume(tmp_path, user_dir):
    workdir = tmp_path / "run"
    args = ["--config=configs/mnist1d.py:increase_batch", *OVERRIDES, f"--workdir={workdir}"]
    r = run(user_dir, "noise_scale.main", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["batch_size"] for r in records] == [16, 80]
    assert records[-1]["test_examples"] == 200 and records[-1]["test_accuracy"] > 0.6
    # Rerunning the command resumes from the final checkpoint: nothing left to train.
    again = run(user_dir, "noise_scale.main", *args)
    assert again.returncode == 0 and "resuming at examples_seen=1600" in again.stderr
    # A path that does not resolve: exit 2, one line naming the field and the fix.
    bad = run(user_dir, "noise_scale.main", *args[:1], *OVERRIDES, "--config.model=user_blobs:Nett",
              f"--workdir={tmp_path / 'bad'}")
    lines = [x for x in bad.stderr.splitlines() if x.startswith("error:")]
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr[-2000:]
    assert "config.model='user_blobs:Nett'" in lines[0] and "Net" in lines[0]
    assert not (tmp_path / "bad").exists()


def test_labels_outside_the_classes_exit_2_before_anything_is_written(tmp_path, user_dir):
    """Labels -1, 0, 1 for num_classes=3 trained silently (a -1 one-hot is all zeros)."""
    (user_dir / "user_shifted.py").write_text(
        "from user_blobs import Net, load as _load\n\n\n"
        "def load(config):\n"
        "    data = _load(config)\n"
        "    data.train.arrays['label'] = data.train.arrays['label'] - 1\n"
        "    return data\n")
    workdir = tmp_path / "run"
    r = run(user_dir, "noise_scale.main", "--config=configs/mnist1d.py:increase_batch",
            *OVERRIDES, "--config.dataset=user_shifted:load", f"--workdir={workdir}")
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "training split's first 16 examples include label -1" in lines[0]
    assert "Traceback" not in r.stderr
    assert not any((workdir / name).exists()
                   for name in ("config.json", "schedule.json", "metrics.jsonl", "checkpoints"))


@pytest.mark.slow
def test_own_dataset_and_model_through_reproduce(tmp_path, user_dir):
    r = run(user_dir, "noise_scale.reproduce", "--config=configs/mnist1d.py", *OVERRIDES,
            "--variants=decay_lr,increase_batch", "--seeds=1", f"--workdir={tmp_path}")
    assert r.returncode == 0, r.stderr[-3000:]
    for variant in ("decay_lr", "increase_batch"):
        config = json.loads(next(tmp_path.rglob(f"{variant}*/**/config.json")).read_text())
        assert config["dataset"] == "user_blobs:load" and config["model"] == "user_blobs:Net"


@pytest.mark.parametrize("field,value,needles", [
    ("dataset", "no_such_pkg.data:load", ["module 'no_such_pkg.data' cannot be imported",
                                         "PYTHONPATH"]),
    ("dataset", "json:no_such_function", ["module 'json' has no attribute 'no_such_function'",
                                          "--config.dataset=json:NAME"]),
    ("model", "json:__version__", ["'__version__' is a str, not a flax module class"]),
    ("model", "no_such_pkg:Net", ["module 'no_such_pkg' cannot be imported"]),
])
def test_an_import_path_that_does_not_resolve_is_refused(field, value, needles):
    config = small_config()
    config[field] = value
    with pytest.raises(ConfigError) as info:
        validation.validate_config(config)
    msg = str(info.value)
    assert msg.startswith(f"config.{field}={value!r} is invalid") and "Fix:" in msg
    for needle in needles:
        assert needle in msg, msg
