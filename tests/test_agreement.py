"""The verdict rule (noise_scale.experiments.agreement) on hand-made curves.

Windows, paired means and intervals against hand-computed values; a schedule that
copies the reference is equivalent (and a control that copies it indistinguishable);
a loss 1.25× the reference's is distinguishable, not equivalent.
"""

import math

import numpy as np
import pytest
from scipy import stats

from noise_scale.experiments import agreement
from noise_scale.experiments.agreement import (
    DISTINGUISHABLE,
    EQUIVALENT_VERDICT,
    INCONCLUSIVE,
    INDISTINGUISHABLE,
)

EPOCHS = range(1, 13)  # a boundary at 4 and 8: stages 0, 1, 2


def _run(seed, batch=lambda stage: 32, lr=lambda stage: 0.1 / 5 ** stage, loss_factor=1.0,
         acc_shift=0.0):
    """Per-epoch records of a 3-stage schedule; seed-dependent wiggles shared by every schedule
    with that seed (as a shared initialisation and data order would)."""
    out = []
    for e in EPOCHS:
        stage = 0 if e <= 4 else 1 if e <= 8 else 2
        wiggle = 0.05 * math.sin(3 * e + seed)
        factor = loss_factor(e) if callable(loss_factor) else loss_factor
        out.append({"epoch": e + 0.001, "stage": stage, "batch_size": batch(stage),
                    "learning_rate": lr(stage), "momentum": 0.9,
                    "train_loss": math.exp(-e / 4 + wiggle) * factor,
                    "test_accuracy": 0.95 + 0.001 * seed + acc_shift})
    return out


def _increase_batch(seed, **kw):
    return _run(seed, batch=lambda s: 32 * 5 ** s, lr=lambda s: 0.1, **kw)


def test_windows_start_where_the_schedule_first_differs():
    ref, ib = _run(0), _increase_batch(0)
    assert agreement.windows(ib, ref) == [[5, 6, 7, 8], [9, 10, 11, 12]]
    # the same schedule: every stage is a window, and a rerun of the reference cannot be told
    assert agreement.windows(ref, ref) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
    same = agreement.judge([_run(s) for s in range(5)], [_run(s) for s in range(5)],
                           agreement.CONTROL)
    assert same["verdict"] == INDISTINGUISHABLE and same["margin_units"] == 0.0
    # a schedule that differs from the first epoch (another B0) is judged from it
    other = _run(0, batch=lambda s: 160)
    assert agreement.windows(other, ref)[0] == [1, 2, 3, 4]
    # a reference with one stage is cut by the schedule's own stages
    flat = [{**r, "stage": 0} for r in ref]
    assert agreement.windows(ib, flat) == [[5, 6, 7, 8], [9, 10, 11, 12]]


def test_paired_means_and_the_t_interval_by_hand():
    ref = [_run(s) for s in range(3)]
    shifted = [_increase_batch(s, loss_factor=lambda e, s=s: 1.1 + 0.01 * s) for s in range(3)]
    m = agreement.paired_means(shifted, ref, [5, 6, 7, 8])
    assert m["loss"] == pytest.approx([math.log(1.1 + 0.01 * s) for s in range(3)])
    assert m["accuracy"] == pytest.approx([0.0, 0.0, 0.0])
    mean, lo, hi = agreement.interval(m["loss"], 0.90)
    half = stats.t.ppf(0.95, 2) * np.std(m["loss"], ddof=1) / math.sqrt(3)
    assert (mean, hi - mean) == pytest.approx((np.mean(m["loss"]), half))
    assert mean - lo == pytest.approx(half)


def test_a_copy_of_the_reference_is_equivalent_and_a_control_copy_indistinguishable():
    ref = [_run(s) for s in range(5)]
    # the same curves under another schedule's hyperparameters (so there are windows)
    copy = [[{**r, "batch_size": b["batch_size"]} for r, b in zip(ref[s], _increase_batch(s))]
            for s in range(5)]
    eq = agreement.judge(copy, ref, agreement.EQUIVALENT)
    assert eq["verdict"] == EQUIVALENT_VERDICT and eq["margin_units"] == 0.0
    assert agreement.judge(copy, ref, agreement.CONTROL)["verdict"] == INDISTINGUISHABLE


