"""Preemption: killed runs resume bit-exactly; damaged, foreign and diverged runs are handled."""

import glob
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from noise_scale import errors, train
from noise_scale import metrics as metrics_lib
from noise_scale.data import ArraySource, Dataset
from noise_scale.schedule import schedule_from_config
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
def reference_workdir(tmp_path_factory, data_dir):
    """The uninterrupted run, in a subprocess exactly like the interrupted ones (read only:
    a test that changes it works on a copy)."""
    workdir = tmp_path_factory.mktemp("reference")
    r = run_main(workdir, data_dir)
    assert r.returncode == 0, r.stderr
    return workdir


@pytest.fixture(scope="module")
def reference(reference_workdir):
    return metrics_lib.read_metrics(str(reference_workdir))


def checkpoint_steps(workdir):
    return sorted(int(os.path.basename(p)) for p in glob.glob(f"{workdir}/checkpoints/[0-9]*"))


# The kill at the boundary is slow (~25 s, CI's slow tier runs it): mid-stage is the harder case.
@pytest.mark.parametrize("kill_at", [6016, pytest.param(4000, marks=pytest.mark.slow)],
                         ids=["mid-stage", "stage-boundary"])
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


@pytest.mark.slow  # a run and its resume (~30 s); the mid-stage kill-and-resume stays in the default tier
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


@pytest.mark.slow  # a run and its resume (~30 s); the mid-stage kill-and-resume stays in the default tier
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


@pytest.mark.slow  # a run and its resume (~30 s); the mid-stage kill-and-resume stays in the default tier
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


@pytest.mark.slow  # a run and its resume (~30 s); the mid-stage kill-and-resume stays in the default tier
def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
    from noise_scale.data import load_dataset
    from tests.helpers import small_config

    config = small_config("increase_batch", data_dir)
    real = load_dataset(config)
    # a dataset of the user's own: train_and_evaluate(config, workdir, dataset=...)
    poisoned = Dataset(_PoisonAfter(real.train.arrays, 5000), real.eval, real.num_classes,
                       real.input_shape)
    with pytest.raises(errors.TrainingDiverged, match=r"stage 1, B=160") as err:
        train.train_and_evaluate(config, str(tmp_path), dataset=poisoned)
    schedule = schedule_from_config(config)  # the first poisoned update is named
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
    from noise_scale.schedule import schedule_from_config
    from noise_scale.train.checkpoint import compare_fingerprints, experiment_fingerprint

    def fp(spec, **overrides):
        c = config_lib.load_config(spec, [(k, str(v)) for k, v in overrides.items()])
        return experiment_fingerprint(c, schedule_from_config(c))

    sgd = fp("configs/mnist1d.py:increase_batch")
    assert "adam" not in sgd  # the SGD family's fingerprint is what it was
    old_sgd = json.loads(json.dumps(sgd))  # as written before the two fields existed
    del old_sgd["config"]["adam_b2_rescale"], old_sgd["config"]["schedule"]["adam_rule"]
    assert compare_fingerprints(old_sgd, sgd) == ([], [])
    new = fp("configs/mnist1d_adam.py:increase_batch_sqrt")
    old = json.loads(json.dumps(new))
    del old["config"]["adam_b2_rescale"]
    assert compare_fingerprints(old, new) == ([], [])
    off = fp("configs/mnist1d_adam.py:increase_batch_sqrt", adam_b2_rescale=False)
    assert compare_fingerprints(old, off) == (
        ["adam differs", "config.adam_b2_rescale: True -> False"], [])
    assert [a["b2"] for a in new["adam"]] == pytest.approx([0.999 ** (b / 32)
                                                             for b in (32, 160, 800, 4000)])


def test_a_field_the_table_cannot_fill_is_named_not_diffed():
    """``ABSENT_MEANS`` fills what a field's absence meant; a field missing from it is
    reported as missing (with what to do), and a filled one set otherwise as a change."""
    from noise_scale import config_lib
    from noise_scale.schedule import schedule_from_config
    from noise_scale.train.checkpoint import (
        ABSENT_MEANS,
        compare_fingerprints,
        experiment_fingerprint,
        missing_fields_message,
    )

    c = config_lib.load_config("configs/mnist1d.py:increase_batch")
    now = experiment_fingerprint(c, schedule_from_config(c))
    old = json.loads(json.dumps(now))
    del old["config"]["schedule"]["noise_cap"], old["config"]["batch_norm_batch_size"]
    assert "config.batch_norm_batch_size" not in ABSENT_MEANS
    assert compare_fingerprints(old, now) == ([], ["config.batch_norm_batch_size"])
    message = missing_fields_message(["config.batch_norm_batch_size"], now)
    assert "config.batch_norm_batch_size (now 0) existed" in message
    assert "fresh --workdir" in message and "ABSENT_MEANS" in message
    capped = json.loads(json.dumps(now))
    capped["config"]["schedule"]["noise_cap"] = 0.2
    assert compare_fingerprints(old, capped) == (
        ["config.schedule.noise_cap: 0.0 -> 0.2"], ["config.batch_norm_batch_size"])


