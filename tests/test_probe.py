"""The branching probe (noise_scale.probe) against noisy linear regression's closed form.

The rule, the ground truth and the pass criterion are docs/probe.md's, committed before
these runs: d = 32, H = I, σ = 0.5, |w*| = 1; forks along SGD from w = 0 (B = 4,
ε = 0.05, seed 1) at w = 0 and the first updates with |e|² ≤ 0.4 and ≤ 0.15; the probe at
B0 = 4 with ε0 = ε_opt(B0) = B0/(B0 + B_simple), factors 1..64, T = 256 examples, R = 64,
tolerance 0.5, seed 2. Pass: 1/1.5 ≤ CBS/B_simple ≤ 1.5 at all three forks.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noise_scale import probe as probe_lib
from noise_scale.errors import UsageError

D, SIGMA, B0, TRAIN_LR = 32, 0.5, 4, 0.05
THRESHOLDS = (None, 0.4, 0.15)  # the forks: w = 0, then the first |e|² at or below these


def w_star() -> np.ndarray:
    w = np.random.default_rng(0).standard_normal(D)
    return w / np.linalg.norm(w)


def sample_with(w):
    def sample(key, n):
        kx, kn = jax.random.split(key)
        x = jax.random.normal(kx, (n, D))
        return x, x @ w + SIGMA * jax.random.normal(kn, (n,))
    return sample


def loss_fn(w, batch):
    x, y = batch
    return 0.5 * jnp.mean((x @ w - y) ** 2)


def population_loss_with(w):
    return lambda v: 0.5 * jnp.sum((v - w) ** 2) + 0.5 * SIGMA ** 2


def b_simple(e: np.ndarray) -> float:
    """tr Σ/|G|² = 1 + (eᵀHe + σ²)·tr H/|He|², here with H = I (docs/probe.md)."""
    return 1.0 + D * (e @ e + SIGMA ** 2) / (e @ e)


def forks(w: np.ndarray) -> list[np.ndarray]:
    """The fork parameters along the pre-registered SGD run (float64, numpy)."""
    rng, v, out = np.random.default_rng(1), np.zeros(D), [np.zeros(D)]
    for threshold in THRESHOLDS[1:]:
        while (v - w) @ (v - w) > threshold:
            x = rng.standard_normal((B0, D))
            y = x @ w + SIGMA * rng.standard_normal(B0)
            v = v - TRAIN_LR * x.T @ (x @ v - y) / B0
        out.append(v.copy())
    return out


@functools.cache
def measured() -> list[tuple[float, probe_lib.ProbeResult]]:
    """(B_simple, the probe's result) at each fork, by the committed rule."""
    w = w_star()
    results = []
    for v in forks(w):
        bs = b_simple(v - w)
        result = probe_lib.probe(
            loss_fn, jnp.asarray(v, jnp.float32), sample_with(jnp.asarray(w, jnp.float32)),
            population_loss_with(jnp.asarray(w, jnp.float32)), batch_size=B0,
            learning_rate=B0 / (B0 + bs), factors=(1, 2, 4, 8, 16, 32, 64),
            branch_examples=256, tolerance=0.5, repeats=64, seed=2)
        results.append((bs, result))
    return results


def expected_loss(e: np.ndarray, lr: float, batch: int, steps: int) -> float:
    """E[L] after ``steps`` SGD updates from w* + e, exactly: with H = I and Gaussian x,
    E|e'|² = |e|²(1 − 2ε + ε²(1 + (1 + d)/B)) + ε²dσ²/B, linear in |e|², so it iterates."""
    u = e @ e
    for _ in range(steps):
        u = u * (1 - 2 * lr + lr ** 2 * (1 + (1 + D) / batch)) + lr ** 2 * D * SIGMA ** 2 / batch
    return 0.5 * u + 0.5 * SIGMA ** 2


def table() -> str:
    return "; ".join(f"B_simple {bs:.1f}: CBS {r.cbs:.1f}{' (censored)' if r.censored else ''}"
                     f", ratio {r.cbs / bs:.2f}" for bs, r in measured())


def test_probe_cbs_is_within_1_5x_of_b_simple_at_three_forks():
    """docs/probe.md's pre-registered criterion, at all three forks."""
    ratios = [r.cbs / bs for bs, r in measured()]
    assert all(1 / 1.5 <= q <= 1.5 for q in ratios), table()
    assert not any(r.censored for _, r in measured()), table()


def test_forks_are_the_preregistered_ones():
    """w = 0 (|e|² = 1: B_simple = 1 + 32·1.25 = 41 exactly), then two later points whose
    B_simple grows as the error shrinks towards the noise."""
    simple = [bs for bs, _ in measured()]
    assert simple[0] == pytest.approx(41.0)
    assert 41 < simple[1] < simple[2]
    assert [round(bs) for bs in simple] == [41, 53, 87]


def test_branch_losses_match_the_exact_expectation():
    """Each factor's mean loss after its branch agrees with the closed-form expectation
    (T/(B0·k) updates at ε0·k from the fork) to 5 % over R = 64 repeats: the probe batches,
    scales the learning rate and counts updates as the rule says."""
    w = w_star()
    for (bs, r), v in zip(measured(), forks(w)):
        lr0 = B0 / (B0 + bs)
        want = [expected_loss(v - w, lr0 * b / B0, b, 256 // b) for b in r.batch_sizes]
        assert r.fork_loss == pytest.approx(expected_loss(v - w, 0.0, 1, 0), rel=1e-5)
        np.testing.assert_allclose(r.losses, want, rtol=0.05)


def test_inputs_are_unchanged_bitwise():
    w = jnp.asarray(w_star(), jnp.float32)
    as_numpy = np.asarray(forks(w_star())[1], np.float32)
    as_jax = jnp.asarray(as_numpy)
    before = (as_numpy.tobytes(), np.asarray(as_jax).tobytes(), np.asarray(w).tobytes())
    for params in (as_numpy, as_jax):
        probe_lib.probe(loss_fn, params, sample_with(w), population_loss_with(w),
                        batch_size=4, learning_rate=0.05, factors=(1, 2), branch_examples=16,
                        repeats=2)
    assert (as_numpy.tobytes(), np.asarray(as_jax).tobytes(), np.asarray(w).tobytes()) == before


@pytest.mark.parametrize("field, change", [
    ("factors", {"factors": (0, 1, 2)}),
    ("factors", {"factors": (1, 4, 2)}),
    ("factors", {"factors": (1, 2, 2)}),
    ("factors", {"factors": (2, 4)}),
    ("factors", {"factors": ()}),
    ("tolerance", {"tolerance": 0.0}),
    ("tolerance", {"tolerance": -0.1}),
    ("branch_examples", {"branch_examples": 4}),  # < the largest batch, 8
    ("branch_examples", {"branch_examples": 12}),  # not a multiple of 8
    ("batch_size", {"batch_size": 0}),
    ("learning_rate", {"learning_rate": 0.0}),
    ("repeats", {"repeats": 0}),
])
def test_bad_arguments_name_the_argument(field, change):
    w = jnp.zeros(D)
    kwargs = dict(batch_size=4, learning_rate=0.05, factors=(1, 2), branch_examples=16,
                  tolerance=0.5, repeats=2) | change
    with pytest.raises(UsageError, match=field) as raised:
        probe_lib.probe(loss_fn, w, sample_with(w), population_loss_with(w), **kwargs)
    assert raised.value.field == field
    assert isinstance(raised.value, ValueError)


def test_a_x1_branch_without_progress_is_refused():
    """At the optimum with a large step the ×1 branch only adds noise: nothing to compare."""
    w = jnp.asarray(w_star(), jnp.float32)
    with pytest.raises(UsageError, match="did not lower the loss"):
        probe_lib.probe(loss_fn, w, sample_with(w), population_loss_with(w), batch_size=4,
                        learning_rate=0.5, factors=(1, 2), branch_examples=16, repeats=4)


def test_critical_batch_reads_off_geometrically():
    read = probe_lib.critical_batch
    # halfway in lost fraction between 8 and 16: √(8·16)
    assert read((4, 8, 16), (0.0, 0.25, 0.75), 0.5) == (pytest.approx(8 * 2 ** 0.5), False)
    assert read((4, 8, 16), (0.0, 0.3, 0.9), 0.5) == (pytest.approx(8 * 2 ** (1 / 3)), False)
    assert read((4, 8, 16), (0.0, 0.5, 0.9), 0.5) == (pytest.approx(8.0), False)  # at: within
    assert read((4, 8, 16), (0.0, 0.8, 0.9), 0.5) == (pytest.approx(4 * 2 ** 0.625), False)
    assert read((4, 8, 16), (0.0, 0.1, 0.2), 0.5) == (16.0, True)  # censored: a lower bound
    assert read((4, 8, 16), (0.0, 0.1, float("nan")), 0.5) == (8.0, False)  # diverged
    assert read((4, 8, 16), (0.0, 0.1, float("inf")), 0.5) == (8.0, False)


if __name__ == "__main__":  # the numbers for docs/probe.md's results
    w = w_star()
    for (bs, r), v in zip(measured(), forks(w)):
        want = [expected_loss(v - w, B0 / (B0 + bs) * b / B0, b, 256 // b) for b in r.batch_sizes]
        lost = [(x - want[0]) / (r.fork_loss - want[0]) for x in want]
        print(f"|e|² {(v - w) @ (v - w):.3f} B_simple {bs:.2f} cbs {r.cbs:.2f} "
              f"ratio {r.cbs / bs:.3f} censored {r.censored} fork {r.fork_loss:.4f} "
              f"losses {np.round(r.losses, 4).tolist()} lost {np.round(r.lost, 3).tolist()} "
              f"expected-loss cbs {probe_lib.critical_batch(r.batch_sizes, lost, 0.5)}")
