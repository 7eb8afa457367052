import json

import jax.numpy as jnp
import numpy as np
import pytest

from noise_scale import config_lib
from noise_scale.config import validation
from noise_scale.errors import ConfigError
from noise_scale.schedule import (
    Schedule,
    ScheduleError,
    Stage,
    compare_table,
    from_lr_steps,
    schedule_from_config,
    schedule_table,
    stage_index,
    to_dict,
    to_json,
    walk,
    warmed_up,
)
from noise_scale.schedule.render import curves, figure

N = 50_000
CIFAR = dict(
    dataset_size=N,
    total_epochs=200,
    batch_size=128,
    learning_rate=0.1,
    momentum=0.9,
    boundaries=(60, 120, 160),
    factor=5,
)


def stages(s):
    return [(st.batch_size, round(st.learning_rate, 10)) for st in s.stages]


def test_decay_lr():
    s = from_lr_steps("decay_lr", **CIFAR)
    assert stages(s) == [(128, 0.1), (128, 0.02), (128, 0.004), (128, 0.0008)]
    assert [st.start_epoch for st in s.stages] == [0, 60, 120, 160]
    assert s.total_updates == pytest.approx(200 * N / 128, abs=2)
    g = s.noise_scales()
    assert all(g[k + 1] / g[k] == pytest.approx(0.2) for k in range(3))


def test_increase_batch_and_its_departure_from_the_reference():
    s = from_lr_steps("increase_batch", **CIFAR)
    assert stages(s) == [(128, 0.1), (640, 0.1), (3200, 0.1), (16000, 0.1)]
    ref = from_lr_steps("decay_lr", **CIFAR).noise_scales()
    g = s.noise_scales()
    # B = N/3.1 in the last stage: g falls 32 % below the reference (the −1 in N/B − 1)
    assert g[3] / ref[3] - 1 == pytest.approx(-0.3183, abs=1e-3)
    assert to_dict(s)["stages"][3]["noise_scale_error"] == pytest.approx(-0.3183, abs=1e-3)


def test_batch_factor_is_a_control_whose_g_falls_short_of_the_targets():
    s = from_lr_steps("increase_batch", batch_factor=2.0, **CIFAR)
    assert stages(s) == [(128, 0.1), (256, 0.1), (512, 0.1), (1024, 0.1)]
    g, ref = s.noise_scales(), from_lr_steps("decay_lr", **CIFAR).noise_scales()
    assert [g[k + 1] / g[k] for k in range(3)] == pytest.approx([0.5] * 3, rel=0.02)
    assert list(s.target_noise) == pytest.approx(ref)  # the targets stay the reference's
    assert to_dict(s)["stages"][3]["noise_scale_error"] == pytest.approx(125 / 8 - 1, rel=0.02)
    with pytest.raises(ScheduleError, match="batch_factor must be 0"):
        from_lr_steps("increase_batch", batch_factor=1.0, **CIFAR)


def test_exact_option_matches_reference_noise():
    s = from_lr_steps("increase_batch", exact=True, **CIFAR)
    ref = from_lr_steps("decay_lr", **CIFAR).noise_scales()
    assert [st.batch_size for st in s.stages] == [128, 634, 3015, 12145]
    for g, r in zip(s.noise_scales(), ref):
        assert g == pytest.approx(r, rel=2e-3)  # only integer rounding left


def test_hybrid_caps_the_batch_and_lr_takes_the_rest():
    s = from_lr_steps(
        "hybrid", max_batch_size=5120, **{**CIFAR, "batch_size": 640, "learning_rate": 0.5}
    )
    assert stages(s) == [(640, 0.5), (3200, 0.5), (5120, 0.16), (5120, 0.032)]
    # the approximate g ∝ ε/B falls by exactly the factor at each step
    approx = [st.learning_rate / st.batch_size for st in s.stages]
    assert all(approx[k + 1] / approx[k] == pytest.approx(0.2) for k in range(3))


def test_hybrid_exact_solves_lr_at_the_cap():
    s = from_lr_steps("hybrid", max_batch_size=640, exact=True, **CIFAR)
    ref = from_lr_steps("decay_lr", **CIFAR).noise_scales()
    for g, r in zip(s.noise_scales()[2:], ref[2:]):
        assert g == pytest.approx(r, rel=1e-12)


