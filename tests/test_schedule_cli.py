"""The command ``python -m noise_scale.schedule``: table, JSON, plot, compare, bad input."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "noise_scale.schedule", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_table():
    r = run("--config=configs/imagenet_resnet50.py:increase_batch")
    assert r.returncode == 0, r.stderr
    assert "81,920" in r.stdout and "5,631 updates" in r.stdout and "warm-up 5 ep" in r.stdout


def test_json_has_the_documented_keys_and_override_applies():
    r = run(
        "--config=configs/mnist1d.py:increase_batch", "--json", "--config.schedule.batch_size=64"
    )
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert {"dataset_size", "total_epochs", "total_updates", "stages"} <= set(d)
    keys = {
        "start_epoch",
        "end_epoch",
        "batch_size",
        "learning_rate",
        "momentum",
        "warmup_epochs",
        "noise_scale",
        "updates",
    }
    assert all(keys <= set(s) for s in d["stages"])
    assert [s["batch_size"] for s in d["stages"]] == [64, 320, 1600, 8000]
    assert d["total_updates"] == sum(s["updates"] for s in d["stages"])


def test_compare_and_exact_close_the_gap(tmp_path):
    r = run("--config=configs/cifar10_wrn16_4.py:increase_batch", "--compare=decay_lr")
    assert r.returncode == 0, r.stderr
    assert "(-31.83%)" in r.stdout
    r = run(
        "--config=configs/cifar10_wrn16_4.py:increase_batch",
        "--compare=decay_lr",
        "--config.schedule.exact=true",
        f"--plot={tmp_path}/s.png",
    )
    assert r.returncode == 0, r.stderr
    # Exact B (634, 3,015, 12,145) rounded to whole ghost batches of 128 (640, 3,072,
    # 12,160): the gap closes from -31.83 % to within the rounding, and the table says so.
    compare = r.stdout.split("g ratio")[-1]
    gaps = [float(x) for x in re.findall(r"\(([+-]\d+\.\d+)%\)", compare)]
    assert len(gaps) == 4 and max(abs(g) for g in gaps) < 2.1, gaps
    assert gaps[-1] == -0.17 and "12,160" in compare
    assert (tmp_path / "s.png").stat().st_size > 10_000


def test_devices_column():
    r = run("--config=configs/imagenet_resnet50.py:momentum_0975", "--devices=32")
    assert r.returncode == 0, r.stderr
    assert "4 x 256" in r.stdout and "8 x 256" in r.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--config.schedule.batch_size=0"], "batch_size"),
        (["--config.schedule.batch_size=50000"], "batch_size"),
        (["--config.schedule.momentum=1.0"], "momentum"),
        (["--config.schedule.learning_rate=-0.1"], "learning_rate"),
        (["--config.schedule.boundaries=(24,12,32)"], "boundaries"),
        (
            ["--config.schedule.max_batch_size=16", "--config.schedule.rule=hybrid"],
            "max_batch_size 16 is below the first batch_size 32",
        ),
        (["--config.schedule.bogus=1"], "unknown field config.schedule.bogus"),
        (["--config.schedule.batch_size=abc"], "expected an integer"),
    ],
)
def test_bad_config_values_exit_2_with_one_message(args, needle):
    r = run("--config=configs/mnist1d.py:increase_batch", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ")


def test_unknown_variant_and_missing_file():
    r = run("--config=configs/mnist1d.py:nope")
    assert r.returncode == 2 and "unknown variant 'nope'" in r.stderr
    assert "increase_batch" in r.stderr and "Traceback" not in r.stderr
    r = run("--config=configs/missing.py")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = run()
    assert r.returncode == 2 and "no config given" in r.stderr


def test_measured_shows_each_stage_rate_on_each_slice_it_ran_on(tmp_path):
    """--measured=WORKDIR: per stage and slice, the median examples/s of its records, the
    updates/s (÷ B) and the stage's time at that rate; stages without records are named."""
    from noise_scale import config_lib
    from noise_scale.schedule import render, schedule_from_config

    schedule = schedule_from_config(config_lib.load_config("configs/mnist1d.py:increase_batch"))
    b0, b1 = schedule.stages[0].batch_size, schedule.stages[1].batch_size
    records = [  # stage 0 on 8 devices (rates 900, 1000, 5000), stage 1 on 8 then on 2
        {"stage": 0, "batch_size": b0, "devices": 8, "per_device_batch": b0 // 8,
         "accumulation_steps": 1, "examples_per_second": v} for v in (900.0, 1000.0, 5000.0)
    ] + [{"stage": 1, "batch_size": b1, "devices": d, "per_device_batch": b1 // d,
          "accumulation_steps": 1, "examples_per_second": v} for d, v in ((8, 4000.0), (2, 1600.0))]
    rows = render.measured(schedule, records)
    assert [(r["stage"], r["devices"]) for r in rows] == [(0, 8), (1, 2), (1, 8)]
    assert rows[0]["examples_per_second"] == 1000.0  # the median, not the mean
    assert rows[0]["updates_per_second"] == 1000.0 / b0
    stage0_examples = (schedule.stages[0].end_epoch - schedule.stages[0].start_epoch) * 40_000
    assert rows[0]["stage_seconds"] == pytest.approx(stage0_examples / 1000.0)
    assert rows[2]["updates_per_second"] / rows[1]["updates_per_second"] == 2.5  # 8 vs 2 devices
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    r = run("--config=configs/mnist1d.py:increase_batch", f"--measured={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "1,000" in r.stdout and "not measured: stage(s) 2, 3" in r.stdout
    r = run("--config=configs/mnist1d.py:increase_batch", f"--measured={tmp_path / 'none'}")
    assert r.returncode == 2 and "--measured=" in r.stderr and "metrics.jsonl" in r.stderr


def test_adams_plan_shows_b_eta_b2_per_stage_and_names_its_rule():
    r = run("--config=configs/mnist1d_adamw.py:increase_batch_sqrt", "--compare=decay_lr")
    assert r.returncode == 0, r.stderr
    assert "square-root rule (schedule.adam_rule=sqrt)" in r.stdout
    sqrt = r.stdout.split("\n\n")[0]
    rows = [line.split() for line in sqrt.splitlines()[3:7]]
    # stage, epochs, B, lr, b1, T, b2, eps, λ, T vs target, updates
    assert [row[2] for row in rows] == ["32", "160", "800", "4,000"]
    assert [row[3] for row in rows] == ["0.001", "0.0004472", "0.0002", "8.944e-05"]
    assert [row[6] for row in rows] == ["0.999", "0.99501", "0.975298", "0.882442"]
    assert [row[8] for row in rows] == ["0.1", "0.2236", "0.5", "1.118"]
    assert "T ratio" in r.stdout and "1.0000 (+0.00%)" in r.stdout.split("T ratio")[1]
    d = json.loads(run("--config=configs/mnist1d_adam.py:increase_batch_linear", "--json").stdout)
    assert d["noise_model"] == "sgd" and {s["adam_b2"] for s in d["stages"]} == {0.999}
