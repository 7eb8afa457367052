"""Learning-rate shapes and their conversion into staged batch schedules (the ladder)."""

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from noise_scale import config_lib, gns, theory, train
from noise_scale.errors import Preempted, ScheduleError
from noise_scale.schedule import schedule_from_config, schedule_table, to_dict
from noise_scale.schedule.ladder import best_ladder, update_bound
from noise_scale.schedule.shapes import Shape
from tests.helpers import comparable, small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 1000  # optax counts steps: one "step" per 1/1000 of training here


def mnist(variant, **overrides):
    return config_lib.load_config(f"configs/mnist1d_cosine.py:{variant}",
                                  [(k, str(v)) for k, v in overrides.items()])


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("shape,reference", [
    (Shape("cosine", 10.0, 2.0, final_fraction=0.1),
     optax.warmup_cosine_decay_schedule(0.0, 1.0, 200, STEPS, end_value=0.1)),
    (Shape("linear", 10.0, final_fraction=0.05), optax.linear_schedule(1.0, 0.05, STEPS)),
    (Shape("polynomial", 10.0, power=3.0, final_fraction=0.0),
     optax.polynomial_schedule(1.0, 0.0, 3.0, STEPS)),
    (Shape("exponential", 10.0, final_fraction=0.01),
     optax.exponential_decay(1.0, STEPS, 0.01)),
])
def test_shapes_equal_optax_on_host_and_device(shape, reference):
    steps = np.arange(0, STEPS + 1, 7)
    epochs = steps * shape.total_epochs / STEPS
    expected = np.asarray([float(reference(int(t))) for t in steps])
    if shape.warmup_epochs:  # optax ramps over the warm-up; s is flat there (warmed_up ramps)
        keep = epochs >= shape.warmup_epochs
        epochs, expected = epochs[keep], expected[keep]
    np.testing.assert_allclose(shape.value(epochs), expected, atol=1e-6)
    device = np.asarray(shape.value(jnp.asarray(epochs, jnp.float32), xp=jnp))
    np.testing.assert_allclose(device, expected, atol=2e-6)


def test_wsd_and_piecewise():
    wsd = Shape("wsd", 10.0, decay_fraction=0.2, final_fraction=0.0)
    np.testing.assert_allclose(wsd.value(np.array([0.0, 7.9, 8.0, 9.0, 10.0])),
                               [1, 1, 1, 0.5, 0], atol=1e-12)
    knots = ((0.0, 0.1), (2.0, 0.4), (6.0, 0.2), (10.0, 0.0))
    pw = Shape("piecewise", 10.0, knots=knots)
    assert pw.peak_learning_rate == 0.4 and pw.last_rise() == 2.0
    np.testing.assert_allclose(pw.value(np.array([1.0, 4.0, 8.0])), [0.625, 0.75, 0.25])
    assert pw.earliest_at_most(0.5) == pytest.approx(6.0 + 4 * 0.0, abs=1e-6)
    assert update_bound(Shape("cosine", 10.0)) == pytest.approx(2.0, rel=1e-6)
    assert update_bound(wsd) == pytest.approx(1 / 0.9, rel=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="exponential", final_fraction=0.0), "final_fraction"),
    (dict(kind="cosine", final_fraction=1.0), "final_fraction"),
    (dict(kind="polynomial", power=0.0), "power"),
    (dict(kind="wsd", decay_fraction=0.0), "decay_fraction"),
    (dict(kind="piecewise", knots=((0, 0.1), (5, 0.1))), "knots"),
    (dict(kind="piecewise", knots=((0, 0.1), (6, 0.1), (5, 0.1), (10, 0.0))), "increasing"),
    (dict(kind="spline"), "shape"),
])
def test_bad_shapes_name_the_field(kwargs, match):
    with pytest.raises(ScheduleError, match=match):
        Shape(total_epochs=10.0, **kwargs)


# ------------------------------------------------------------------ ladder
def test_converted_schedule_keeps_the_reference_noise_at_every_step():
    ref = schedule_from_config(mnist("cosine_decay_lr"))
    s = schedule_from_config(mnist("cosine_increase_batch"))
    assert len(s.batch_sizes()) == 6 == len(s.stages)
    assert ref.total_updates / s.total_updates >= 1.4
    for position, _ in s.steps():
        assert s.learning_rate_at(position) <= 0.05 * (1 + 1e-12)
        g, g_ref = s.noise_scale_at(position), ref.noise_scale_at(position)
        assert g == pytest.approx(g_ref, rel=1e-9, abs=1e-12)