def test_increase_batch_past_cap_is_an_error_suggesting_hybrid():
    with pytest.raises(ScheduleError, match="rule='hybrid'"):
        from_lr_steps("increase_batch", max_batch_size=5120, **CIFAR)


def test_rounding_to_a_multiple_reports_the_error():
    s = from_lr_steps("increase_batch", exact=True, batch_multiple=64, **CIFAR)
    assert all(st.batch_size % 64 == 0 for st in s.stages)
    errs = [r["noise_scale_error"] for r in to_dict(s)["stages"]]
    assert errs[0] == 0
    assert any(abs(e) > 1e-4 for e in errs)  # rounding changed g and says so


def test_update_counts_follow_the_stream_convention():
    # 10 examples, B = 3 then 4: stage 0 ends at example 10 → 4 updates (12 examples),
    # stage 1 starts 2 examples late at 12 and needs ceil((20 − 12)/4) = 2 updates.
    s = Schedule(10, (Stage(0, 1, 3, 0.1, 0.0), Stage(1, 2, 4, 0.1, 0.0)))
    plan = s.plan()
    assert [(p.start_example, p.end_example, p.updates) for p in plan] == [(0, 12, 4), (12, 20, 2)]
    # the loop's rule: a step starting at p uses stage_index_at(p) and takes its B
    p, starts = 0, []
    while p < s.total_examples:
        starts.append(p)
        p += s.batch_size_at(p)
    assert starts == [0, 3, 6, 9, 12, 16]
    assert s.stage_index_at(9) == 0 and s.stage_index_at(12) == 1


def test_warmup_is_linear_in_examples_and_reported_per_stage():
    s = from_lr_steps(
        "decay_lr",
        dataset_size=1000,
        total_epochs=10,
        batch_size=100,
        learning_rate=3.2,
        momentum=0.9,
        boundaries=(3,),
        factor=10,
        warmup_epochs=5,
        warmup_start_lr=0.1,
    )
    assert s.learning_rate_at(0) == pytest.approx(0.1)
    assert s.learning_rate_at(1000) == pytest.approx(0.1 + 3.1 / 5)
    # stage 1 begins at epoch 3 (ε ×0.1) while warm-up still runs: ramp targets 0.32
    assert s.learning_rate_at(4000) == pytest.approx(0.1 + (0.32 - 0.1) * 4 / 5)
    assert s.learning_rate_at(5000) == pytest.approx(0.32)
    d = to_dict(s)
    assert [st["warmup_epochs"] for st in d["stages"]] == [3, 2]


def test_plan_devices_and_accumulation():
    s = from_lr_steps("increase_batch", **CIFAR)
    plan = s.plan(num_devices=8, max_device_batch=256)
    assert [(p.per_device_batch, p.accumulation_steps, p.micro_batch) for p in plan] == [
        (16, 1, 16),
        (80, 1, 80),
        (400, 2, 200),
        (2000, 8, 250),
    ]
    with pytest.raises(ScheduleError, match="batch_multiple=3"):
        s.plan(num_devices=3)


def test_table_and_json_agree():
    s = from_lr_steps("hybrid", max_batch_size=640, **CIFAR)
    d = json.loads(to_json(s))
    assert d["total_updates"] == sum(st["updates"] for st in d["stages"]) == s.total_updates
    table = schedule_table(s)
    for st in d["stages"]:
        assert f"{st['updates']:,}" in table
    assert "2 compile(s)" in table


def test_compare_table_shows_departure():
    a = from_lr_steps("decay_lr", **CIFAR)
    b = from_lr_steps("increase_batch", **CIFAR)
    out = compare_table(a, b)
    assert "-31.83%" in out and "2.71x fewer" in out


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=60_000), "batch_size"),
        (dict(momentum=1.0), "momentum"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(boundaries=(120, 60)), "boundaries"),
        (dict(boundaries=(60, 250)), "boundaries"),
        (dict(max_batch_size=64), "max_batch_size 64 is below"),
        (dict(factor=1.0), "factor"),
        (dict(rule="nope"), "rule"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"rule": "hybrid", **CIFAR, **kwargs}
    with pytest.raises(ScheduleError, match=match):
        from_lr_steps(args.pop("rule"), **args)


