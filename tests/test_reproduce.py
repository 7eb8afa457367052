"""The reproduction: runs, reuse, the report's numbers, the figure, stops and bad input.

One real reduced run (MNIST-1D, N = 2,000, 4 epochs, steps at 1, 2, 3; decay_lr
and hybrid × 2 seeds) checks that report.md and summary.json are what the
runs' metrics.jsonl files say, recomputed here independently. Orchestration
details (resume, skipped variants, optimizer conversion) use a fake
``train_and_evaluate`` that writes schedule-shaped records in milliseconds.
``experiments.reproduce`` is called directly; the command
(``python -m noise_scale.reproduce``) runs in a subprocess where its exit
status is the point.
"""

import io
import json
import math
import os
import pathlib
import signal
import statistics
import subprocess
import sys

import pytest

from noise_scale import config_lib, errors, experiments, train
from noise_scale.experiments import agreement, executor, report
from noise_scale.schedule import schedule_from_config
from noise_scale.train import checkpoint, identity

ROOT = pathlib.Path(__file__).resolve().parents[1]
REDUCED = [
    "--config=configs/mnist1d.py",
    "--config.dataset_size=2000",
    "--config.schedule.total_epochs=4",
    "--config.schedule.boundaries=(1,2,3)",
    "--config.eval_batch_size=512",
    "--config.log_every_steps=100",
]
# hybrid keeps the config's cap of 160 (= 5·B0), which fits N = 2,000; increase_batch
# would need B = 4,000 > N here, so the real run compares decay_lr with hybrid.
VARIANTS = ["decay_lr", "hybrid"]
SEEDS = [0, 1]


def _config(*extra) -> config_lib.ConfigArgs:
    spec, overrides, _ = config_lib.split_config_args([*REDUCED, *extra])
    return config_lib.ConfigArgs(spec, tuple(overrides))


def _reproduce(workdir, *extra, variants=VARIANTS, seeds=2, **kwargs) -> dict:
    return experiments.reproduce(_config(*extra), str(workdir), variants=variants, seeds=seeds,
                                 **kwargs)


def _command(*argv, env=None):
    """``python -m noise_scale.reproduce`` in a subprocess, from the repository root."""
    env = {**os.environ, **(env or {}),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "noise_scale.reproduce", *argv], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mnist1d"))


