"""The measured cap: a boundary's batch increase happens only while B ≤ c × B_simple."""

import numpy as np
import pytest

from noise_scale import default_config
from noise_scale.config import validation
from noise_scale.errors import ConfigError
from noise_scale.schedule import schedule_from_config
from noise_scale.schedule.rules import capped_schedule


def cap_config(rule="increase_batch", **fields):
    c = default_config.get_config()
    c.dataset_size, c.measure_noise_scale = 40000, True
    s = c.schedule
    s.rule, s.batch_size, s.learning_rate, s.momentum = rule, 32, 0.1, 0.9
    s.total_epochs, s.boundaries, s.factor, s.noise_cap = 4.0, (1.0, 2.0, 3.0), 5.0, 2.0
    for k, v in fields.items():
        setattr(s, k, v)
    return c


def stages(schedule):
    return [(st.batch_size, st.learning_rate) for st in schedule.stages]


def capped_batch_sizes(config) -> list[int]:
    """Every batch size a capped run may take, whatever it decides: B0 grown j times for
    j = 0 … boundaries (the first j boundaries grow it, the rest are ε steps)."""
    n = len(config.schedule.boundaries)
    return sorted({st.batch_size for j in range(n + 1)
                   for st in capped_schedule(config, [True] * j + [False] * (n - j)).stages})


def test_no_decisions_is_the_rule_itself_bit_for_bit():
    c = cap_config()
    assert capped_schedule(c, ()) == capped_schedule(c, [True] * 3) == schedule_from_config(c)


def test_a_blocked_boundary_takes_its_step_by_learning_rate():
    c = cap_config()
    assert stages(capped_schedule(c, [True, False])) == [
        (32, 0.1), (160, 0.1), (160, 0.1 / 5), (800, 0.1 / 5)]  # later boundaries grow again
    hybrid = cap_config("hybrid", max_batch_size=160)
    assert stages(capped_schedule(hybrid, [False])) == [
        (32, 0.1), (32, 0.1 / 5), (160, 0.1 / 5), (160, 0.1 / 25)]  # the hybrid cap still holds
    # the targets (g per stage) are the reference's whatever is decided
    assert capped_schedule(c, [False] * 3).target_noise == schedule_from_config(c).target_noise


def test_every_batch_size_a_run_may_take_is_listed():
    assert capped_batch_sizes(cap_config()) == [32, 160, 800, 4000]
    assert capped_batch_sizes(cap_config("hybrid", max_batch_size=160)) == [32, 160]


def test_every_update_measures_before_a_boundary_where_the_cap_decides():
    from noise_scale import cap, parallel

    c = cap_config()  # B = 32 → 160 → 800 → 4,000 at epochs 1, 2, 3 of 40,000 examples
    c.noise_scale_dense_epochs = 0.25
    plans = capped_schedule(c, ()).plan(8, c.max_device_batch)
    # the last quarter epoch of each stage before a boundary; none in the last stage
    assert [cap.dense_from(c, plans, p) for p in plans] == [30_000, 70_000, 110_000, 160_000]
    c.noise_scale_dense_epochs = 2.0  # longer than a stage: the whole stage
    assert [cap.dense_from(c, plans, p) for p in plans][:3] == [0, 40_000, 80_000]
    hybrid = cap_config("hybrid", max_batch_size=160)
    hybrid.noise_scale_dense_epochs = 0.25
    plans = capped_schedule(hybrid, ()).plan(8, c.max_device_batch)
    # B stops at 160 after the first boundary: no decision, no dense stretch, after it
    assert [cap.dense_from(hybrid, plans, p) for p in plans] == [30_000, 80_000, 120_000, 160_000]
    hybrid.schedule.noise_cap = 0.0  # no cap: nobody decides
    assert cap.dense_from(hybrid, plans, plans[0]) == 40_000
    step = parallel.StageStep("plain", "measuring", every=10)
    assert [step.measures(u) for u in (3, 10)] == [False, True]
    assert step.measures(3, dense=True)
    assert not parallel.StageStep("plain", None).measures(3, dense=True)


@pytest.mark.parametrize("change,words", [
    (dict(optimizer="adam"), "preconditioned"),
    (dict(measure_noise_scale=False), "measure_noise_scale"),
    (dict(rule="decay_lr"), "rule is increase_batch or hybrid"),
])
def test_the_cap_is_refused_where_it_means_nothing(change, words):
    c = cap_config()
    for k, v in change.items():
        if k == "rule":
            c.schedule.rule = v
        else:
            setattr(c, k, v)
    with pytest.raises(ConfigError, match=words) as e:
        validation.validate_config(c)
    assert "config.schedule.noise_cap" in str(e.value)