@pytest.mark.parametrize(
    "stage_list,match",
    [
        ([Stage(0, 10, 32, 0.1, 0.9), Stage(5, 20, 64, 0.1, 0.9)], "overlaps"),
        ([Stage(0, 10, 32, 0.1, 0.9), Stage(12, 20, 64, 0.1, 0.9)], "gap"),
        ([Stage(0, 10, 0, 0.1, 0.9)], "batch_size must be > 0"),
        ([Stage(0, 10, 2000, 0.1, 0.9)], "exceeds dataset_size"),
        ([Stage(0, 10, 32, -1.0, 0.9)], "learning_rate"),
        ([Stage(0, 10, 32, 0.1, 1.2)], "momentum"),
        ([], "at least one stage"),
    ],
)
def test_invalid_stages(stage_list, match):
    with pytest.raises(ScheduleError, match=match):
        Schedule(1000, tuple(stage_list))


def test_curves_sample_the_schedule():
    s = from_lr_steps("decay_lr", **CIFAR)
    epochs, b, lr, g = curves(s, points=200)
    assert len(epochs) == 200 and set(b.tolist()) == {128}
    at = {round(e, 6): x for e, x in zip(epochs, g)}
    assert at[0.0] == at[59.0] and at[60.0] == pytest.approx(at[0.0] / 5)
    assert not np.isnan(g).any()


def test_curves_against_updates_count_the_walk():
    """x = updates: 0 at the start, each stage's updates added up at its end, never down."""
    s = from_lr_steps("increase_batch", **CIFAR)
    epochs, *rest = curves(s, points=400)
    updates, b, lr, g = curves(s, points=400, x="updates")
    assert updates[0] == 0 and np.all(np.diff(updates) >= 0)
    assert updates[-1] < s.total_updates <= updates[-1] + 16_000 // 128  # last point: 199.5 ep
    at60 = int(np.searchsorted(epochs, 60.0))
    # Stage 0's last step (its 23,438th) starts before epoch 60 and ends after it.
    assert updates[at60] == s.updates_per_stage()[0] - 1 == 23_437
    for a, c in zip(rest, (b, lr, g)):
        np.testing.assert_array_equal(a, c)  # the same samples, on another axis
    with pytest.raises(ScheduleError, match="x must be one of epochs, updates"):
        curves(s, x="steps")


def test_figure_has_three_log_panels_with_one_line_per_schedule():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    schedules = [from_lr_steps(r, **CIFAR) for r in ("decay_lr", "increase_batch")]
    fig = figure(schedules, x="updates")
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_yscale() == "log" and len(ax.lines) == 2
        assert ax.get_xlabel() == "parameter updates"
    assert fig.axes[0].lines[1].get_xdata()[-1] < schedules[1].total_updates
    plt.close(fig)


def test_walk_is_the_stream_rule_in_closed_form():
    """Stepping stage by stage with stage_index equals the walk, for awkward sizes too."""
    for n, ends_epochs, sizes in [(10, (1, 2), (3, 4)), (1000, (0.37, 1.5, 3.01), (7, 64, 333)),
                                  (97, (1, 2, 3), (5, 5, 96))]:
        ends = np.array([int(np.ceil(e * n - 1e-9)) for e in ends_epochs])
        p, starts = 0, []
        while p < ends[-1]:
            i = int(stage_index(ends, p))
            starts.append((i, p))
            p += sizes[i]
        by_stage = [[q for i, q in starts if i == k] for k in range(len(sizes))]
        segments = walk(ends.tolist(), sizes)
        for k, (start, end, updates) in enumerate(segments):
            assert updates == len(by_stage[k])
            assert start == by_stage[k][0] and end == by_stage[k][-1] + sizes[k]


def test_steps_updates_at_and_resume_positions():
    s = Schedule(10, (Stage(0, 1, 3, 0.1, 0.0), Stage(1, 2, 4, 0.1, 0.0)))
    assert list(s.steps()) == [(0, 3), (3, 3), (6, 3), (9, 3), (12, 4), (16, 4)]
    assert list(s.steps(12)) == [(12, 4), (16, 4)]
    assert [s.updates_at(p) for p in (0, 3, 12, 16, 20)] == [0, 1, 4, 5, 6]
    with pytest.raises(ScheduleError, match="not where a step starts"):
        list(s.steps(13))
    assert [list(p.positions()) for p in s.plan()] == [[0, 3, 6, 9], [12, 16]]


