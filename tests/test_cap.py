"""The measured cap: a boundary's batch increase happens only while B ≤ c × B_simple."""

import pytest

from noise_scale import default_config, validation
from noise_scale.errors import ConfigError
from noise_scale.schedule import schedule_from_config
from noise_scale.schedule.rules import capped_batch_sizes, capped_schedule


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
