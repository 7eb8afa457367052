"""Preemption: killed runs resume bit-exactly; damaged, foreign and diverged runs are handled."""

import glob
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from noise_scale import metrics as metrics_lib
from noise_scale import train
from noise_scale.data import ArraySource, Dataset
from tests.helpers import comparable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = [  # tests/helpers.small_config as command-line flags
    "--config.dataset_size=4000", "--config.eval_batch_size=500", "--config.log_every_steps=10",
    "--config.ghost_batch_size=4", "--config.schedule.total_epochs=4.0",
    "--config.schedule.boundaries=(1.0,2.0,3.0)", "--config.checkpoint_every_epochs=0.5",
]


def run_main(workdir, data_dir, *extra, sigterm_at=None):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    env.pop("NOISE_SCALE_SIGTERM_AT", None)
    if sigterm_at is not None:
        env["NOISE_SCALE_SIGTERM_AT"] = str(sigterm_at)
    cmd = [sys.executable, "-m", "noise_scale.main", "--config=configs/mnist1d.py:increase_batch",
           f"--workdir={workdir}", f"--config.data_dir={data_dir}", *OVERRIDES, *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mnist1d"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The uninterrupted run, in a subprocess exactly like the interrupted ones."""
    workdir = tmp_path_factory.mktemp("reference")
    r = run_main(workdir, data_dir)
    assert r.returncode == 0, r.stderr
    return metrics_lib.read_metrics(str(workdir))


def checkpoint_steps(workdir):
    return sorted(int(os.path.basename(p)) for p in glob.glob(f"{workdir}/checkpoints/[0-9]*"))


@pytest.mark.parametrize("kill_at", [6016, 4000], ids=["mid-stage", "stage-boundary"])
def test_sigterm_then_resume_is_bit_identical(tmp_path, data_dir, reference, kill_at):
    # 6016 = 188 steps of 32: in the middle of stage 1 (B = 160 from 4,000 examples on);
    # 4000 = the last step of stage 0, right at the boundary.
    r = run_main(tmp_path, data_dir, sigterm_at=kill_at)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    assert "SIGTERM received" in r.stderr and "Traceback" not in r.stderr
    stop = checkpoint_steps(tmp_path)[-1]
    assert kill_at <= stop < kill_at + 160
    partial = metrics_lib.read_metrics(str(tmp_path))
    assert all(rec["examples_seen"] <= stop for rec in partial)

    r = run_main(tmp_path, data_dir)
    assert r.returncode == 0, r.stderr
    resumed = metrics_lib.read_metrics(str(tmp_path))
    assert comparable(resumed) == comparable(reference)
    # ... the measured noise scale's averages included: they travel in the state
    assert all(rec["noise_scale_measured"] > 0 for rec in reference)
    # The count is honest: killed mid-stage, the stage in progress is compiled once in each
    # process (its programs once more than in the uninterrupted run); killed at a
    # boundary, nothing twice. Two programs per batch size: the plain and measuring steps.
    again = 2 if kill_at == 6016 else 0
    assert resumed[-1]["compiles"] == reference[-1]["compiles"] + again == 8 + again


def test_a_checkpoint_whose_clock_disagrees_is_refused(tmp_path, data_dir):
    """The clock is the optimizer state's: a checkpoint numbered otherwise is not trusted."""
    r = run_main(tmp_path, data_dir, sigterm_at=6016)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    newest = checkpoint_steps(tmp_path)[-1]
    os.rename(f"{tmp_path}/checkpoints/{newest}", f"{tmp_path}/checkpoints/{newest + 160}")
    r = run_main(tmp_path, data_dir)
    assert r.returncode == 2, r.stderr
    assert f"examples_seen={newest + 160:,}" in r.stderr and f"clock reads {newest:,}" in r.stderr
    assert "Traceback" not in r.stderr


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, data_dir, reference):
    r = run_main(tmp_path, data_dir, sigterm_at=10_000)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    steps = checkpoint_steps(tmp_path)
    assert len(steps) == 2  # keep_checkpoints = 2
    for path in glob.glob(f"{tmp_path}/checkpoints/{steps[-1]}/state/**/*", recursive=True):
        if os.path.isfile(path):
            with open(path, "wb") as f:
                f.write(b"garbage")
    r = run_main(tmp_path, data_dir)
    assert r.returncode == 0, r.stderr
    assert "damaged" in r.stderr or "unreadable" in r.stderr
    assert comparable(metrics_lib.read_metrics(str(tmp_path))) == comparable(reference)