def test_placement_is_optimal():
    """Each switch is the earliest example its ε allows; moving it later costs updates."""
    s = schedule_from_config(mnist("cosine_increase_batch"))
    for k in range(1, len(s.stages)):
        start, lr = s.stages[k].start_epoch, s.stages[k].learning_rate
        assert lr * float(s.shape.value(np.float64(start))) <= 0.05 * (1 + 1e-9)
        earlier = start - 1e-6 * s.total_epochs
        assert lr * float(s.shape.value(np.float64(earlier))) > 0.05  # would need ε > ε0
        stages = list(s.stages)
        stages[k - 1] = dataclasses.replace(stages[k - 1], end_epoch=start + 0.5)
        stages[k] = dataclasses.replace(stages[k], start_epoch=start + 0.5)
        moved = dataclasses.replace(s, stages=tuple(stages))
        assert moved.total_updates > s.total_updates


def test_the_ladder_is_the_fewest_updates_over_its_candidates():
    """Dynamic programming against every ladder of a small candidate set."""
    shape, total, n = Shape("cosine", 10.0), 10.0, 10_000
    sizes = [32, 48, 64, 96, 128, 192, 256, 512]
    starts = [0.0] + [shape.earliest_at_most(32 / b) for b in sizes[1:]]  # the B ≪ N form

    def cost(idx):  # updates / N
        edges = [starts[j] for j in idx] + [total]
        return sum((edges[i + 1] - edges[i]) / sizes[j] for i, j in enumerate(idx))

    def feasible(idx):  # the same minimum stage lengths the ladder keeps
        edges = [starts[j] for j in idx] + [total]
        return all(edges[i + 1] - edges[i] >= (sizes[j] + sizes[k]) / n
                   for i, (j, k) in enumerate(zip(idx, idx[1:]))) and \
            total - edges[-2] >= 2 * sizes[idx[-1]] / n

    for stages in (2, 3, 4):
        chosen = best_ladder(sizes, starts, total, n, stages)
        ladders = [(0, *rest) for r in range(stages) for rest in
                   itertools.combinations(range(1, len(sizes)), r)]
        best = min((idx for idx in ladders if feasible(idx)), key=cost)
        assert len(chosen) <= stages and cost(tuple(chosen)) == pytest.approx(cost(best),
                                                                              rel=1e-12)
        assert cost(tuple(chosen)) < cost((0,))


def test_warm_up_and_rises_never_trigger_a_larger_batch():
    c = config_lib.load_config("configs/imagenet_resnet50_cosine.py:cosine_increase_batch")
    s = schedule_from_config(c)
    assert all(st.start_epoch >= c.schedule.warmup_epochs for st in s.stages[1:])
    knots = ((0.0, 0.05), (10.0, 0.05), (20.0, 0.08), (40.0, 0.0))  # a rise until epoch 20
    c = mnist("cosine_increase_batch", **{"schedule.shape": "piecewise",
                                          "schedule.knots": knots})
    s = schedule_from_config(c)
    assert len(s.stages) > 1 and all(st.start_epoch >= 20.0 for st in s.stages[1:])
    assert max(s.learning_rate_at(p) for p, _ in s.steps()) <= 0.08 * (1 + 1e-12)