def test_a_capped_runs_fingerprint_names_its_decision_rule():
    """Runs made under the point-estimate cap carry no ``cap_rule``: they are refused, not
    mixed with runs of the lower-bound rule; uncapped runs are untouched."""
    from noise_scale import config_lib
    from noise_scale.schedule import schedule_from_config
    from noise_scale.train.checkpoint import CAP_RULE, experiment_fingerprint, fingerprint_diff

    capped = config_lib.load_config("configs/mnist1d.py:measured_cap")
    plain = config_lib.load_config("configs/mnist1d.py:increase_batch")
    fp = experiment_fingerprint(capped, schedule_from_config(capped))
    assert fp["cap_rule"] == CAP_RULE
    assert "cap_rule" not in experiment_fingerprint(plain, schedule_from_config(plain))
    old = {k: v for k, v in fp.items() if k != "cap_rule"}
    assert fingerprint_diff(old, fp) == [f"cap_rule: '<absent>' -> {CAP_RULE!r}"]


def test_a_capped_run_from_before_cap_rule_is_a_difference_not_a_gap():
    """The table knows what a missing ``cap_rule`` meant (the point estimate): refused as a
    change of rule, like any other difference, not as an unknown field."""
    from noise_scale import config_lib
    from noise_scale.schedule import schedule_from_config
    from noise_scale.train.checkpoint import compare_fingerprints, experiment_fingerprint

    capped = config_lib.load_config("configs/mnist1d.py:measured_cap")
    fp = experiment_fingerprint(capped, schedule_from_config(capped))
    changes, missing = compare_fingerprints({k: v for k, v in fp.items() if k != "cap_rule"}, fp)
    assert missing == [] and len(changes) == 1 and changes[0].startswith(
        "cap_rule: 'B_new <= c x the point estimate")