def test_a_different_config_is_refused_and_nothing_is_touched(tmp_path, data_dir):
    r = run_main(tmp_path, data_dir, sigterm_at=6016)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    before = {p: os.path.getmtime(p) for p in glob.glob(f"{tmp_path}/**", recursive=True)}
    metrics_before = (tmp_path / "metrics.jsonl").read_text()
    r = run_main(tmp_path, data_dir, "--config.schedule.learning_rate=0.1")
    assert r.returncode == 2
    assert "different run" in r.stderr and "learning_rate: 0.05 -> 0.1" in r.stderr
    assert "fresh --workdir" in r.stderr and "Traceback" not in r.stderr
    after = {p: os.path.getmtime(p) for p in glob.glob(f"{tmp_path}/**", recursive=True)}
    # the workdir's own mtime moves: the refused run held its lock (run.lock) and removed it
    before.pop(f"{tmp_path}/"), after.pop(f"{tmp_path}/")
    assert after == before and (tmp_path / "metrics.jsonl").read_text() == metrics_before
    assert not (tmp_path / "run.lock").exists()
    # logging-only fields may change on resume
    r = run_main(tmp_path, data_dir, "--config.log_every_steps=7")
    assert r.returncode == 0, r.stderr


class _PoisonAfter(ArraySource):
    """Training data that turns to NaN from a stream position on (in stage 1)."""

    def __init__(self, arrays, start):
        super().__init__(arrays)
        self.start = start

    def get_batch(self, indices, positions=None, seed=0):
        batch = super().get_batch(indices)
        if positions is not None and positions[0] >= self.start:
            batch["input"] = np.full_like(batch["input"], np.nan)
        return batch


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    from noise_scale.data import load_dataset
    from tests.helpers import small_config

    config = small_config("increase_batch", data_dir)
    real = load_dataset(config)
    # a dataset of the user's own: train_and_evaluate(config, workdir, dataset=...)
    poisoned = Dataset(_PoisonAfter(real.train.arrays, 5000), real.eval, real.num_classes,
                       real.input_shape)
    with pytest.raises(train.TrainingDiverged, match=r"stage 1, B=160") as err:
        train.train_and_evaluate(config, str(tmp_path), dataset=poisoned)
    schedule = train.schedule_from_config(config)  # the first poisoned update is named
    stage1 = schedule.plan(8)[1]
    first = next(p for p in stage1.positions(stage1.start_example) if p >= 5000)
    assert f"at update {schedule.updates_at(first) + 1:,} (stage 1, B=160, examples_seen=" \
        f"{first:,}" in str(err.value)
    steps = checkpoint_steps(tmp_path)
    assert steps and steps[-1] <= 5000  # only checkpoints from before the NaN
    # the kept checkpoint is good: resuming with clean data finishes the run
    config.checkpoint_every_epochs = 1.0
    records = train.train_and_evaluate(config, str(tmp_path), dataset=real)
    assert records[-1]["examples_seen"] >= 16_000 and np.isfinite(records[-1]["train_loss"])


def test_fields_added_later_leave_the_fingerprint_at_their_defaults():
    """A run made before ``adam_b2_rescale`` / ``schedule.adam_rule`` existed still matches
    (its DONE and checkpoints carry no such keys); set away from the default, they count."""
    from noise_scale import config_lib
    from noise_scale.checkpoint import experiment_fingerprint, fingerprint_diff
    from noise_scale.schedule import schedule_from_config

    def fp(spec, **overrides):
        c = config_lib.load_config(spec, [(k, str(v)) for k, v in overrides.items()])
        return experiment_fingerprint(c, schedule_from_config(c))

    sgd = fp("configs/mnist1d.py:increase_batch")
    assert "adam_b2_rescale" not in sgd["config"] and "adam_rule" not in sgd["config"]["schedule"]
    assert "adam" not in sgd  # the SGD family's fingerprint is what it was
    old = fp("configs/mnist1d_adam.py:increase_batch_sqrt")
    new = fp("configs/mnist1d_adam.py:increase_batch_sqrt", adam_b2_rescale=False)
    assert fingerprint_diff(old, new) == [
        "adam differs", "config.adam_b2_rescale: '<absent>' -> False"]
    assert [a["b2"] for a in old["adam"]] == pytest.approx([0.999 ** (b / 32)
                                                             for b in (32, 160, 800, 4000)])


def test_a_capped_runs_fingerprint_names_its_decision_rule():
    """Runs made under the point-estimate cap carry no ``cap_rule``: they are refused, not
    mixed with runs of the lower-bound rule; uncapped runs are untouched."""
    from noise_scale import config_lib
    from noise_scale.checkpoint import CAP_RULE, experiment_fingerprint, fingerprint_diff
    from noise_scale.schedule import schedule_from_config

    capped = config_lib.load_config("configs/mnist1d.py:measured_cap")
    plain = config_lib.load_config("configs/mnist1d.py:increase_batch")
    fp = experiment_fingerprint(capped, schedule_from_config(capped))
    assert fp["cap_rule"] == CAP_RULE
    assert "cap_rule" not in experiment_fingerprint(plain, schedule_from_config(plain))
    old = {k: v for k, v in fp.items() if k != "cap_rule"}
    assert fingerprint_diff(old, fp) == [f"cap_rule: '<absent>' -> {CAP_RULE!r}"]