# The cap in a run (small MNIST-1D, 8 devices: B = 32 → 160 → 800 → 4,000 by the rule) -----

from noise_scale import train  # noqa: E402
from noise_scale.errors import Preempted  # noqa: E402
from tests.helpers import comparable, small_config  # noqa: E402

CAP_FIELDS = ("cap_held", "cap_decisions", "cap_bounds")
NOISE_FIELDS = ("noise_scale_measured", "noise_scale_measured_se", "noise_scale_measurements",
                "gradient_norm_sq", "gradient_noise_trace", "gradient_norm_sq_raw",
                "gradient_noise_trace_raw")


def capped(data_dir, noise_cap):
    return small_config("increase_batch", data_dir, **{"schedule.noise_cap": noise_cap})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("mnist1d"))
    out = {"data_dir": data_dir}
    for name, c in (("plain", 0.0), ("loose", 1e6), ("tight", 1.0)):
        config = capped(data_dir, c) if c else small_config("increase_batch", data_dir)
        out[name] = train.train_and_evaluate(config, str(tmp_path_factory.mktemp(name)))
    return out


@pytest.mark.slow  # three capped runs (~60 s); the cap's rule has fast tests above
def test_a_cap_that_never_binds_is_the_rule_itself(runs):
    # the training numbers, not the measurement: before each boundary where the cap decides,
    # a capped run measures on every update (here each whole 1-epoch stage but the last)
    loose = [{k: v for k, v in r.items() if k not in CAP_FIELDS + NOISE_FIELDS}
             for r in runs["loose"]]
    plain = [{k: v for k, v in r.items() if k not in NOISE_FIELDS} for r in runs["plain"]]
    assert comparable(loose) == comparable(plain)
    assert runs["loose"][-1]["cap_decisions"] == "grew,grew,grew"
    dense = [r["noise_scale_measurements"] for r in runs["loose"][:3]]
    sparse = [r["noise_scale_measurements"] for r in runs["plain"][:3]]
    assert all(d > 2 * s for d, s in zip(dense, sparse)), (dense, sparse)


@pytest.mark.slow  # three capped runs (~60 s); the cap's rule has fast tests above
def test_a_tight_cap_holds_the_batch_and_takes_the_step_by_learning_rate(runs):
    tight, plain = runs["tight"], runs["plain"]
    held = tight[-1]["cap_decisions"].split(",")
    assert tight[-1]["cap_held"] == held.count("held") >= 1
    first = held.index("held") + 1  # the first stage whose B the cap kept
    r = next(r for r in tight if r["stage"] == first)
    before = next(r for r in tight if r["stage"] == first - 1)
    assert r["batch_size"] == before["batch_size"]  # B kept ...
    assert r["learning_rate"] == pytest.approx(before["learning_rate"] / 5, rel=1e-6)  # ε ÷ 5
    # ... and the noise scale is the rule's stage's, up to the approximate form's −1 (×5 in B
    # is ×5 in g only where N/B ≫ 1: (4000/32 − 1)/(4000/160 − 1)/5 = 1.033 here)
    want = next(p for p in plain if p["stage"] == first)["noise_scale"]
    assert r["noise_scale"] == pytest.approx(want, rel=0.04)
    # never a batch size the plan did not list, never more compiles than its programs:
    # two per size (the plain step, and the one measuring every k-th update)
    listed = capped_batch_sizes(capped(runs["data_dir"], 1.0))
    assert {r["batch_size"] for r in tight} <= set(listed)
    assert tight[-1]["compiles"] == 2 * len({r["batch_size"] for r in tight}) <= 2 * len(listed)
    assert tight[-1]["updates"] > plain[-1]["updates"]  # held stages take more updates


@pytest.mark.slow  # three capped runs (~60 s); the cap's rule has fast tests above
def test_resume_after_a_held_boundary_replays_the_decisions(runs, tmp_path, monkeypatch):
    tight = runs["tight"]
    first = tight[-1]["cap_decisions"].split(",").index("held") + 1
    stage_records = [r for r in tight if r["stage"] == first]
    stop_at = stage_records[0]["examples_seen"] + 32  # inside the held stage
    monkeypatch.setenv("NOISE_SCALE_SIGTERM_AT", str(stop_at))
    with pytest.raises(Preempted):
        train.train_and_evaluate(capped(runs["data_dir"], 1.0), str(tmp_path))
    monkeypatch.delenv("NOISE_SCALE_SIGTERM_AT")
    resumed = train.train_and_evaluate(capped(runs["data_dir"], 1.0), str(tmp_path))
    assert comparable(resumed) == comparable(tight)


