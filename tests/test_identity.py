"""A workdir belongs to one run: another config is refused though the checkpoints are gone."""

import json
import os

import pytest

from noise_scale import train
from noise_scale.errors import SetupError
from noise_scale.schedule import schedule_from_config
from noise_scale.train import checkpoint, identity
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mnist1d"))


def files(workdir) -> dict:
    """Every file under ``workdir`` and its bytes (run.lock aside: a refused run takes it)."""
    out = {}
    for d, _, names in os.walk(workdir):
        for name in names:
            if name != "run.lock":
                with open(os.path.join(d, name), "rb") as f:
                    out[os.path.relpath(os.path.join(d, name), workdir)] = f.read()
    return out


def fingerprint(config) -> dict:
    return checkpoint.experiment_fingerprint(config, schedule_from_config(config))


@pytest.mark.slow  # a run to make its records (~10 s): CI's slow tier runs it
def test_another_config_on_records_without_checkpoints_is_refused_touching_nothing(tmp_path,
                                                                                     data_dir):
    first = train.train_and_evaluate(tiny_config(data_dir), str(tmp_path))
    os.rename(tmp_path / "checkpoints", tmp_path.parent / f"{tmp_path.name}-ckpt")  # space
    before = files(tmp_path)
    assert before["metrics.jsonl"] and "fingerprint.json" in before
    with pytest.raises(SetupError) as e:
        train.train_and_evaluate(tiny_config(data_dir, **{"schedule.learning_rate": 0.1}),
                                 str(tmp_path))
    message = str(e.value)
    assert f"{tmp_path} holds the records of a different run" in message
    assert "learning_rate: 0.05 -> 0.1" in message and "fresh --workdir" in message
    assert files(tmp_path) == before  # metrics.jsonl and config.json as they were
    assert not (tmp_path / "checkpoints").exists()
    # the same experiment still reruns (resumes: tests/test_checkpoint.py)
    identity.check(str(tmp_path), fingerprint(tiny_config(data_dir, log_every_steps=7)))
    assert first[-1]["examples_seen"] == 1024


def test_a_workdir_from_before_the_identity_file_is_judged_by_its_config(tmp_path):
    old = tiny_config("")
    (tmp_path / "config.json").write_text(old.to_json(indent=2))
    (tmp_path / "metrics.jsonl").write_text('{"examples_seen": 1000}\n')
    with pytest.raises(SetupError, match=r"seed: 0 -> 1"):
        identity.check(str(tmp_path), fingerprint(tiny_config("", seed=1)))
    # logging-only fields and the same experiment pass (and resume as before)
    identity.check(str(tmp_path), fingerprint(tiny_config("", log_every_steps=7)))


def test_records_of_an_unknown_run_and_a_damaged_identity_are_refused(tmp_path):
    fp = fingerprint(tiny_config(""))
    identity.check(str(tmp_path), fp)  # an empty workdir: anyone's
    (tmp_path / "metrics.jsonl").write_text('{"examples_seen": 1000}\n')
    with pytest.raises(SetupError, match="neither fingerprint.json nor config.json"):
        identity.check(str(tmp_path), fp)
    (tmp_path / "metrics.jsonl").write_bytes(b"\xff\xfe garbage\n")  # was a UnicodeDecodeError
    with pytest.raises(SetupError, match="neither fingerprint.json nor config.json"):
        identity.check(str(tmp_path), fp)
    (tmp_path / "fingerprint.json").write_text("{trunc")
    with pytest.raises(SetupError, match="is damaged"):
        identity.check(str(tmp_path), fp)
    identity.write(str(tmp_path), fp)
    identity.check(str(tmp_path), fp)
    assert json.loads((tmp_path / "fingerprint.json").read_text())["fingerprint"] == fp
