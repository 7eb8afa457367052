"""``python -m noise_scale.experiments.judge DIR``: verdicts from the records alone.

Each test works on a copy of the committed ``docs/mnist1d`` (the demo's records)
and changes the records the way a real difference, or a broken control, would:
the rule must see it. The command runs in a subprocess where its exit status and
printed lines are the point.
"""

import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from noise_scale.experiments import judge

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEMO = ROOT / "docs" / "mnist1d"


@pytest.fixture
def demo(tmp_path):
    out = tmp_path / "mnist1d"
    shutil.copytree(DEMO, out)
    return out


def _command(folder):
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "noise_scale.experiments.judge", str(folder)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _rewrite(path: pathlib.Path, change) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    path.write_text("".join(json.dumps(change(r)) + "\n" for r in records))


def _first_differing_epoch(run: pathlib.Path, ref: pathlib.Path) -> float:
    hyper = lambda r: (r["batch_size"], r["learning_rate"], r["momentum"])
    read = lambda p: [json.loads(x) for x in (p / "metrics.jsonl").read_text().splitlines()]
    return next(a["epoch"] for a, b in zip(read(run), read(ref))
                if any(not math.isclose(x, y, rel_tol=1e-6) for x, y in zip(hyper(a), hyper(b))))


def test_the_command_reproduces_the_committed_verdicts(demo):
    committed = json.loads((DEMO / "summary.json").read_text())
    done = _command(demo)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for name, s in committed["variants"].items():
        shown = "reference" if name == committed["reference"] else s["verdict"]
        assert f"{name}: {shown}" in lines
    assert f"result: {committed['agreement']['result']}" in lines
    again = json.loads((demo / "summary.json").read_text())
    assert again["variants"] == committed["variants"]
    assert (demo / "report.md").read_text() == (DEMO / "report.md").read_text()


def test_a_loss_25_percent_higher_after_the_change_is_distinguishable(demo):
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["variants"]["hybrid"]["verdict"] == "equivalent"  # as committed
    for seed in summary["seeds"]:
        run = demo / "hybrid" / f"seed{seed}"
        start = _first_differing_epoch(run, demo / "decay_lr" / f"seed{seed}")
        _rewrite(run / "metrics.jsonl", lambda r, start=start: {
            **r, "train_loss": r["train_loss"] * (1.25 if r["epoch"] >= start else 1.0)})
    done = _command(demo)
    assert done.returncode == 0, done.stderr
    assert "hybrid: distinguishable" in done.stdout.splitlines()
    assert "result: not reproduced" in done.stdout.splitlines()
    hybrid = json.loads((demo / "summary.json").read_text())["variants"]["hybrid"]
    assert all(w["loss"]["mean"] == pytest.approx(math.log(1.25), abs=0.1)
               for w in hybrid["windows"])
    assert "hybrid (equivalent) is distinguishable" in (demo / "report.md").read_text()


def test_a_control_holding_the_references_records_is_indistinguishable(demo):
    summary = json.loads((demo / "summary.json").read_text())
    for seed in summary["seeds"]:
        src = demo / "decay_lr" / f"seed{seed}" / "metrics.jsonl"
        shutil.copy(src, demo / "constant_lr" / f"seed{seed}" / "metrics.jsonl")
    done = _command(demo)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "constant_lr: indistinguishable" in lines and "result: not reproduced" in lines
    assert "constant_lr (control) is indistinguishable" in (demo / "report.md").read_text()


def test_missing_records_exit_2_naming_them_and_write_nothing(demo):
    before = (demo / "summary.json").read_text()
    (demo / "hybrid" / "seed1" / "metrics.jsonl").unlink()
    done = _command(demo)
    assert done.returncode == 2
    assert "hybrid/seed1/metrics.jsonl" in done.stderr and "missing" in done.stderr
    assert (demo / "summary.json").read_text() == before
    assert _command(demo / "nowhere").returncode == 2


def test_a_summary_without_context_takes_the_old_reports_title(demo):
    summary = json.loads((demo / "summary.json").read_text())
    for key in judge.CARRIED:
        summary.pop(key, None)
    (demo / "summary.json").write_text(json.dumps(summary))
    judge.judge(demo)
    title = (DEMO / "report.md").read_text().splitlines()[0]
    assert (demo / "report.md").read_text().splitlines()[0] == title