# ---------------------------------------------------------------- real run
@pytest.fixture(scope="module")
def reduced(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("repro")
    out = io.StringIO()
    result = _reproduce(workdir, f"--config.data_dir={data_dir}", stream=out)
    return workdir, result, out.getvalue()


def _metrics(workdir, variant, seed):
    with open(workdir / variant / f"seed{seed}" / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.slow  # a reduced reproduction (~40 s); the fake-train tests below cover its logic
def test_runs_land_in_variant_seed_folders(reduced):
    workdir, _, _ = reduced
    for v in VARIANTS:
        for s in SEEDS:
            run = workdir / v / f"seed{s}"
            assert (run / "DONE").exists()
            assert json.loads((run / "config.json").read_text())["seed"] == s
            records = _metrics(workdir, v, s)
            assert [round(r["epoch"]) for r in records] == [1, 2, 3, 4]
            done = json.loads((run / "DONE").read_text())
            assert done["final_record"] == records[-1]


@pytest.mark.slow  # a reduced reproduction (~40 s); the fake-train tests below cover its logic
def test_summary_and_report_are_computed_from_the_metrics(reduced):
    workdir, result, _ = reduced
    summary = json.loads((workdir / "summary.json").read_text())
    assert result == {**summary, "files": {"figure": str(workdir / "figure.png"),
                                           "report": str(workdir / "report.md"),
                                           "summary": str(workdir / "summary.json"),
                                           "noise_scale": str(workdir / "noise_scale.png")}}
    report_md = (workdir / "report.md").read_text()
    assert "![the measured noise scale against each schedule's batch size]" in report_md
    assert summary["seeds"] == SEEDS and summary["eval_every_epochs"] == 1.0
    ref = {s: _metrics(workdir, "decay_lr", s) for s in SEEDS}
    for v in VARIANTS:
        runs = {s: _metrics(workdir, v, s) for s in SEEDS}
        finals = [100 * runs[s][-1]["test_accuracy"] for s in SEEDS]
        updates = runs[0][-1]["updates"]
        ratio = ref[0][-1]["updates"] / updates
        wall = statistics.mean(runs[s][-1]["wall_time"] for s in SEEDS)
        got = summary["variants"][v]
        assert got["final_test_accuracy_per_seed"] == pytest.approx(finals)
        assert got["final_test_accuracy_mean"] == pytest.approx(statistics.mean(finals))
        assert got["final_test_accuracy_sd"] == pytest.approx(statistics.stdev(finals))
        assert got["updates"] == updates
        assert got["updates_ratio_vs_reference"] == pytest.approx(ratio)
        assert got["wall_time_mean"] == pytest.approx(wall)
        assert got["compiles"] == max(runs[s][-1]["compiles"] for s in SEEDS)
        role = "reference" if v == "decay_lr" else "equivalent"
        row = (f"| {v} | {role} | {statistics.mean(finals):.2f} ± "
               f"{statistics.stdev(finals):.2f} | {updates:,} | ")
        assert row in report_md
    # the rule's statistics, recomputed: seed s with seed s, from the first evaluation where
    # (B, ε, m) differ, one window per (hybrid stage, decay_lr stage) pair
    hyper = lambda r: (r["batch_size"], r["learning_rate"], r["momentum"])
    hy = {s: _metrics(workdir, "hybrid", s) for s in SEEDS}
    first = next(i for i, (a, b) in enumerate(zip(hy[0], ref[0]))
                 if any(not math.isclose(x, y, rel_tol=1e-6) for x, y in zip(hyper(a), hyper(b))))
    cuts = {}
    for i in range(first, len(ref[0])):
        cuts.setdefault((hy[0][i]["stage"], ref[0][i]["stage"]), []).append(i)
    hybrid = summary["variants"]["hybrid"]
    assert [w["evaluations"] for w in hybrid["windows"]] == [len(k) for k in cuts.values()]
    for w, keys in zip(hybrid["windows"], cuts.values()):
        d = [statistics.mean(math.log(hy[s][i]["train_loss"] / ref[s][i]["train_loss"])
                             for i in keys) for s in SEEDS]
        half = 6.313751514675 * statistics.stdev(d) / math.sqrt(2)  # t(0.95, 1 degree of freedom)
        assert w["loss"]["per_seed"] == pytest.approx(d)
        assert (w["loss"]["low"], w["loss"]["high"]) == pytest.approx(
            (statistics.mean(d) - half, statistics.mean(d) + half), rel=1e-4)
        assert w["from_epoch"] == pytest.approx(hy[0][keys[0]]["epoch"])
    inside = all(abs(w[c][e]) < agreement.MARGINS[c] for w in hybrid["windows"]
                 for c in agreement.CURVES for e in ("low", "high"))
    assert hybrid["verdict"] in ("equivalent", "distinguishable", "inconclusive")
    assert (hybrid["verdict"] == "equivalent") == inside
    assert f"| {hybrid['verdict']} |" in report_md and hybrid["role"] == "equivalent"
    assert f"{hybrid['updates_ratio_vs_reference']:.1f}× fewer" in report_md
    # the schedule's own update counts
    plans = {v: sum(p.updates for p in schedule_from_config(_load(v)).plan(8)) for v in VARIANTS}
    assert {v: summary["variants"][v]["updates"] for v in VARIANTS} == plans
    assert summary["agreement"]["result"] is None  # no control in this run
    assert "## Summary" in report_md and "hybrid (equivalent) ends at" in report_md


def _load(variant):
    return _config().load(variant)


@pytest.mark.slow  # a reduced reproduction (~40 s); the fake-train tests below cover its logic
def test_figure_is_a_png(reduced):
    workdir, _, _ = reduced
    data = (workdir / "figure.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.slow  # a reduced reproduction (~40 s); the fake-train tests below cover its logic
def test_progress_lines_with_eta(reduced):
    _, _, out = reduced
    lines = [line for line in out.splitlines() if line.startswith("[run ")]
    assert [line.split(" | ")[0] for line in lines] == [
        "[run 1/4] decay_lr seed 0 (running)", "[run 2/4] hybrid seed 0 (running)",
        "[run 3/4] decay_lr seed 1 (running)", "[run 4/4] hybrid seed 1 (running)",
    ]
    assert "ETA after the first run" in lines[0]
    assert all(" ex/s so far | ETA " in line for line in lines[1:])
    assert "4 runs to train" in lines[0] and "1 run to train" in lines[3]
    done = [line for line in out.splitlines() if line.startswith("[done] ")]
    assert len(done) == 4 and done[-1].startswith("[done] hybrid seed 1: test accuracy ")


@pytest.mark.slow  # a reduced reproduction (~40 s); the fake-train tests below cover its logic
def test_finished_runs_are_reused(reduced, data_dir, monkeypatch, capsys):
    workdir, _, _ = reduced
    before = (workdir / "summary.json").read_text()

    def must_not_train(config, workdir):
        raise AssertionError(f"train_and_evaluate called for finished run {workdir}")

    monkeypatch.setattr(train, "train_and_evaluate", must_not_train)
    _reproduce(workdir, f"--config.data_dir={data_dir}")
    out = capsys.readouterr().out
    assert out.count("(reused)") == 4 and "(running)" not in out
    assert (workdir / "summary.json").read_text() == before


@pytest.mark.slow
def test_parallel_jobs_give_the_same_runs(reduced, data_dir, tmp_path):
    """--jobs=2 trains in spawned worker processes; the runs are the same runs."""
    from tests.helpers import strip_timing

    workdir, _, _ = reduced
    out = tmp_path / "parallel"
    summary = _reproduce(out, f"--config.data_dir={data_dir}", jobs=2, seeds=1,
                         stream=io.StringIO())
    for variant in VARIANTS:
        assert (out / variant / "seed0" / "train.log").exists()
        assert (strip_timing(_metrics(out, variant, 0))
                == strip_timing(_metrics(workdir, variant, 0)))
    assert set(summary["variants"]) == set(VARIANTS)


# ------------------------------------------------------------------- stops
TINY = ["--config.dataset_size=1000", "--config.schedule.total_epochs=2",
        "--config.schedule.boundaries=(1,)", "--config.eval_batch_size=500",
        "--config.log_every_steps=100", "--variants=decay_lr"]


@pytest.mark.slow
@pytest.mark.parametrize("jobs, seeds", [(1, 1), (2, 2)])
def test_a_preempted_run_exits_143_and_a_rerun_resumes_it(tmp_path, data_dir, jobs, seeds):
    """The trainer SIGTERMs itself at 1,504 examples, in this process or in a worker."""
    argv = ["--config=configs/mnist1d.py", f"--workdir={tmp_path}", f"--config.data_dir={data_dir}",
            *TINY, f"--seeds={seeds}", f"--jobs={jobs}"]
    stopped = _command(*argv, env={"NOISE_SCALE_SIGTERM_AT": "1500"})
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "Traceback" not in stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("decay_lr seed ") and "SIGTERM received: saved a checkpoint" in last
    assert "Finished runs are kept; rerunning the command reuses them" in last
    runs = [tmp_path / "decay_lr" / f"seed{s}" for s in range(seeds)]
    assert not any((run / "DONE").exists() for run in runs)
    assert all((run / "checkpoints").exists() for run in runs)

    rerun = _command(*argv, env={"NOISE_SCALE_SIGTERM_AT": "-1"})  # -1: no fault
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("(resuming") == seeds
    for run in runs:
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [round(r["epoch"]) for r in records] == [1, 2]  # one record per epoch, no gap
        assert json.loads((run / "DONE").read_text())["final_record"] == records[-1]


# ------------------------------------------------------- fake trainer runs
def _fake_records(config, n_devices=8):
    """One record per epoch, shaped by the schedule; accuracy depends on seed and variant."""
    schedule = schedule_from_config(config)
    n = schedule.dataset_size
    records, updates = [], 0
    for p in schedule.plan(n_devices):
        updates += p.updates
        acc = 0.5 + 0.1 * p.index + 0.01 * config.seed + (0.02 if config.variant == "hybrid" else 0)
        records.append({
            "epoch": p.end_example / n, "examples_seen": p.end_example, "updates": updates,
            "stage": p.index, "batch_size": p.stage.batch_size,
            "learning_rate": p.stage.learning_rate, "momentum": p.stage.momentum,
            "noise_scale": 1.0, "train_loss": 1.0 / (1 + p.index), "train_accuracy": acc,
            "test_loss": 1.0, "test_accuracy": acc, "examples_per_second": 1.0,
            "compiles": p.index + 1, "wall_time": 10.0 + p.index + config.seed,
        })
    return records


@pytest.fixture
def fake_train(monkeypatch):
    calls = []

    def fake(config, workdir):
        d = pathlib.Path(workdir)
        calls.append((config, workdir, (d / "metrics.jsonl").exists()))
        d.mkdir(parents=True, exist_ok=True)
        # the run's identity before its records, as train writes it
        identity.write(workdir, checkpoint.experiment_fingerprint(config,
                                                                  schedule_from_config(config)))
        records = _fake_records(config)
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        return records

    monkeypatch.setattr(train, "train_and_evaluate", fake)
    return calls


def test_reproduce_is_a_python_function_without_flags(tmp_path, fake_train, capsys):
    """What a notebook does: no flags parsed, a comma string or a list of variants."""
    from absl import flags

    flags.FLAGS.unparse_flags()  # reading any flag now raises UnparsedFlagAccessError
    config = config_lib.ConfigArgs("configs/mnist1d.py", (("dataset_size", "2000"),))
    result = experiments.reproduce(config, str(tmp_path), variants="decay_lr, hybrid", seeds=1)
    assert not flags.FLAGS.is_parsed()
    assert [(c.variant, c.seed, c.dataset_size) for c, _, _ in fake_train] == [
        ("decay_lr", 0, 2000), ("hybrid", 0, 2000)]
    assert result["variants"]["decay_lr"]["updates"] == 2_500  # 40 epochs · 2,000 / 32
    assert all(pathlib.Path(f).stat().st_size > 0 for f in result["files"].values())
    assert "2 runs (2 variants × 1 seed) into" in capsys.readouterr().out


def test_cpu_slots_split_the_cpus_into_equal_disjoint_shares(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6, 7, 8})
    assert executor.cpu_slots(2) == [{4, 5}, {6, 7}]
    assert executor.cpu_slots(5) == [{4}, {5}, {6}, {7}, {8}]
    assert executor.cpu_slots(6) is None  # fewer CPUs than jobs: unpinned
    assert executor.cpu_slots(1) is None  # one job (in this process) keeps every CPU


def test_each_run_in_flight_gets_its_own_cpus(tmp_path, fake_train, monkeypatch):
    """--jobs=2 on 4 CPUs: each worker is pinned to 2 of them, never to the other's."""
    pinned = []
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: pinned.append(set(cpus)))
    monkeypatch.setattr(executor, "make_executor", lambda jobs: executor.InProcessExecutor())
    monkeypatch.setattr(executor, "_log_to", lambda path: None)
    experiments.reproduce(config_lib.ConfigArgs("configs/mnist1d.py", (("dataset_size", "2000"),)),
                          str(tmp_path), variants="decay_lr,hybrid", seeds=2, jobs=2)
    assert len(pinned) == 4 and all(p in ({0, 1}, {2, 3}) for p in pinned)
    assert pinned[0] != pinned[1]  # the first two are in flight together


def test_default_variants_are_the_config_files_with_its_controls(tmp_path, fake_train):
    summary = experiments.reproduce(config_lib.ConfigArgs("configs/mnist1d.py"), str(tmp_path),
                                    seeds=2)
    assert list(summary["variants"]) == [
        "decay_lr", "hybrid", "increase_batch", "increased_lr", "increased_momentum",
        "measured_cap", "constant_lr", "mismatched"]
    assert {n: v["role"] for n, v in summary["variants"].items()} == {
        "decay_lr": "reference", "hybrid": "equivalent", "increase_batch": "equivalent",
        "increased_lr": "equivalent", "increased_momentum": "with cost",
        "measured_cap": "equivalent", "constant_lr": "control", "mismatched": "control"}
    assert summary["variants"]["mismatched"]["updates"] == 26_250  # B 32, 64, 128, 256
    assert summary["agreement"]["result"] in ("reproduced", "not reproduced")
    assert summary["agreement"]["loss_margin"] == agreement.LOSS_MARGIN
    report_md = (tmp_path / "report.md").read_text()
    assert "| constant_lr | control |" in report_md and agreement.RULE in report_md


def test_the_imagenet_shape_compares_with_goyal(tmp_path, fake_train):
    summary = experiments.reproduce(config_lib.ConfigArgs("configs/mnist1d_imagenet.py"),
                                    str(tmp_path), seeds=2)
    assert summary["reference"] == "goyal" and summary["eval_every_epochs"] == 1.0
    assert {n: v["role"] for n, v in summary["variants"].items()} == {
        "goyal": "reference", "increase_batch": "equivalent", "momentum_090": "equivalent",
        "momentum_095": "with cost", "momentum_0975": "with cost", "constant_lr": "control",
        "mismatched": "control"}
    assert summary["variants"]["momentum_0975"]["updates"] == 1_172
    assert "| vs goyal |" in (tmp_path / "report.md").read_text()


def test_an_unfinished_run_of_another_experiment_is_refused_keeping_its_records(tmp_path,
                                                                                fake_train):
    _reproduce(tmp_path)
    scratch = tmp_path / "decay_lr" / "seed1"
    (scratch / "DONE").unlink()  # died mid-run, no checkpoints: would be rerun from scratch
    other = json.loads((scratch / "fingerprint.json").read_text())["fingerprint"]
    other["config"]["schedule"]["learning_rate"] = 0.5  # ... but it is another experiment's
    identity.write(str(scratch), other)
    records = (scratch / "metrics.jsonl").read_text()
    with pytest.raises(errors.SetupError, match="learning_rate: 0.5 -> "):
        _reproduce(tmp_path)
    assert (scratch / "metrics.jsonl").read_text() == records


def test_unfinished_runs_are_rerun_and_resumable_ones_keep_their_files(tmp_path, fake_train,
                                                                        capsys):
    _reproduce(tmp_path)
    assert len(fake_train) == 4 and not any(existed for _, _, existed in fake_train)
    # decay_lr seed 1 died mid-run without checkpoints; hybrid seed 0 left checkpoints
    scratch, resumable = tmp_path / "decay_lr" / "seed1", tmp_path / "hybrid" / "seed0"
    (scratch / "DONE").unlink()
    (resumable / "DONE").unlink()
    (resumable / "checkpoints").mkdir()
    (resumable / "checkpoints" / "keep.txt").write_text("x")
    fake_train.clear()
    capsys.readouterr()
    _reproduce(tmp_path)
    out = capsys.readouterr().out
    assert [(c.variant, c.seed, existed) for c, _, existed in fake_train] == [
        ("hybrid", 0, True),  # metrics.jsonl kept: train cuts it back to the checkpoint
        ("decay_lr", 1, False),  # from scratch: metrics.jsonl deleted first
    ]
    assert "[run 2/4] hybrid seed 0 (resuming)" in out
    assert "[run 3/4] decay_lr seed 1 (running)" in out
    assert out.count("(reused)") == 2
    assert (resumable / "checkpoints" / "keep.txt").read_text() == "x"
    assert (scratch / "DONE").exists() and (resumable / "DONE").exists()


def test_a_diverged_run_stops_the_rest_and_keeps_what_finished(tmp_path, fake_train,
                                                               monkeypatch):
    fake = train.train_and_evaluate

    def diverge_on_hybrid(config, workdir):
        if config.variant == "hybrid":
            raise errors.TrainingDiverged("training loss became nan at update 7.")
        return fake(config, workdir)

    monkeypatch.setattr(train, "train_and_evaluate", diverge_on_hybrid)
    with pytest.raises(errors.TrainingDiverged) as e:
        _reproduce(tmp_path, stream=io.StringIO())
    assert errors.exit_status(e.value) == 1
    assert str(e.value) == (
        f"hybrid seed 0 ({tmp_path / 'hybrid' / 'seed0'}): training loss became nan at update 7. "
        "Finished runs are kept; rerunning the command reuses them and resumes the others.")
    assert [c.variant for c, _, _ in fake_train] == ["decay_lr"]  # seed 1 never started
    assert (tmp_path / "decay_lr" / "seed0" / "DONE").exists()
    assert not (tmp_path / "summary.json").exists()


def test_a_paused_run_lets_the_others_finish_and_the_command_ends_75(tmp_path, fake_train,
                                                                      monkeypatch):
    fake = train.train_and_evaluate

    def pause_hybrid_seed0(config, workdir):
        if config.variant == "hybrid" and config.seed == 0:
            raise errors.Paused("paused on purpose (config.stop_at_stage=2).", 8000, 2)
        return fake(config, workdir)

    monkeypatch.setattr(train, "train_and_evaluate", pause_hybrid_seed0)
    stream = io.StringIO()
    with pytest.raises(errors.Paused) as e:
        _reproduce(tmp_path, stream=stream)
    assert errors.exit_status(e.value) == errors.EXIT_PAUSED == 75
    assert "1 run(s) paused on purpose, the others finished" in str(e.value)
    assert f"hybrid seed 0 ({tmp_path / 'hybrid' / 'seed0'}): paused on purpose" in str(e.value)
    assert "[paused] hybrid seed 0 at examples_seen=8,000" in stream.getvalue()
    assert len(fake_train) == 3  # the three other runs trained to the end
    assert not (tmp_path / "hybrid" / "seed0" / "DONE").exists()
    assert (tmp_path / "hybrid" / "seed1" / "DONE").exists()


def test_each_stop_is_raised_as_its_error_with_its_exit_status(tmp_path):
    run = experiments.runs.RunSpec("hybrid", 1, None, tmp_path, 100, {})
    stops = {kind: executor.stop_error(run, executor.Outcome(kind, "why.", signal.SIGTERM, 96))
             for kind in ("setup", "diverged", "preempted", "paused")}
    assert {k: errors.exit_status(e) for k, e in stops.items()} == {
        "setup": 2, "diverged": 1, "preempted": 143, "paused": 75}
    assert str(stops["setup"]) == "hybrid seed 1: why."
    assert stops["preempted"].examples_seen == 96
    assert str(stops["preempted"]).startswith(f"hybrid seed 1 ({tmp_path}): why. Finished runs")


def test_a_changed_experiment_is_refused(tmp_path, fake_train):
    _reproduce(tmp_path)
    with pytest.raises(errors.ConfigError) as e:
        _reproduce(tmp_path, "--config.schedule.learning_rate=0.1")
    assert errors.exit_status(e.value) == 2
    assert "different experiment" in str(e.value)
    assert "learning_rate: 0.05 -> 0.1" in str(e.value)


def test_overrides_reach_every_run(tmp_path, fake_train):
    _reproduce(tmp_path, "--config.weight_decay=0.001", seeds=1)
    assert [(c.variant, c.seed, c.weight_decay, c.dataset_size) for c, _, _ in fake_train] == [
        ("decay_lr", 0, 0.001, 2000), ("hybrid", 0, 0.001, 2000)]


def test_sgd_keeps_g_and_skips_increased_momentum(tmp_path, fake_train, capsys):
    variants = ["decay_lr", "hybrid", "increased_momentum"]
    _reproduce(tmp_path, optimizer="sgd", variants=variants, seeds=1)
    out = capsys.readouterr().out
    assert "note: increased_momentum skipped with --optimizer=sgd" in out
    assert [c.variant for c, _, _ in fake_train] == ["decay_lr", "hybrid"]
    for config, workdir, _ in fake_train:
        assert workdir.startswith(str(tmp_path / "sgd"))
        assert config.optimizer == "sgd" and config.schedule.momentum == 0.0
        assert config.schedule.learning_rate == pytest.approx(0.05 / (1 - 0.9))
        original = _load(config.variant)
        assert schedule_from_config(config).noise_scales() == pytest.approx(
            schedule_from_config(original).noise_scales())
    summary = json.loads((tmp_path / "sgd" / "summary.json").read_text())
    assert list(summary["variants"]) == ["decay_lr", "hybrid"] and summary["optimizer"] == "sgd"
    assert "increased_momentum skipped" in (tmp_path / "sgd" / "report.md").read_text()


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_learning_rate_b1_and_increased_momentum_skipped(tmp_path, fake_train, capsys,
                                                              optimizer):
    _reproduce(tmp_path, optimizer=optimizer, seeds=1,
               variants=["decay_lr", "hybrid", "increased_momentum"])
    assert (f"note: increased_momentum skipped with --optimizer={optimizer}: it raises the "
            "momentum") in capsys.readouterr().out  # b1 does not scale Adam's step
    assert [c.variant for c, _, _ in fake_train] == ["decay_lr", "hybrid"]
    for config, workdir, _ in fake_train:
        assert workdir.startswith(str(tmp_path / optimizer))
        assert config.optimizer == optimizer
        assert config.schedule.learning_rate == pytest.approx(1e-3)  # 0.002 · 0.05 / (1 − 0.9)
        assert config.schedule.momentum == 0.9
    # the hybrid's batch step follows Adam's square-root rule: η ÷ √factor with B × factor
    hybrid = schedule_from_config(fake_train[1][0])
    assert hybrid.noise_model == "adam_sqrt"
    assert hybrid.stages[1].learning_rate == pytest.approx(
        1e-3 / math.sqrt(fake_train[1][0].schedule.factor))


def test_the_configs_own_optimizer_writes_into_workdir(tmp_path, fake_train):
    _reproduce(tmp_path, optimizer="momentum", seeds=1)
    assert (tmp_path / "summary.json").exists() and not (tmp_path / "momentum").exists()


def test_cifar10_config_needs_nothing_mnist_specific(tmp_path, fake_train):
    experiments.reproduce(config_lib.ConfigArgs("configs/cifar10_wrn16_4.py"), str(tmp_path),
                          variants=["decay_lr", "increase_batch"], seeds=1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["optimizer"] == "nesterov"
    assert summary["variants"]["decay_lr"]["updates"] == 78_125  # docs/paper.md: ~80k
    # docs/paper.md: ~29k; the stream rounding (README: update counts) makes it 28,876
    assert summary["variants"]["increase_batch"]["updates"] == 28_876
    assert "2.7× fewer" in (tmp_path / "report.md").read_text()


# ------------------------------------------------------------ aggregation
def _recs(accs, epochs=None, updates_per_epoch=10, overshoot=0.0, losses=None, later=None):
    """Schedule-shaped records; ``later``: the fields from the second evaluation on (stage 1)."""
    epochs = epochs or list(range(1, len(accs) + 1))
    losses = losses or [1.0 - a for a in accs]
    out = []
    for i, (e, a, loss) in enumerate(zip(epochs, accs, losses)):
        r = {"epoch": e + overshoot, "updates": updates_per_epoch * e, "test_accuracy": a,
             "train_loss": loss, "wall_time": 5.0 * e, "compiles": 1, "stage": 0,
             "batch_size": 32, "learning_rate": 0.1, "momentum": 0.9}
        out.append({**r, **(later or {})} if i >= 1 else r)
    return out


def test_mean_sd():
    assert report.mean_sd([90.0, 92.0]) == pytest.approx((91.0, math.sqrt(2)))
    assert report.mean_sd([1.0, 2.0, 3.0, 4.0]) == pytest.approx(
        (2.5, statistics.stdev([1, 2, 3, 4])))
    assert report.mean_sd([7.0]) == (7.0, 0.0)


def test_updates_ratio_and_its_words():
    assert report.updates_ratio(50_000, 18_480) == pytest.approx(2.7056, abs=1e-4)
    assert report.ratio_text(50_000 / 18_480) == "2.7× fewer"
    assert report.ratio_text(1.0) == "same"
    assert report.ratio_text(0.5) == "2.0× more"
    assert report.ratio_text(None) == "—"


def test_seed_curve_mean_and_band():
    c = report.seed_curve([_recs([0.5, 0.7]), _recs([0.6, 0.9])], "test_accuracy")
    assert c["epoch"].tolist() == [1, 2]
    assert c["mean"].tolist() == pytest.approx([0.55, 0.8])
    assert c["lo"].tolist() == [0.5, 0.7] and c["hi"].tolist() == [0.6, 0.9]


def test_summarize_judges_paired_seeds_window_by_window():
    decay = {"stage": 1, "learning_rate": 0.02}
    grow = {"stage": 1, "batch_size": 160}
    ref_loss = [[1.0, 0.5, 0.3], [0.9, 0.45, 0.27]]
    ref_acc = [[0.50, 0.80, 0.90], [0.52, 0.82, 0.92]]
    runs = {
        "decay_lr": [_recs(ref_acc[s], losses=ref_loss[s], updates_per_epoch=100, later=decay)
                     for s in (0, 1)],
        # seed s: loss ×1.01 / ×1.02 and accuracy +0.10 / +0.12 points after the change
        "increase_batch": [_recs([a + (d if i else 0) for i, a in enumerate(ref_acc[s])],
                                 losses=[x * (f if i else 1) for i, x in enumerate(ref_loss[s])],
                                 updates_per_epoch=40, later=grow)
                           for s, f, d in ((0, 1.01, 0.001), (1, 1.02, 0.0012))],
        # a control whose loss is ×1.50 / ×1.52 the reference's after the change
        "constant_lr": [_recs(ref_acc[s], losses=[x * (f if i else 1)
                                                  for i, x in enumerate(ref_loss[s])],
                              updates_per_epoch=100, later={"stage": 0})
                        for s, f in ((0, 1.50), (1, 1.52))],
    }
    roles = {"decay_lr": "reference", "increase_batch": "equivalent", "constant_lr": "control"}
    s = report.summarize(runs, [0, 1], 1.0, roles=roles)
    ib = s["variants"]["increase_batch"]
    assert ib["final_test_accuracy_mean"] == pytest.approx(91.11)
    assert ib["updates"] == 120 and ib["updates_ratio_vs_reference"] == pytest.approx(2.5)
    assert ib["wall_time_mean"] == 15.0 and ib["compiles"] == 1
    # one window (epochs 2-3: both runs in stage 1 from the first differing evaluation)
    [w] = ib["windows"]
    assert (w["from_epoch"], w["to_epoch"], w["evaluations"]) == (2, 3, 2)
    d = [math.log(1.01), math.log(1.02)]
    half = 6.313751514675 * statistics.stdev(d) / math.sqrt(2)  # t(0.95, 1 degree of freedom)
    assert (w["loss"]["low"], w["loss"]["high"]) == pytest.approx(
        (statistics.mean(d) - half, statistics.mean(d) + half), rel=1e-4)
    assert w["accuracy"]["per_seed"] == pytest.approx([0.10, 0.12])
    assert w["accuracy"]["high"] == pytest.approx(0.11 + 6.313751514675 * 0.01, rel=1e-4)
    assert ib["margin_units"] == pytest.approx(w["accuracy"]["high"] / 0.25)
    assert ib["verdict"] == "equivalent"
    ctl = s["variants"]["constant_lr"]
    assert ctl["windows"][0]["loss"]["mean"] == pytest.approx(
        statistics.mean([math.log(1.5), math.log(1.52)]))
    assert ctl["verdict"] == "distinguishable" and s["agreement"]["result"] == "reproduced"
    text = " ".join(report.summary_sentences(s))
    assert "**Reproduced**: every equivalent schedule (increase_batch) is equivalent" in text
    assert ("increase_batch (equivalent) ends at 91.11 % against decay_lr's 91.00 % (+0.11 "
            "points) with 120 parameter updates (2.5× fewer than decay_lr's 300); equivalent"
            ) in text
    assert "Closest call: increase_batch (equivalent)" in text
    # the same control with the reference's own records cannot be told apart: not reproduced
    runs["constant_lr"] = [[{**r, "stage": 0, "learning_rate": 0.1} for r in recs]
                           for recs in runs["decay_lr"]]
    same = report.summarize(runs, [0, 1], 1.0, roles=roles)
    assert same["variants"]["constant_lr"]["verdict"] == "indistinguishable"
    assert same["agreement"]["result"] == "not reproduced"
    assert "constant_lr (control) is indistinguishable" in report.result_sentence(same)
    # without the reference there is nothing to compare against
    alone = report.summarize({"increase_batch": runs["increase_batch"]}, [0, 1], 1.0)
    assert alone["reference"] is None
    assert alone["variants"]["increase_batch"]["updates_ratio_vs_reference"] is None
    assert "was not among the variants" in report.summary_sentences(alone)[0]
    assert "| increase_batch | equivalent | 91.11 ± 1.43 | 120 | — |" in report.render_report(
        alone)


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("change, message", [
    (dict(variants=["decay_lr", "bogus"]), "--variants: bogus: unknown variant 'bogus'"),
    (dict(variants=""), "--variants is empty"),
    (dict(seeds=0), "--seeds=0: expected a whole number in [1, 1000]"),
    (dict(seeds=10**9), "--seeds=1000000000: expected a whole number in [1, 1000]"),
    (dict(jobs=0), "--jobs=0: expected a whole number >= 1."),
    (dict(optimizer="rmsprop"), "--optimizer=rmsprop: unknown optimizer; choose one of sgd, "),
    (dict(config=config_lib.ConfigArgs("configs/mnist1d.py", (("schedule.nope", "1"),))),
     "unknown field config.schedule.nope"),
    (dict(config=config_lib.ConfigArgs("configs/mnist1d.py:hybrid")), "without a variant"),
    (dict(config=config_lib.ConfigArgs("")), "--config is required"),
    (dict(workdir=""), "--workdir is required"),
])
def test_bad_input_raises_one_config_error_before_anything_runs(tmp_path, change, message):
    kwargs = dict(config=_config(), workdir=str(tmp_path), variants=VARIANTS, seeds=1) | change
    with pytest.raises(errors.ConfigError) as e:
        experiments.reproduce(kwargs.pop("config"), kwargs.pop("workdir"), **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not any(tmp_path.iterdir())  # nothing ran


@pytest.mark.parametrize("flag, message", [
    ("--variants=nope", "error: --variants: nope: unknown variant 'nope'"),
    ("--seeds=two", "error: flag --seeds=two: "),  # absl's own flag check
    ("--jobs=0", "error: --jobs=0: expected a whole number >= 1."),
    ("--frobnicate", "error: Unknown command line flag 'frobnicate'"),
])
def test_the_command_exits_2_with_one_line_and_no_traceback(tmp_path, flag, message):
    p = _command("--config=configs/mnist1d.py", f"--workdir={tmp_path}", flag)
    assert p.returncode == 2
    assert p.stderr.startswith(message) and p.stderr.count("\n") == 1, p.stderr
    assert not any(tmp_path.iterdir())


def test_a_finished_run_from_before_a_field_is_reused_if_the_table_knows_it(tmp_path, fake_train):
    """A DONE written before a config field existed: reused when ``ABSENT_MEANS`` says what
    its absence meant, else refused naming the field (not '<absent> -> value')."""
    _reproduce(tmp_path, variants="hybrid", seeds=1)
    marker = tmp_path / "hybrid" / "seed0" / "DONE"

    def drop(*path):
        done = json.loads(marker.read_text())
        node = done["fingerprint"]["config"]
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        marker.write_text(json.dumps(done))

    drop("schedule", "noise_cap")
    _reproduce(tmp_path, variants="hybrid", seeds=1)
    assert len(fake_train) == 1  # reused, not retrained
    drop("batch_norm_batch_size")
    with pytest.raises(errors.ConfigError) as e:
        _reproduce(tmp_path, variants="hybrid", seeds=1)
    assert errors.exit_status(e.value) == 2
    assert "written before config.batch_norm_batch_size (now 0) existed" in str(e.value)
