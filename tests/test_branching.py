"""The branching probe in the training loop (``train.branching``) and the measured ladder:
the probe never changes the run it measures, its readings and the ladder's batches replay
on resume, and its bad inputs are refused before any compile."""

import json

import pytest

from noise_scale import train
from noise_scale.errors import ConfigError, Preempted
from noise_scale.schedule import schedule_from_config
from noise_scale.train import branching
from tests.helpers import comparable, small_config

PROBE_FIELDS = ("probe_examples", "probe_fraction", "probe_compiles", "probe_cbs", "probe_reads",
                "measured_batches")


def cosine(data_dir, **overrides):
    """N = 1,000, 2 epochs of a cosine at B = 32; a probe every half epoch (3 probes)."""
    return small_config("decay_lr", data_dir, dataset_size=1000, **{
        "schedule.shape": "cosine", "schedule.boundaries": (), "schedule.total_epochs": 2.0,
        "schedule.max_batch_size": 256, "eval_every_epochs": 0.25,
        "checkpoint_every_epochs": 0.25, "probe.every_epochs": 0.5,
        "probe.branch_examples": 256, "probe.repeats": 1, "probe.eval_examples": 256,
        **overrides})


def measured(data_dir, **overrides):
    """The measured ladder with a tolerance no branch exceeds: B grows ×8 at every probe
    up to the cap (32 → 256 → 256 ...), a deterministic ladder to resume inside."""
    return cosine(data_dir, **{"schedule.rule": "measured", "probe.tolerance": 1e6,
                               **overrides})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("mnist1d"))


@pytest.fixture(scope="module")
def ladder(data_dir, tmp_path_factory):
    return train.train_and_evaluate(measured(data_dir), str(tmp_path_factory.mktemp("ladder")))


def without_compiles(records):
    return [{k: v for k, v in r.items() if k != "probe_compiles"} for r in comparable(records)]


def without_probe(records):
    return [{k: v for k, v in r.items() if k not in PROBE_FIELDS} for r in records]


def test_the_probe_never_changes_the_run_it_measures(data_dir, tmp_path):
    off = train.train_and_evaluate(cosine(data_dir, **{"probe.every_epochs": 0.0}),
                                   str(tmp_path / "off"))
    on = train.train_and_evaluate(cosine(data_dir), str(tmp_path / "on"))
    assert all(k not in r for r in off for k in PROBE_FIELDS)
    # every field of the run without the probe, equal (the compiles too: the probe's own
    # programs are counted apart), plus the probe's
    assert without_probe(comparable(on)) == comparable(off)
    assert [r["compiles"] for r in on] == [r["compiles"] for r in off]
    reads = on[-1]["probe_reads"]
    assert [r["examples_seen"] for r in reads] == [512, 1024, 1504]  # first steps at or after epochs 0.5, 1, 1.5
    assert all(r["batch_sizes"] == [32, 64, 128, 256] and r["chosen"] is None for r in reads)
    assert on[-1]["probe_examples"] == 3 * 4 * 256  # probes × factors × T (one repeat)
    assert on[-1]["probe_fraction"] == pytest.approx(3 * 4 * 256 / on[-1]["examples_seen"])
    assert on[-1]["probe_compiles"] == 4  # one plain program per branch batch


@pytest.mark.slow  # the ladder run (~16 s) and its resume: CI's slow tier
def test_the_ladder_grows_where_the_probe_reads_and_keeps_the_noise_scale(ladder):
    assert ladder[-1]["measured_batches"] == "256,256,256"
    assert [r["batch_size"] for r in ladder] == [32, 32] + [256] * (len(ladder) - 2)
    assert ladder[1]["examples_seen"] == 512  # the first probe's point
    first = ladder[-1]["probe_reads"][0]
    assert first["cbs"] == 256 and first["censored"] and first["chosen"] == 256
    # each record's noise scale (of its last update) is the fixed-B cosine's there: ε grew
    # with B, ×(N/32 − 1)/(N/256 − 1)
    fixed = schedule_from_config(cosine(""))
    for r in ladder[:-1]:
        last_update = r["examples_seen"] - r["batch_size"]
        assert r["noise_scale"] == pytest.approx(fixed.noise_scale_at(last_update), rel=1e-5)
    grown = next(r for r in ladder if r["batch_size"] == 256)
    assert grown["learning_rate"] == pytest.approx(
        fixed.learning_rate_at(grown["examples_seen"] - 256) * (1000 / 32 - 1) / (1000 / 256 - 1),
        rel=1e-5)
    assert ladder[-1]["compiles"] == 2 * 2  # B = 32 and 256, plain and measuring each


