"""The measured ladder's schedule (``schedule.measured``): stages per probe interval, the
shape's noise scale at every example whatever the probe chose, and its refusals."""

import math

import numpy as np
import pytest

from noise_scale import config_lib
from noise_scale.config import validation
from noise_scale.errors import ConfigError, ScheduleError
from noise_scale.schedule import schedule_from_config
from noise_scale.schedule.measured import candidate_sizes, next_batch, probe_epochs
from tests.helpers import apply_overrides


def config(**overrides):
    c = config_lib.load_config("configs/mnist1d_cosine.py:cosine_decay_lr")
    with c.unlocked():
        c.schedule.rule = "measured"
        c.probe.every_epochs = 4.0
        c.schedule.max_batch_size = 4000
        return apply_overrides(c, overrides)


def test_probe_points_every_interval_before_the_end():
    assert probe_epochs(40.0, 4.0) == [4.0, 8.0, 12.0, 16.0, 20.0, 24.0, 28.0, 32.0, 36.0]
    assert probe_epochs(10.0, 3.0) == [3.0, 6.0, 9.0]
    assert probe_epochs(2.0, 4.0) == []


def test_candidates_double_up_to_the_cap_and_the_compile_budget():
    assert candidate_sizes(32, 4000, 16, 6) == [32, 64, 128, 256, 512, 1024]
    assert candidate_sizes(32, 4000, 16, 9) == [32, 64, 128, 256, 512, 1024, 2048]  # cap
    assert candidate_sizes(32, 4000, 16, 1) == [32]
    assert candidate_sizes(24, 1000, 16, 4) == [24, 48, 96, 192]  # rounded to 16


@pytest.mark.parametrize("cbs,current,expected", [
    (100.0, 32, 64), (64.0, 32, 64), (63.9, 32, 32), (5000.0, 32, 1024),
    (40.0, 128, 128),  # never shrinks
    (None, 64, 64), (math.nan, 64, 64)])
def test_next_batch_is_the_largest_candidate_under_the_reading(cbs, current, expected):
    assert next_batch(cbs, current, [32, 64, 128, 256, 512, 1024]) == expected


def test_undecided_it_is_the_fixed_batch_reference_exactly():
    measured = schedule_from_config(config())
    reference = schedule_from_config(config_lib.load_config(
        "configs/mnist1d_cosine.py:cosine_decay_lr"))
    assert len(measured.stages) == 10 and measured.batch_sizes() == [32]
    positions = np.linspace(0, reference.total_examples - 1, 997).astype(int)
    assert [measured.learning_rate_at(p) for p in positions] == [
        reference.learning_rate_at(p) for p in positions]
    assert measured.total_updates == reference.total_updates == 50_000


def test_every_decision_keeps_the_shapes_noise_scale():
    reference = schedule_from_config(config())
    grown = schedule_from_config(config(), measured=[32, 64, 64, 256, 256, 256, 1024])
    assert grown.batch_sizes() == [32, 64, 256, 1024]
    assert grown.stages[2].start_epoch == 8.0 and grown.stages[2].batch_size == 64
    for p in np.linspace(0, grown.total_examples - 1, 1_001).astype(int):
        b = grown.batch_size_at(p)
        g, g_ref = grown.noise_scale_at(p), reference.noise_scale_at(p)
        assert g == pytest.approx(g_ref, rel=1e-9, abs=1e-12), (p, b)
    # where B grows ×k, ε grows about ×k (exact form: (N/B − 1)/(N/kB − 1))
    e = 8.0 * 40_000
    ratio = grown.learning_rate_at(e) / reference.learning_rate_at(e)
    assert ratio == pytest.approx((40_000 / 32 - 1) / (40_000 / 64 - 1))
    assert grown.total_updates < reference.total_updates


@pytest.mark.parametrize("decided,words", [
    ([64, 32], "shrink"), ([64] * 10, "10 probe decisions for 9")])
def test_decisions_that_do_not_fit_the_ladder_are_refused(decided, words):
    with pytest.raises(ScheduleError, match=words):
        schedule_from_config(config(), measured=decided)


def test_measured_needs_a_probe_and_a_continuous_shape():
    with pytest.raises(ScheduleError, match="probe.every_epochs") as e:
        schedule_from_config(config(**{"probe.every_epochs": 0.0}))
    assert e.value.field == "config.probe.every_epochs"
    with pytest.raises(ScheduleError, match="continuous learning-rate shape") as e:
        schedule_from_config(config(**{"schedule.shape": "step"}))
    assert e.value.field == "config.schedule.shape"


@pytest.mark.parametrize("field,value", [
    ("probe.factors", (2, 4)), ("probe.factors", (1, 4, 2)), ("probe.factors", (1, 0.5)),
    ("probe.factors", (1,)), ("probe.tolerance", 0.0), ("probe.tolerance", -0.5),
    ("schedule.max_stages", 0), ("probe.every_epochs", -1.0), ("probe.repeats", 0)])
def test_bad_probe_inputs_name_their_field(field, value):
    with pytest.raises(ConfigError) as e:
        validation.validate_config(config(**{field: value}))
    assert e.value.field == f"config.{field}"