@pytest.mark.slow  # three capped runs (~60 s); the cap's rule has fast tests above
def test_the_report_lists_each_decision(runs):
    from noise_scale.experiments import cap_report

    assert cap_report.cap_decisions({"plain": [runs["plain"]]}) == []
    header, rule, *rows = cap_report.cap_decisions({"tight": [runs["tight"]]})
    assert header.startswith("| run | boundary | new B | B_simple read | 95 % lower bound")
    reads = runs["tight"][-1]["cap_bounds"]  # what each decision read, in the records
    decided = [(k, r) for k, r in enumerate(reads, start=1) if r is not None]
    assert len(rows) == len(decided) >= 1
    for row, (k, read) in zip(rows, decided):
        assert row.startswith(f"| tight seed 0 | {k} | {read['batch_size']:,} |")
        assert ("held" in row) == (not read["grew"])
        # the outcome is the rule applied to the bound it read: grow iff new B ≤ c × bound
        assert read["grew"] == (read["cap"] is not None and read["batch_size"] <= read["cap"])
        assert f"{runs['tight'][-1]['updates']:,} |" in row


def measured(g2_values, trace_values):
    """Averages of nearly equal weights over the given raw estimates."""
    from noise_scale import gns

    a = gns.Averages(1e12)
    for g2, trace in zip(g2_values, trace_values):
        a.update(g2, trace, 64)
    return a


def alternating(mean, spread, n=100):
    return [mean + spread * (-1) ** i for i in range(n)]


@pytest.mark.parametrize("g2_spread, g2_mean, grows", [
    (0.1, 1.0, True),  # B_simple 1,000 well measured: bound ~983, c × bound ≥ 160
    (3.0, 1.0, False),  # the same B_simple, |G|² noisy: bound ~670, 0.2 × 670 < 160
])
def test_the_cap_grows_on_its_lower_bound_not_on_the_estimate(g2_spread, g2_mean, grows):
    from noise_scale import cap

    c = cap_config(noise_cap=0.2)  # the rule raises B from 32 to 160 at boundary 1
    averages = measured(alternating(g2_mean, g2_spread), alternating(1000.0, 10.0))
    d = cap.decide(c, [], averages, 1)
    assert d.measured == pytest.approx(1000.0, rel=1e-6)
    assert 0.2 * d.measured >= d.batch_size == 160  # the estimate alone would grow ...
    assert d.grow == grows and d.cap == pytest.approx(0.2 * d.lower)
    assert (d.lower > 800) == grows  # ... the bound decides


@pytest.mark.parametrize("averages", [
    "never measured", "one measurement", "|G|² not shown positive", "|G|² negative"])
def test_without_a_positive_bound_the_cap_holds_with_a_warning(averages, caplog):
    import logging
    import math

    from noise_scale import cap, gns

    averages = {
        "never measured": gns.Averages(1e4),
        "one measurement": measured([1.0], [1000.0]),
        "|G|² not shown positive": measured(alternating(0.1, 3.0), alternating(1000.0, 10.0)),
        "|G|² negative": measured(alternating(-0.5, 0.1), alternating(1000.0, 10.0)),
    }[averages]
    with caplog.at_level(logging.WARNING):
        d = cap.decide(cap_config(noise_cap=1e6), [], averages, 1)
    assert not d.grow and math.isnan(d.lower) and math.isnan(d.cap)
    assert "B holds at 32 instead of growing to 160" in caplog.text


def test_the_lower_bound_covers_the_true_noise_scale_95_percent_of_the_time():
    # B = 50 true; |G|² noisy (s.d. 2 per measurement, 150 measurements): the bound lies
    # above 50 in ~5 % of repeats (400: 20 ± 4.4 expected)
    rng = np.random.default_rng(4)
    cov = [[2.0 ** 2, 0.3 * 2 * 10], [0.3 * 2 * 10, 10.0 ** 2]]
    above = 0
    for _ in range(400):
        draws = rng.multivariate_normal([1.0, 50.0], cov, size=150)
        above += measured(draws[:, 0], draws[:, 1]).lower_bound(1.645) > 50
    assert 8 <= above <= 36, above
