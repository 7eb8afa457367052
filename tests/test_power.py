"""The verdict rule's error rates on synthetic curves with the committed runs' noise.

The rule must call a truly equivalent schedule equivalent at least 95 % of the time and a
schedule at 1.25× the reference's training loss in every window at most 5 % of the time,
at the default seed count, with the noise it sees (same-seed pairs, as measured on the
committed runs). The simulation is checked against a closed form where there is one.
"""

import math

import numpy as np
import pytest
from scipy import stats

from noise_scale.experiments import agreement, power


def test_the_rule_meets_its_error_rates_at_the_default_seed_count():
    assert agreement.DEFAULT_SEEDS >= 5
    assert power.p_equivalent(1.00) >= 0.95
    assert power.p_equivalent(1.25) <= 0.05
    # and more seeds only help
    assert power.p_equivalent(1.00, seeds=8) >= power.p_equivalent(1.00)


def test_a_real_accuracy_gap_is_not_called_equivalent():
    assert power.p_equivalent(1.0, accuracy_gap=-0.35) <= 0.05


def test_the_pessimistic_bound_is_reported_not_hidden():
    """If pairing gained nothing (noise as large as between two seeds), 5 seeds would call a
    truly equivalent schedule equivalent far less often: the report prints both rows."""
    oc = power.operating_characteristic(reps=500)
    paired, cross = (row["p_equivalent"] for row in oc)
    assert cross["1.00"] < paired["1.00"]
    assert all(paired[a] >= paired[b] for a, b in zip(list(paired), list(paired)[1:]))
    lines = power.report_lines(oc)
    assert len(lines) == 4 and "×1.25" in lines[0] and f"{paired['1.00']:.3f}" in lines[2]


def test_the_simulated_window_means_have_the_closed_form_variance():
    """AR(1) mean of n points: var = sd²/n · (1 + 2 Σ_k (1 − k/n) φ^k); plus the offsets."""
    noise = power.Noise(0.1, -0.2, 0.05)
    means = power._window_means(np.random.default_rng(1), noise, 0.0, 5, 4000)
    for n, m in zip(power.WINDOWS, means):
        ar = 1 + 2 * sum((1 - k / n) * noise.lag1 ** k for k in range(1, n))
        want = noise.sd ** 2 / n * ar + noise.seed_sd ** 2
        assert np.var(m) == pytest.approx(want, rel=0.05)


def test_one_window_one_curve_matches_the_t_distribution():
    """With no seed-to-seed structure beyond normal noise, P(equivalent) for one window is
    a noncentral-t probability; the rule's arithmetic reproduces it."""
    rng = np.random.default_rng(2)
    sd, n, reps = 0.08, 5, 20000
    d = rng.normal(0.0, sd, (reps, n))
    ok = agreement.equivalent([{"loss": d, "accuracy": np.zeros((reps, n)) + 1e-9 * rng.normal(
        size=(reps, n))}])
    t = stats.t.ppf(0.95, n - 1)
    se = d.std(-1, ddof=1) / math.sqrt(n)
    want = np.mean((np.abs(d.mean(-1)) + t * se) < agreement.LOSS_MARGIN)
    assert np.mean(ok) == pytest.approx(want, abs=1e-12)
