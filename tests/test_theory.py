import math

import pytest

from noise_scale import theory


def test_noise_scale_exact_form():
    # g = ε/(1−m)(N/B − 1), by hand: 0.1/0.1 * (50000/128 − 1) = 389.625
    assert theory.noise_scale(0.1, 128, 50_000, 0.9) == pytest.approx(389.625)
    assert theory.noise_scale(0.1, 128, 50_000) == pytest.approx(38.9625)
    assert theory.noise_scale(0.1, 50_000, 50_000, 0.9) == 0.0


def test_effective_learning_rate():
    assert theory.effective_learning_rate(0.1, 0.9) == pytest.approx(1.0)
    assert theory.effective_learning_rate(0.3, 0.0) == pytest.approx(0.3)


def test_batch_increase_matches_lr_decay_only_when_batch_small():
    n = 1_000_000
    g = theory.noise_scale(0.1, 100, n, 0.9)
    assert theory.noise_scale(0.1, 1000, n, 0.9) / g == pytest.approx(0.1, rel=1e-3)
    # near N/3 the approximation fails by far more than 1 %
    n = 50_000
    g = theory.noise_scale(0.1, 3200, n, 0.9)
    assert theory.noise_scale(0.1, 16_000, n, 0.9) / (g / 5) == pytest.approx(0.726, abs=1e-3)


@pytest.mark.parametrize(
    "lr,b,n,m",
    [
        (0.1, 128, 50_000, 0.9),
        (3.2, 8192, 1_281_167, 0.975),
        (0.05, 32, 40_000, 0.0),
        (1e-3, 7, 11, 0.5),
    ],
)
def test_solves_are_inverses(lr, b, n, m):
    g = theory.noise_scale(lr, b, n, m)
    assert theory.solve_batch_size(g, lr, n, m) == pytest.approx(b, rel=1e-12)
    assert theory.solve_learning_rate(g, b, n, m) == pytest.approx(lr, rel=1e-12)
    assert theory.solve_momentum(g, lr, b, n) == pytest.approx(m, abs=1e-12)
    # and the other way round: noise_scale of a solved value gives back g
    assert theory.noise_scale(lr, theory.solve_batch_size(g, lr, n, m), n, m) == pytest.approx(g)


def test_scaling_rules_keep_noise_approximately():
    n = 10_000_000
    g = theory.noise_scale(0.1, 100, n, 0.9)
    b = theory.scale_batch_for_learning_rate(100, 5)
    assert b == 500
    assert theory.noise_scale(0.5, b, n, 0.9) == pytest.approx(g, rel=1e-4)
    b = theory.scale_batch_for_momentum(100, 0.9, 0.98)
    assert b == pytest.approx(500)
    assert theory.noise_scale(0.1, b, n, 0.98) == pytest.approx(g, rel=1e-4)


@pytest.mark.parametrize(
    "call,field",
    [
        (lambda: theory.noise_scale(0.1, 0, 100), "batch_size"),
        (lambda: theory.noise_scale(0.1, 200, 100), "batch_size"),
        (lambda: theory.noise_scale(-0.1, 10, 100), "learning_rate"),
        (lambda: theory.noise_scale(0.1, 10, 100, 1.0), "momentum"),
        (lambda: theory.noise_scale(0.1, 10, 100, -0.1), "momentum"),
        (lambda: theory.noise_scale(math.nan, 10, 100), "learning_rate"),
        (lambda: theory.solve_batch_size(0.0, 0.1, 100), "noise"),
        (lambda: theory.solve_learning_rate(1.0, 100, 100), "batch_size equals"),
        (lambda: theory.solve_momentum(1e-6, 0.1, 10, 100), "momentum only raises"),
        (lambda: theory.solve_momentum(1.0, 0.1, 100, 100), "batch_size equals"),
        (lambda: theory.scale_batch_for_momentum(10, 0.9, 1.0), "new_momentum"),
    ],
)
def test_bad_arguments_name_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()