def test_a_loss_125_times_the_reference_is_distinguishable():
    ref = [_run(s) for s in range(5)]
    worse = [_increase_batch(s, loss_factor=lambda e, s=s: 1.25 * (1 + 0.01 * s) if e > 4 else 1)
             for s in range(5)]
    out = agreement.judge(worse, ref, agreement.EQUIVALENT)
    assert out["verdict"] == DISTINGUISHABLE and not out["equivalent"]
    assert [w["loss"]["mean"] for w in out["windows"]] == pytest.approx(
        [math.log(1.25) + math.log(1.02)] * 2, abs=0.01)
    assert out["margin_units"] > 1
    assert agreement.judge(worse, ref, agreement.CONTROL)["verdict"] == DISTINGUISHABLE


def test_within_the_margin_is_equivalent_and_noise_without_an_effect_inconclusive():
    ref = [_run(s) for s in range(5)]
    close = [_increase_batch(s, loss_factor=1.05, acc_shift=-0.0005) for s in range(5)]
    assert agreement.judge(close, ref, agreement.EQUIVALENT)["verdict"] == EQUIVALENT_VERDICT
    # seeds that disagree in sign by ×1.4 either way: no effect shown, none excluded
    rng = [1.4, 1 / 1.4, 1.4, 1 / 1.4, 1.0]
    noisy = [_increase_batch(s, loss_factor=rng[s]) for s in range(5)]
    assert agreement.judge(noisy, ref, agreement.EQUIVALENT)["verdict"] == INCONCLUSIVE
    # an accuracy gap of 0.3 points (margin 0.25) in every seed: not equivalent
    gap = [_increase_batch(s, acc_shift=-0.003 - 0.0001 * s) for s in range(5)]
    out = agreement.judge(gap, ref, agreement.EQUIVALENT)
    assert out["verdict"] == DISTINGUISHABLE
    assert out["windows"][0]["accuracy"]["mean"] == pytest.approx(-0.32, abs=1e-9)


def test_one_seed_gives_no_verdict():
    out = agreement.judge([_increase_batch(0)], [_run(0)], agreement.EQUIVALENT)
    assert out["verdict"] is None and out["windows"] == []


def test_roles_and_the_overall_result():
    class C:  # a config with only what role() reads
        def __init__(self, m):
            self.schedule = type("S", (), {"raise_momentum_to": m})()

    roles = {n: agreement.role(n, "decay_lr", ("constant_lr",), C(m)) for n, m in [
        ("decay_lr", 0), ("hybrid", 0), ("increased_momentum", 0.98), ("constant_lr", 0)]}
    assert roles == {"decay_lr": "reference", "hybrid": "equivalent",
                     "increased_momentum": "with cost", "constant_lr": "control"}
    good = {"decay_lr": None, "hybrid": EQUIVALENT_VERDICT,
            "increased_momentum": DISTINGUISHABLE, "constant_lr": DISTINGUISHABLE}
    assert agreement.overall(good, roles) == "reproduced"  # the costly one is not judged
    assert agreement.overall({**good, "hybrid": INCONCLUSIVE}, roles) == "not reproduced"
    assert agreement.overall({**good, "constant_lr": INDISTINGUISHABLE}, roles) == "not reproduced"
    assert agreement.overall({**good, "hybrid": None}, roles) is None  # one seed
    no_control = {n: r for n, r in roles.items() if r != "control"}
    assert agreement.overall(good, no_control) is None  # nothing shows the test can fail


def test_compare_puts_it_together():
    ref = [_run(s) for s in range(5)]
    flat = [_run(s, lr=lambda stage: 0.1, loss_factor=lambda e: 1 if e <= 4 else 3)
            for s in range(5)]  # no decay: the loss stays high
    out = agreement.compare({"decay_lr": ref, "hybrid": [_increase_batch(s) for s in range(5)],
                             "constant_lr": flat}, "decay_lr",
                            {"decay_lr": "reference", "hybrid": "equivalent",
                             "constant_lr": "control"})
    assert out["variants"]["hybrid"]["verdict"] == EQUIVALENT_VERDICT
    assert out["variants"]["constant_lr"]["verdict"] == DISTINGUISHABLE
    assert out["variants"]["decay_lr"]["verdict"] is None
    assert out["result"] == "reproduced"
    assert out["loss_margin"] == agreement.LOSS_MARGIN == pytest.approx(math.log(1.15))