def test_schedule_command_shows_the_moving_learning_rate_and_the_bound():
    r = subprocess.run([sys.executable, "-m", "noise_scale.schedule",
                        "--config=configs/mnist1d_cosine.py:cosine_increase_batch", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["shape"] == "cosine" and d["update_bound"] == pytest.approx(2.0, rel=1e-4)
    assert d["total_updates"] == 29_367 and len(d["stages"]) == 6
    assert all(st["learning_rate_start"] <= 0.05 + 1e-12 for st in d["stages"])
    table = schedule_table(schedule_from_config(mnist("cosine_increase_batch")))
    assert "0.05->" in table and "1/2.00 of the reference's updates" in table
    r = subprocess.run([sys.executable, "-m", "noise_scale.schedule",
                        "--config=configs/mnist1d_cosine.py:cosine_increase_batch",
                        "--config.schedule.max_stages=0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "config.schedule.max_stages=0" in r.stderr


# --------------------------------------------------------------- real runs
def small_cosine(data_dir):
    c = small_config("cosine_increase_batch", data_dir, "configs/mnist1d_cosine.py")
    c.schedule.boundaries = ()
    c.schedule.max_stages, c.schedule.max_batch_size, c.schedule.batch_multiple = 3, 800, 8
    c.checkpoint_every_epochs = c.eval_every_epochs = 0.5  # records inside every stage
    return c


@pytest.fixture(scope="module")
def cosine_run(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("mnist1d"))
    config = small_cosine(data_dir)
    return data_dir, config, train.train_and_evaluate(config, str(tmp_path_factory.mktemp("w")))


@pytest.mark.slow  # a cosine run and its resume (~30 s); the ladder's rules have fast tests above
def test_a_run_follows_optax_cosine_noise_with_one_compile_per_batch_size(cosine_run):
    _, config, records = cosine_run
    s = schedule_from_config(config)
    assert [st.batch_size for st in s.stages] == [32, 64, 192]
    assert records[-1]["compiles"] == 3 * gns.programs_per_batch_size(config)
    assert {r["batch_size"] for r in records} == {32, 64, 192}
    n, m, b0, lr0 = s.dataset_size, 0.9, 32, 0.05
    cosine = optax.cosine_decay_schedule(lr0, n * 4)  # the reference's ε, one step per example
    for r in records:  # the logged ε is the last step's, which started B examples earlier
        b, p = r["batch_size"], r["examples_seen"] - r["batch_size"]
        # ε the run used, as the reference's ε: ε·(N/B − 1)/(N/B0 − 1) (the same g, m)
        as_reference = r["learning_rate"] * (n / b - 1) / (n / b0 - 1)
        assert as_reference == pytest.approx(float(cosine(p)), abs=1e-5 * lr0)
        assert r["noise_scale"] == pytest.approx(float(cosine(p)) * (n / b0 - 1) / (1 - m),
                                                 rel=1e-5, abs=1e-5)


@pytest.mark.slow  # a cosine run and its resume (~30 s); the ladder's rules have fast tests above
def test_resume_mid_stage_is_bit_exact_with_a_moving_learning_rate(cosine_run, tmp_path,
                                                                   monkeypatch):
    data_dir, _, records = cosine_run
    monkeypatch.setenv("NOISE_SCALE_SIGTERM_AT", "9000")  # stage 1 (B = 64), ε moving
    with pytest.raises(Preempted) as stop:
        train.train_and_evaluate(small_cosine(data_dir), str(tmp_path))
    assert 9000 <= stop.value.examples_seen < 9064
    monkeypatch.delenv("NOISE_SCALE_SIGTERM_AT")
    resumed = train.train_and_evaluate(small_cosine(data_dir), str(tmp_path))
    assert comparable(resumed) == comparable(records)
    assert not math.isnan(resumed[-1]["train_loss"])
    assert to_dict(schedule_from_config(small_cosine(data_dir)))["shape"] == "cosine"


def test_adam_under_the_papers_linear_rule_is_called_the_arm_to_compare():
    from noise_scale.schedule.rules import extrapolation_note

    assert extrapolation_note(mnist("cosine_increase_batch")) is None  # momentum: the theory
    assert extrapolation_note(mnist("cosine_decay_lr", optimizer="adam")) is None
    # Adam's own rule (sqrt, the default) needs no note; the paper's linear rule does
    assert extrapolation_note(mnist("cosine_increase_batch", optimizer="adam")) is None
    note = extrapolation_note(mnist("cosine_increase_batch", optimizer="adam",
                                    **{"schedule.adam_rule": "linear"}))
    assert "paper's empirical rule" in note and "η/√B" in note


@pytest.mark.parametrize("ratio", [2.0, 3.0])
def test_a_geometric_ladder_is_offered_and_costs_more_updates_than_the_chosen_one(ratio):
    """``ladder_ratio`` r: sizes B0·r^k (rounded), each at its earliest start; never fewer
    updates than the dynamic-programming ladder with as many stages."""
    c = config_lib.load_config("configs/mnist1d_cosine.py:cosine_increase_batch")
    best = schedule_from_config(c)
    c.schedule.ladder_ratio = ratio
    geo = schedule_from_config(c)
    b0 = geo.stages[0].batch_size
    assert [s.batch_size for s in geo.stages] == [
        b0 * round(ratio ** k) for k in range(len(geo.stages))]
    assert len(geo.stages) <= c.schedule.max_stages
    noise = [theory.noise_scale(s.learning_rate, s.batch_size, c.dataset_size, s.momentum)
             for s in geo.stages]
    assert max(noise) == pytest.approx(noise[0], rel=1e-9)  # each stage starts at the reference
    assert best.total_updates < geo.total_updates