def test_array_digests_change_with_one_flipped_bit_of_one_leaf():
    import jax
    import jax.numpy as jnp

    from noise_scale.train.checkpoint import array_digests

    tree = {"w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "count": jnp.int32(7)}
    before = array_digests(tree)
    w = np.asarray(tree["w"]).copy()
    w.view(np.uint32)[1, 2] ^= 1  # the last bit of one float
    after = array_digests(dict(tree, w=jnp.asarray(w)))
    assert after["['count']"] == before["['count']"] and after["['w']"] != before["['w']"]
    # the same bytes in another shape are another array
    assert array_digests({"w": tree["w"].reshape(3, 2)})["['w']"] != before["['w']"]
    # replicated over the 8 devices: the digest of the values, not of the placement
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    replicated = jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    assert array_digests(replicated) == before


def flip_low_bits(step_dir, flips=3) -> pathlib.Path:
    """Flip the lowest bit of ``flips`` bytes of the largest array file of a checkpoint, each
    where the checkpoint still reads back without an error: the numbers change and stay
    finite, the damage only the digests can see.

    Orbax compresses chunks with zstd; a flip inside a block zstd did compress fails the
    read instead (another path of ``restore_latest``). Where the arrays lie in the file
    varies from save to save, so fixed offsets sometimes landed on one: CI's slow tier
    failed once that way. Each flip is kept only if the step still restores."""
    step_dir = pathlib.Path(step_dir)
    files = [p for p in glob.glob(f"{step_dir}/state/**/d/*", recursive=True) if os.path.isfile(p)]
    path = pathlib.Path(max(files, key=os.path.getsize))
    data = bytearray(path.read_bytes())
    kept = 0
    for k in dict.fromkeys((8, 12, 16, *range(1, 24))):  # thirds and half first, then 24ths
        offset = len(data) * k // 24
        data[offset] ^= 1
        path.write_bytes(data)
        try:
            restored_leaves(step_dir.parent.parent, int(step_dir.name))
            kept += 1
        except Exception:  # noqa: BLE001 - a read error: undo this flip, try the next place
            data[offset] ^= 1
            path.write_bytes(data)
        if kept == flips:
            return path
    raise AssertionError(f"no {flips} places in {path} where a flipped bit still reads back")


def restored_leaves(workdir, step):
    import jax
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(os.path.abspath(f"{workdir}/checkpoints"),
                               item_names=("state", "meta")) as manager:
        state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return [np.asarray(x) for x in jax.tree.leaves(state["state"])]


@pytest.mark.slow  # a run and its resume (~30 s); the mid-stage kill-and-resume stays in the default tier
def test_flipped_bytes_fall_back_to_the_previous_checkpoint_which_the_next_save_replaces(
        tmp_path, data_dir, reference_workdir, reference):
    """Bytes flipped in an array file read back as other numbers without an error; the
    digests catch it, the run resumes from the previous checkpoint, ends with the
    uninterrupted run's records, and its save replaces the damaged checkpoint."""
    shutil.copytree(reference_workdir, tmp_path, dirs_exist_ok=True)
    previous, newest = checkpoint_steps(tmp_path)  # 12,000 (stage 3) and the end, 16,000
    flip_low_bits(tmp_path / "checkpoints" / str(newest))
    r = run_main(tmp_path, data_dir)
    assert r.returncode == 0, r.stderr
    assert f"checkpoint at examples_seen={newest} is damaged" in r.stderr
    assert "differ from the digests written with them" in r.stderr
    assert f"resuming at examples_seen={previous}" in r.stderr
    assert comparable(metrics_lib.read_metrics(str(tmp_path))) == comparable(reference)
    assert checkpoint_steps(tmp_path) == [previous, newest]
    ours, theirs = restored_leaves(tmp_path, newest), restored_leaves(reference_workdir, newest)
    assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def _edit_fingerprints(workdir, edit):
    """Rewrite every checkpoint's stored fingerprint as an older version would have written
    it: ``edit`` removes a field; no meta digest (older versions wrote none)."""
    from noise_scale.train.checkpoint import fingerprint_digest

    for path in glob.glob(f"{workdir}/checkpoints/*/meta/metadata"):
        with open(path) as f:
            meta = json.load(f)
        edit(meta["fingerprint"]["config"])
        meta["digest"] = fingerprint_digest(meta["fingerprint"])
        meta.pop("meta_sha256", None)
        with open(path, "w") as f:
            json.dump(meta, f)


def test_a_checkpoint_from_before_a_field_resumes_if_the_table_knows_it_else_exits_2(
        tmp_path, data_dir, reference_workdir):
    shutil.copytree(reference_workdir, tmp_path, dirs_exist_ok=True)
    newest = checkpoint_steps(tmp_path)[-1]
    _edit_fingerprints(tmp_path, lambda c: c["schedule"].pop("noise_cap"))
    r = run_main(tmp_path, data_dir)  # a finished run: it restores and has nothing to do
    assert r.returncode == 0, r.stderr
    assert f"resuming at examples_seen={newest}" in r.stderr

    _edit_fingerprints(tmp_path, lambda c: c.pop("batch_norm_batch_size"))
    r = run_main(tmp_path, data_dir)
    assert r.returncode == 2, r.stderr
    assert "written before config.batch_norm_batch_size (now 0) existed" in r.stderr
    assert "ABSENT_MEANS" in r.stderr and "fresh --workdir" in r.stderr
    assert "rerun with the old config" not in r.stderr and "Traceback" not in r.stderr


def test_the_checkpointer_skips_a_flipped_checkpoint_and_its_next_save_replaces_it(tmp_path,
                                                                                   caplog):
    """The same as the run above, at the Checkpointer alone: the damaged step is passed
    over and the save at its number writes it again (it used to be skipped)."""
    import jax.numpy as jnp

    from noise_scale.train.checkpoint import Checkpointer

    noise = np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32)

    def state(k):  # random numbers: stored as they are, not compressed to a few bytes
        return {"w": jnp.asarray(noise + k), "clock": jnp.int32(k)}

    ckpt = Checkpointer(str(tmp_path), {"config": {}}, keep=2)
    for k in (1, 2):
        ckpt.save(state(k), k, {}, wait=True)
    flip_low_bits(tmp_path / "checkpoints" / "2")
    restored, _, step = ckpt.restore_latest(state(0))
    assert step == 1 and int(restored["clock"]) == 1 and ckpt.damaged == [2]
    assert "1 of its arrays differ from the digests written with them (['w'])" in caplog.text
    ckpt.save(state(2), 2, {}, wait=True)
    restored, _, step = ckpt.restore_latest(state(0))
    assert step == 2 and np.array_equal(restored["w"], state(2)["w"])
    ckpt.close()


@pytest.mark.slow
def test_records_a_kill_lost_after_the_checkpoint_are_named_and_written_again(
        tmp_path, data_dir, reference):
    """A kill after records but before the next checkpoint: the resume says how many records
    it writes again (it used to say nothing), and a last line cut by the kill is dropped
    (it used to end the resume in a JSONDecodeError traceback)."""
    r = run_main(tmp_path, data_dir, sigterm_at=10_000)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    stop = checkpoint_steps(tmp_path)[-1]  # 10,400: the step of B = 800 past 10,000
    lost = [rec for rec in reference if rec["examples_seen"] > stop]  # at 12,000 and 16,000
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(rec) + "\n" for rec in lost)
        f.write('{"examples_seen": 20000, "train_lo')  # cut short by the kill
    r = run_main(tmp_path, data_dir)
    assert r.returncode == 0, r.stderr
    assert (f"resuming at {stop:,} examples seen (checkpoint); 2 records after it (to 16,000) "
            "are recomputed") in r.stderr
    assert "line 5 is cut short (a run killed while writing it); dropped" in r.stderr
    assert comparable(metrics_lib.read_metrics(str(tmp_path))) == comparable(reference)