@pytest.mark.slow  # the ladder run (~16 s) and its resume: CI's slow tier
def test_a_run_killed_during_a_probe_resumes_to_the_same_records(data_dir, ladder, tmp_path,
                                                                 monkeypatch):
    calls = {"n": 0}
    loss = branching.Prober.loss

    def dies_in_the_second_probe(self, *args):
        calls["n"] += 1
        # the first probe (B = 32, four factors) reads 5 losses; the second (B = 256, only
        # ×1 fits T = 256) reads the fork's, then dies reading its branch's
        if len(self.reads) == 1 and calls["n"] > 6:
            raise KeyboardInterrupt
        return loss(self, *args)

    monkeypatch.setattr(branching.Prober, "loss", dies_in_the_second_probe)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(measured(data_dir), str(tmp_path))
    monkeypatch.setattr(branching.Prober, "loss", loss)
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert written[-1]["measured_batches"] == "256"  # one decision was taken and written
    resumed = train.train_and_evaluate(measured(data_dir), str(tmp_path))
    # probe_compiles is a count of work done, as compiles: the resumed process compiles the
    # B = 256 branch program again (4 before the kill, 5 after)
    assert [r["probe_compiles"] for r in resumed[4:]] == [5] * (len(resumed) - 4)
    assert without_compiles(resumed) == without_compiles(ladder)
    assert resumed[-1]["probe_reads"] == ladder[-1]["probe_reads"]


@pytest.mark.slow  # a third ladder run (~10 s); the mid-probe resume above is the harder case
def test_a_run_stopped_inside_a_grown_stage_replays_the_ladder(data_dir, ladder, tmp_path,
                                                               monkeypatch):
    monkeypatch.setenv("NOISE_SCALE_SIGTERM_AT", str(512 + 2 * 256))  # B = 256 by then
    with pytest.raises(Preempted):
        train.train_and_evaluate(measured(data_dir), str(tmp_path))
    monkeypatch.delenv("NOISE_SCALE_SIGTERM_AT")
    resumed = train.train_and_evaluate(measured(data_dir), str(tmp_path))
    assert without_compiles(resumed) == without_compiles(ladder)


@pytest.mark.parametrize("field,value,words", [
    ("probe.branch_examples", 200, "not a multiple of B0 × the largest factor = 32 × 8 = 256"),
    ("probe.eval_examples", 100, "does not divide over 8 devices"),
])
def test_probe_inputs_that_cannot_run_are_refused_before_any_compile(data_dir, tmp_path,
                                                                      field, value, words):
    with pytest.raises(ConfigError, match=words) as e:
        train.train_and_evaluate(cosine(data_dir, **{field: value}), str(tmp_path))
    assert e.value.field == f"config.{field}"
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_ladder_with_no_room_to_grow_is_refused(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="no batch to grow to"):
        train.train_and_evaluate(measured(data_dir, **{"schedule.max_stages": 1}),
                                 str(tmp_path))


@pytest.mark.parametrize("compare,losses,expected", [
    ("ratio", [0.2, 0.22, 0.3], (0.0, 0.1, 0.5)),
    ("progress", [0.2, 0.22, 0.3], (0.0, 0.2, 1.0)),  # fork 0.3: progress 0.1
    ("progress", [0.31, 0.3], None),  # the ×1 branch did not lower the loss
])
def test_what_a_larger_batch_gives_up(compare, losses, expected):
    out = branching.excess(compare, 0.3, losses)
    assert out == (None if expected is None else pytest.approx(expected))


@pytest.mark.slow  # the ladder run (~16 s) and its resume: CI's slow tier
def test_reproduce_knows_where_a_measured_ladder_ends(data_dir, ladder):
    """`reproduce` marks a run done where its schedule ends; a measured ladder's end is
    decided as it runs (B = 256 from epoch 0.5: 2,048, where B = 32 throughout ends at
    2,016), and is read from the ladder its last record names."""
    from noise_scale.experiments.runs import RunSpec

    config = measured(data_dir)
    undecided = schedule_from_config(config).plan(8, config.max_device_batch)[-1].end_example
    run = RunSpec("measured", 0, config, None, undecided, {})
    assert undecided == 2016
    assert run.end(ladder) == ladder[-1]["examples_seen"] == 2048
    assert run.end([{"examples_seen": 2016}]) == 2016  # no decision recorded: the fixed one


def test_the_measured_ladder_table_in_docs_is_the_committed_records():
    """docs/probe.md's results table, row by row, from docs/mnist1d_cosine's records."""
    import pathlib

    from noise_scale.metrics import read_metrics

    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "docs" / "probe.md").read_text()
    fewer = []
    for seed in range(5):
        last = read_metrics(str(root / "docs/mnist1d_cosine/cosine_measured" / f"seed{seed}"))[-1]
        row = (f"| {seed} | {last['measured_batches'].replace(',', ', ')} | "
               f"{last['updates']:,} | {100 * (1 - last['updates'] / 50_000):.1f} % | "
               f"{100 * last['probe_fraction']:.1f} % | {100 * last['test_accuracy']:.2f} % |")
        assert row in text, row
        assert last["probe_fraction"] <= 0.10  # the cost bar
        fewer.append(100 * (1 - last["updates"] / 50_000))
    span = f"{min(fewer):.0f}–{max(fewer):.0f} % fewer updates"  # as docs/schedules.md says
    assert span in (root / "docs" / "schedules.md").read_text().replace("\n", " ")
    assert span in text.replace("\n", " ")


@pytest.mark.parametrize("model,expected", [
    ("sgd", (40_000 / 32 - 1) / (40_000 / 128 - 1)),  # B ∝ ε, exact form: ≈ ×4
    ("adam_sqrt", 2.0),  # Adam's square-root rule: ×√4
])
def test_a_branch_runs_at_the_rule_s_learning_rate_for_its_batch(model, expected):
    assert branching.lr_factor(model, 32, 128, 40_000, 0.9) == pytest.approx(expected)
