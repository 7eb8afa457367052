"""The curve-agreement rule (noise_scale.experiments.agreement) on hand-made curves.

The rule was written and tested before any control run existed; these tests pin
it: a control that matches the reference is indistinguishable, a reference
shifted by more than K × the floor is distinguishable, and the statistics are
the hand-computed ones.
"""

import math

import pytest

from noise_scale.experiments import agreement
from noise_scale.experiments.agreement import DISTINGUISHABLE, INDISTINGUISHABLE

EPOCHS = list(range(1, 11))  # first boundary at 4: evaluations 5 … 10 count


def _run(acc, loss, overshoot=0.0):
    """Per-epoch records: test accuracy and training loss given per epoch (lists or callables)."""
    return [{"epoch": e + overshoot, "test_accuracy": acc(e), "train_loss": loss(e)}
            for e in EPOCHS]


def _reference():
    """Two seeds; after epoch 4 they differ by 0.2 points and a loss factor 1.1 at most."""
    seed0 = _run(lambda e: 0.95, lambda e: 0.1 / e)
    seed1 = _run(lambda e: 0.95 + (0.002 if e == 7 else 0.0),
                 lambda e: 0.1 / e * (1.1 if e == 9 else 1.0))
    return [seed0, seed1]


def test_pair_statistics_by_hand():
    a = _run(lambda e: 0.90 if e < 4 else 0.95, lambda e: 1.0)
    b = _run(lambda e: 0.50 if e < 4 else 0.94, lambda e: 2.0 if e == 6 else 1.0)
    s = agreement.pair_statistics(a, b, first_boundary=4)
    assert s["accuracy"] == pytest.approx(1.0)  # the 40-point gap before epoch 4 does not count
    assert s["loss"] == pytest.approx(math.log(2.0))
    # the evaluation at the boundary itself does not count, later ones do; overshoot absorbed
    c = _run(lambda e: 0.95 + (0.1 if e == 4 else 0.0), lambda e: 1.0, overshoot=0.03)
    assert agreement.pair_statistics(c, a, 4)["accuracy"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no evaluation after epoch 10"):
        agreement.pair_statistics(a, b, first_boundary=10)


def test_floor_is_the_reference_against_its_other_seed():
    floor = agreement.noise_floor(_reference(), 4)
    assert floor == pytest.approx({"accuracy": 0.2, "loss": math.log(1.1)})
    assert agreement.noise_floor(_reference()[:1], 4) is None  # one seed: no floor


def test_a_control_that_matches_the_reference_is_indistinguishable():
    ref = _reference()
    control = [list(r) for r in ref]  # the same curves, seed for seed
    floor = agreement.noise_floor(ref, 4)
    stats = agreement.statistics(control, ref, 4)
    assert stats == pytest.approx(floor)  # cross-seed pairs of the same curves: the floor
    assert agreement.verdict(stats, floor) == INDISTINGUISHABLE


@pytest.mark.parametrize("curve", ["accuracy", "loss"])
def test_a_reference_shifted_by_more_than_k_floors_is_distinguishable(curve):
    ref = _reference()
    floor = agreement.noise_floor(ref, 4)
    k = agreement.MULTIPLIER
    if curve == "accuracy":  # every evaluation after epoch 6 lower by K·floor + 0.1 points
        shift = (k * floor["accuracy"] + 0.1) / 100
        shifted = [[{**r, "test_accuracy": r["test_accuracy"] - (shift if r["epoch"] > 6 else 0)}
                    for r in seed] for seed in ref]
    else:  # training loss higher by a factor e^(K·floor) · 1.05 from epoch 8
        factor = math.exp(k * floor["loss"]) * 1.05
        shifted = [[{**r, "train_loss": r["train_loss"] * (factor if r["epoch"] > 7 else 1)}
                    for r in seed] for seed in ref]
    stats = agreement.statistics(shifted, ref, 4)
    assert stats[curve] > k * floor[curve]
    assert agreement.verdict(stats, floor) == DISTINGUISHABLE
    # just under K floors on either curve stays indistinguishable
    assert agreement.verdict({"accuracy": 0.99 * k * floor["accuracy"],
                              "loss": 0.99 * k * floor["loss"]}, floor) == INDISTINGUISHABLE


def test_schedule_pairs_are_cross_seed():
    ref = _reference()
    # a schedule identical to reference seed 0 in both its seeds: compared with seed 1 (for its
    # seed 0) and with seed 0 (for its seed 1): mean of the floor and of zero
    same = [ref[0], ref[0]]
    stats = agreement.statistics(same, ref, 4)
    assert stats == pytest.approx({"accuracy": 0.1, "loss": math.log(1.1) / 2})
    assert agreement.statistics(ref[:1], ref[:1], 4) is None  # one seed each: no pair


def test_roles_and_the_overall_result():
    class C:  # a config with only what role() reads
        def __init__(self, m):
            self.schedule = type("S", (), {"raise_momentum_to": m})()

    roles = {n: agreement.role(n, "decay_lr", ("constant_lr",), C(m)) for n, m in [
        ("decay_lr", 0), ("hybrid", 0), ("increased_momentum", 0.98), ("constant_lr", 0)]}
    assert roles == {"decay_lr": "reference", "hybrid": "equivalent",
                     "increased_momentum": "with cost", "constant_lr": "control"}
    good = {"decay_lr": INDISTINGUISHABLE, "hybrid": INDISTINGUISHABLE,
            "increased_momentum": DISTINGUISHABLE, "constant_lr": DISTINGUISHABLE}
    assert agreement.overall(good, roles) == "reproduced"  # the costly one is not judged
    assert agreement.overall({**good, "hybrid": DISTINGUISHABLE}, roles) == "not reproduced"
    assert agreement.overall({**good, "constant_lr": INDISTINGUISHABLE}, roles) == "not reproduced"
    assert agreement.overall({**good, "hybrid": None}, roles) is None  # one seed
    no_control = {n: r for n, r in roles.items() if r != "control"}
    assert agreement.overall(good, no_control) is None  # nothing shows the test can fail


def test_compare_puts_it_together():
    ref = _reference()
    flat = [_run(lambda e: 0.93, lambda e: 0.1) for _ in ref]  # no decay: loss stays high
    out = agreement.compare({"decay_lr": ref, "hybrid": ref, "constant_lr": flat}, "decay_lr",
                            {"decay_lr": "reference", "hybrid": "equivalent",
                             "constant_lr": "control"}, first_boundary=4)
    assert out["variants"]["hybrid"]["verdict"] == INDISTINGUISHABLE
    assert out["variants"]["constant_lr"]["verdict"] == DISTINGUISHABLE
    assert out["variants"]["constant_lr"]["accuracy_gap_max"] == pytest.approx(2.1)
    assert out["result"] == "reproduced" and out["multiplier"] == agreement.MULTIPLIER
    assert out["floor"]["accuracy_gap_max"] == pytest.approx(0.2)
    assert str(agreement.MULTIPLIER).rstrip("0").rstrip(".") + " × floor" in out["rule"]