def test_warm_up_is_the_same_function_on_host_and_device():
    lr, start, warm = np.float32(3.2), 0.1, 5.0
    for epoch in (0.0, 1.3, 4.999, 5.0, 7.0):
        host = float(warmed_up(lr, np.float32(epoch), warm, start))
        device = float(warmed_up(jnp.float32(lr), jnp.float32(epoch), warm, start, jnp.where))
        assert host == pytest.approx(device, rel=1e-7)
    assert warmed_up(0.5, 1.0, 0.0, 0.0) == 0.5


def test_exact_mode_rounds_solved_batches_to_whole_ghost_batches():
    """The solved B (3,639 etc.) would give ghost batches of 2-67; rounded, every B holds
    whole ghost batches of 16 and the g error that causes is reported."""
    c = config_lib.load_config("configs/mnist1d.py:increase_batch", [("schedule.exact", "true")])
    s = schedule_from_config(c)
    assert [st.batch_size for st in s.stages] == [32, 160, 784, 3632]
    assert all(st.batch_size % 16 == 0 for st in s.stages)
    errors = [r["noise_scale_error"] for r in to_dict(s)["stages"]]
    assert errors[0] == 0 and max(abs(e) for e in errors) < 0.01
    c = config_lib.load_config("configs/cifar10_wrn16_4.py:increase_batch",
                               [("schedule.exact", "true"), ("schedule.batch_multiple", "8"),
                                ("schedule.batch_size", "1024")])
    assert all(st.batch_size % (8 * 128) == 0 for st in schedule_from_config(c).stages)


def test_rounding_that_would_change_a_hand_given_batch_size_is_refused():
    """The hand-given B0 sets the reference's g: rounded, it moved every stage (MNIST-1D
    cosine with batch_multiple=8 started at 128, not 32: g −75 % for the whole run)."""
    for spec, overrides, needle in [
            ("configs/mnist1d_cosine.py:cosine_increase_batch", [("schedule.batch_multiple", "8")],
             "batch_size=32 is not a multiple of schedule.batch_multiple × ghost_batch_size = "
             "8 × 16 = 128, what batch sizes of the cosine shape are rounded to"),
            ("configs/cifar10_wrn16_4.py:increase_batch", [("schedule.exact", "true"),
                                                           ("schedule.batch_multiple", "8")],
             "batch_size=128 is not a multiple of schedule.batch_multiple × ghost_batch_size = "
             "8 × 128 = 1024"),
            ("configs/mnist1d.py:increase_batch", [("schedule.batch_multiple", "24")],
             "batch_size=32 is not a multiple of schedule.batch_multiple = 24: it would start "
             "at B = 24 instead, g +33 %")]:
        c = config_lib.load_config(spec, overrides)
        with pytest.raises(ScheduleError) as info:
            schedule_from_config(c)
        assert needle in str(info.value), str(info.value)
        assert "--config.schedule.batch_size=" in str(info.value)
    # scaled or solved batch sizes are the rules' own: still rounded, the g error shown
    c = config_lib.load_config("configs/mnist1d_cosine.py:cosine_increased_lr",
                               [("schedule.batch_multiple", "8")])
    assert schedule_from_config(c).stages[0].batch_size % 128 == 0


@pytest.mark.parametrize("field, value, kind, start", [
    # a field's own type and range: its FIELDS check (config.fields), run by the schedule too
    ("dataset_size", 0, ConfigError, "config.dataset_size=0 is invalid: it must be an integer"),
    ("schedule.lr_scale", -1.0, ConfigError,
     "config.schedule.lr_scale=-1.0 is invalid: it must be a finite number > 0"),
    ("schedule.batch_multiple", 0, ConfigError, "config.schedule.batch_multiple=0 is invalid"),
    # a relation between fields: the schedule layer's own
    ("schedule.batch_size", 5_000, ScheduleError, "invalid schedule in config.schedule ("),
])
def test_a_schedule_error_carries_the_config_field_it_names(field, value, kind, start):
    """The field comes from the check that failed, not from the message's first word; a
    notebook calling schedule_from_config alone gets the refusal validate_config gives."""
    from tests.helpers import small_config

    config = small_config("increase_batch")
    section, _, name = field.rpartition(".")
    setattr(config.get(section) if section else config, name, value)
    with pytest.raises(kind) as info:
        schedule_from_config(config)
    assert info.value.field == f"config.{field}"
    assert str(info.value).startswith(start), str(info.value)
    with pytest.raises(kind) as same:
        validation.validate_config(config)
    assert (same.value.field, str(same.value)) == (info.value.field, str(info.value))
