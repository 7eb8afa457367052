"""The measured gradient noise scale against a problem whose G and Σ are known exactly.

Softmax regression at zero weights (learning rate 1e-30, as 0 as the schedule allows:
the weights move by < 1e-26) on
Gaussian class clusters: x = μ_y + z, z ~ N(0, I_d), y uniform over C classes. Every
example's gradient is (p − e_y) ⊗ (x, 1) with p = 1/C, so

    G    = E[(p − e_y) ⊗ μ_y]                        (the bias part averages to 0)
    E|g|² = (C − 1)/C · (d + mean_y |μ_y|² + 1),   tr Σ = E|g|² − |G|².

Fresh examples every batch (i.i.d. draws: ``Measure.dataset_size`` = inf) make the
step's estimates unbiased; their smoothed values
over BATCHES batches of 64, measured on every EVERY-th (200 measured batches), must lie
within 5 % of the truth (sampling error about 1.4 % for the noisiest case, two halves;
measured by simulation: 1 % with 400 measured batches).
"""

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from noise_scale import gns, optim, parallel
from noise_scale.data.sampler import ArraySource, Sampler
from noise_scale.schedule import Schedule, Stage
from tests.helpers import optimizer_config

D, C, B, BATCHES, EVERY = 32, 4, 64, 2000, 10
TAU = 1e9  # smoothing horizon in examples: ≫ BATCHES × B, so the average is nearly uniform


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(C, kernel_init=nn.initializers.zeros)(x)


def means(scale=3.0):
    mu = np.random.default_rng(0).normal(size=(C, D))
    return scale * mu / np.linalg.norm(mu, axis=1, keepdims=True)


def truth(mu):
    p, eye = np.full(C, 1 / C), np.eye(C)
    g = sum(np.outer(mu[y], p - eye[y]) for y in range(C)) / C
    g2 = float((g ** 2).sum())
    return g2, (C - 1) / C * (D + (mu ** 2).sum(1).mean() + 1) - g2


def batches(mu, seed=1):
    rng = np.random.default_rng(seed)
    while True:
        y = rng.integers(0, C, B)
        yield {"input": (mu[y] + rng.normal(size=(B, D))).astype(np.float32),
               "label": y.astype(np.int32)}


def measure(devices, accumulation=1, steps=BATCHES, halves=True, every=EVERY, data=None,
            dataset_size=math.inf, model=None, weight_decay=0.0):
    """(the last step's metrics, the host averages, the parameters) after ``steps`` steps
    on ``data`` (default: fresh examples, i.e. i.i.d. draws)."""
    mesh, model = parallel.make_mesh(jax.devices()[:devices]), model or Linear()
    schedule = Schedule(10**6, (Stage(0, 10, B, 1e-30, 0.9),))  # fixed parameters
    tx = optim.create_optimizer(optimizer_config(weight_decay=weight_decay), schedule)
    state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, D)), mesh)
    step = stage_step(model, tx, mesh, gns.Measure(halves, every, dataset_size, weight_decay),
                      batch_size=B, accumulation_steps=accumulation)
    data, averages = data or batches(means()), gns.Averages(TAU)
    for i in range(steps):  # as the loop: the update count picks the program
        state, m = step(state, parallel.shard_batch(next(data), mesh), i)
        # one step fetched at a time: thousands queued on XLA:CPU's simulated devices
        # deadlocked an all-reduce (the loop keeps two in flight)
        m = parallel.unpack_metrics(jax.device_get(m))
        averages.add(B, m)
    return m, averages, jax.device_get(state.params)


def stage_step(model, tx, mesh, measure, **kw):
    """The loop's StageStep from the jitted (not ahead-of-time compiled) programs."""
    plain = parallel.make_train_step(model, tx, mesh, **kw)
    measuring = (parallel.make_train_step(model, tx, mesh, measure=measure, **kw)
                 if parallel.measures(measure, mesh.size, kw.get("accumulation_steps", 1))
                 else None)
    return parallel.StageStep(plain, measuring, measure.every_steps)


@pytest.mark.parametrize("devices,accumulation", [(1, 1), (8, 1), (2, 4)],
                         ids=["one-device-halves", "eight-devices", "accumulation"])
def test_smoothed_estimates_within_5_percent_of_truth(devices, accumulation):
    g2, trace = truth(means())
    _, averages, params = measure(devices, accumulation)
    got_g2, got_trace = averages.smoothed()
    assert got_g2 == pytest.approx(g2, rel=0.05)
    assert got_trace == pytest.approx(trace, rel=0.05)
    assert averages.noise_scale == pytest.approx(trace / g2, rel=0.1)
    assert np.abs(np.asarray(params["Dense_0"]["kernel"])).max() < 1e-25  # held fixed


# A finite training set drawn by the sampler: N examples, a permutation per epoch. ---------
# N = 256 fixed examples of weaker clusters (|μ_y| = 1.5): B_simple = 58.4, so the i.i.d.
# formulas' bias (|G|² low by tr Σ/(N − 1), B_simple ×~N/(N − B_simple)) is ~+28 % (|G|²
# −22 %), far outside the 5 % the corrected estimates must meet (their sampling error over
# 400 measured steps: ≤ 1.4 % s.d. for the halves by simulation, 0.6 % for 8 small batches).
N_FIXED, STEPS_FIXED = 256, 400


def fixed_design():
    """(x, y, |G|², tr Σ): the N examples and their exact moments. Each example's gradient
    at zero weights is (p − e_y) ⊗ (x, 1); G is their mean and tr Σ their mean |g_i − G|²
    (the population's 1/N normalisation)."""
    rng = np.random.default_rng(2)
    y = rng.integers(0, C, N_FIXED)
    x = means(1.5)[y] + rng.normal(size=(N_FIXED, D))
    r = np.full(C, 1 / C) - np.eye(C)[y]
    g = np.concatenate([(x[:, :, None] * r[:, None, :]).reshape(N_FIXED, -1), r], axis=1)
    x = x.astype(np.float32)
    centred = g - g.mean(0)
    return x, y.astype(np.int32), float(g.mean(0) @ g.mean(0)), float((centred ** 2).sum(1).mean())


def sampled(x, y, seed=1):
    """The sampler's batches of B from ``x, y``: without replacement within each epoch."""
    schedule = Schedule(len(x), (Stage(0, 10**4, B, 1e-30, 0.9),))
    sampler = Sampler(ArraySource({"input": x, "label": y}), schedule, seed)
    return (sampler.batch_at(p, B).data for p in itertools.count(0, B))


@pytest.mark.parametrize("devices,accumulation", [(1, 1), (8, 1), (2, 4)],
                         ids=["one-device-halves", "eight-devices", "accumulation"])
def test_estimates_are_unbiased_under_the_samplers_draws_without_replacement(devices,
                                                                             accumulation):
    x, y, g2, trace = fixed_design()
    _, averages, _ = measure(devices, accumulation, steps=STEPS_FIXED, every=1,
                             data=sampled(x, y), dataset_size=N_FIXED)
    got_g2, got_trace = averages.smoothed()
    assert got_g2 == pytest.approx(g2, rel=0.05)
    assert got_trace == pytest.approx(trace, rel=0.05)
    assert averages.noise_scale == pytest.approx(trace / g2, rel=0.05)
    # The i.i.d. formulas on the same steps (the correction undone: it is linear, so it
    # commutes with the averages) miss by far more than the test allows.
    iid_trace = got_trace * N_FIXED / (N_FIXED - 1)
    iid_g2 = got_g2 - iid_trace / N_FIXED
    assert iid_g2 < 0.85 * g2
    assert iid_trace / iid_g2 > 1.15 * trace / g2


class Fixed(nn.Module):
    """Softmax regression at a fixed kernel ``W0`` (bias 0)."""

    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(C, kernel_init=lambda *_: jnp.asarray(W0, jnp.float32))(x)


W0 = 0.1 * np.random.default_rng(3).normal(size=(D, C))


def test_with_coupled_weight_decay_the_objectives_gradient_is_measured():
    # objective = data loss + λ/2·|kernel|²: every gradient gains λ·W0 on the kernel (not the
    # bias, ``optim.decay_mask``). Exact per-example data gradients at W0: (p_i − e_y) ⊗ (x, 1).
    x, y, _, _ = fixed_design()
    logits = x.astype(np.float64) @ W0
    p = np.exp(logits - logits.max(1, keepdims=True))
    r = p / p.sum(1, keepdims=True) - np.eye(C)[y]
    g = np.concatenate([(x[:, :, None] * r[:, None, :]).reshape(N_FIXED, -1), r], axis=1)
    lam = 0.5
    shift = np.concatenate([lam * W0.ravel(), np.zeros(C)])
    data_g2, obj_g2 = g.mean(0) @ g.mean(0), (g.mean(0) + shift) @ (g.mean(0) + shift)
    trace = ((g - g.mean(0)) ** 2).sum(1).mean()
    assert abs(obj_g2 / data_g2 - 1) > 0.2  # the two gradients differ: the test can tell
    _, averages, _ = measure(8, steps=STEPS_FIXED, every=1, data=sampled(x, y),
                             dataset_size=N_FIXED, model=Fixed(), weight_decay=lam)
    got_g2, got_trace = averages.smoothed()
    assert got_g2 == pytest.approx(obj_g2, rel=0.05)
    assert got_trace == pytest.approx(trace, rel=0.05)  # a constant shift has no variance


def test_the_record_says_whose_gradient_is_measured():
    from tests.helpers import optimizer_config as config

    assert gns.measured_gradient(config("momentum", 5e-4)) == "objective"
    assert gns.measure_for(measuring(config("momentum", 5e-4)), plan(), 8).weight_decay == 5e-4
    assert gns.measured_gradient(config("adamw", 0.05)) == "data_loss"  # decoupled: no term
    assert gns.measure_for(measuring(config("adamw", 0.05)), plan(), 8).weight_decay == 0.0
    assert gns.measured_gradient(config("adamw", 0.0)) == "objective"  # no decay: the same


def measuring(config):
    config.measure_noise_scale = True
    return config


def plan():
    from noise_scale.schedule import schedule_from_config
    from tests.helpers import optimizer_config as config

    return schedule_from_config(config()).plan(8)[0]


def test_the_finite_population_terms_vanish_as_n_grows():
    a, b = np.array([3.0, 1.0]), np.array([1.0, -1.0])
    small, big = (a @ a + b @ b) / 2, ((a + b) / 2) @ ((a + b) / 2)
    iid = gns.estimates(small, big, 1, 2)
    g2, trace = gns.estimates(small, big, 1, 2, dataset_size=4)
    assert trace == pytest.approx(iid[1] * 3 / 4)  # the population's 1/N covariance
    assert g2 == pytest.approx(iid[0] + iid[1] / 4)  # |G|² gains tr Σ_iid / N
    assert gns.estimates(small, big, 1, 2, dataset_size=1e12) == pytest.approx(iid, rel=1e-9)


def test_every_kth_step_measures_and_folds_in_the_examples_since_the_last():
    # k = 3: updates 0, 3, 6 measure; each later one stands for 3 × 64 examples
    step = parallel.StageStep("plain", "measuring", every=3)
    assert [step.measures(u) for u in range(7)] == [True, False, False] * 2 + [True]
    assert parallel.StageStep(None, "measuring", every=3).measures(1)  # k = 1: one program
    each, third = measure(8, steps=7, every=1)[1], measure(8, steps=7, every=3)[1]
    m, averages, _ = measure(8, steps=6, every=3)
    assert "gradient_norm_sq_raw" not in m  # the sixth ran the plain program ...
    assert averages.pending == 2 * B  # ... and its examples wait for the next estimate
    s = gns.Averages(TAU)
    raws = [measure(8, steps=steps, every=1)[0] for steps in (1, 4, 7)]
    for examples, r in zip((B, 3 * B, 3 * B), raws):
        s.update(r["gradient_norm_sq_raw"], r["gradient_noise_trace_raw"], examples)
    assert third.state == pytest.approx(s.state, rel=1e-12)  # the same steps' estimates
    assert not np.allclose(each.state[:3], third.state[:3], rtol=1e-7)


def test_one_device_that_cannot_halve_runs_the_plain_step_and_keeps_the_averages():
    m, averages, _ = measure(1, steps=3, halves=False)
    assert "gradient_norm_sq_raw" not in m
    assert averages.weight == 0 and averages.pending == 3 * B
    assert gns.record_fields(averages, {}, "objective")["noise_scale_measured"] is None


def test_estimates_are_the_appendix_formulas():
    # two small gradients a, b at B_small = 1: |G|² ≈ a·b and tr Σ ≈ |a − b|²/2
    a, b = np.array([3.0, 1.0]), np.array([1.0, -1.0])
    small, big = (a @ a + b @ b) / 2, ((a + b) / 2) @ ((a + b) / 2)
    g2, trace = gns.estimates(small, big, 1, 2)
    assert float(g2) == pytest.approx(a @ b)
    assert float(trace) == pytest.approx((a - b) @ (a - b) / 2)


def test_averages_decay_per_example_not_per_step():
    # one step of B = 64 decays exactly as 64 steps of B = 1 with the same estimate
    s1, s2 = gns.Averages(100.0), gns.Averages(100.0)
    s1.update(2.0, 3.0, 64)
    for _ in range(64):
        s2.update(2.0, 3.0, 1)
    assert s1.state[:-1] == pytest.approx(s2.state[:-1], rel=1e-12)
    # ... but 64 measurements are more evidence than one: Σ weight² is not a decay
    assert s2.measurements > 30 * s1.measurements == pytest.approx(30.0)
    assert s1.smoothed() == pytest.approx((2.0, 3.0))  # bias-corrected


def test_the_horizon_holds_at_least_min_measurements():
    # one measurement spans 1,000 τ: τ alone keeps only the newest; the floor keeps ~2M − 1
    bare, floored = gns.Averages(64.0), gns.Averages(64.0, min_measurements=20)
    rng = np.random.default_rng(0)
    for g2, trace in rng.normal((1.0, 50.0), (0.3, 10.0), size=(500, 2)):
        bare.update(g2, trace, 64_000)
        floored.update(g2, trace, 64_000)
    assert bare.measurements == pytest.approx(1.0)
    assert floored.measurements == pytest.approx(2 * 20 - 1, rel=1e-6)
    assert bare.standard_error() is None  # one measurement: no spread to read


@pytest.mark.parametrize("tau", [1e12, 64 * 30.0], ids=["equal-weights", "ema"])
def test_standard_error_matches_the_spread_over_repeats(tau):
    # correlated (|G|², tr Σ) draws of known spread; 150 measurements per repeat: the delta
    # method's standard error must match the s.d. of B_simple over 400 repeats (the s.d. of
    # that s.d. is ~3.5 %)
    rng = np.random.default_rng(1)
    cov = [[0.3 ** 2, 0.5 * 0.3 * 10], [0.5 * 0.3 * 10, 10.0 ** 2]]
    b, se = [], []
    for _ in range(400):
        a = gns.Averages(tau)
        for g2, trace in rng.multivariate_normal([1.0, 50.0], cov, size=150):
            a.update(g2, trace, 64)
        b.append(a.noise_scale)
        se.append(a.standard_error())
    assert np.mean(se) == pytest.approx(np.std(b), rel=0.12)
    assert np.mean(b) == pytest.approx(50.0, rel=0.02)


def test_an_old_checkpoints_averages_restore_with_no_invented_spread():
    old = gns.Averages.restore(1e4, [0.5, 25.0, 0.9, 64], min_measurements=20)
    assert old.smoothed() == pytest.approx((0.5 / 0.9, 25.0 / 0.9))
    assert old.measurements == pytest.approx(1.0) and old.standard_error() is None
    old.update(0.6, 20.0, 64)
    assert old.standard_error() > 0  # the next measurements bring their own spread


def test_averages_survive_the_checkpoint_meta_exactly():
    import json

    s = gns.Averages(1e4)
    for i in range(5):
        s.add(64, {"gradient_norm_sq_raw": 0.1 * i + 1 / 3, "gradient_noise_trace_raw": 7 / (i + 1)})
    s.add(64, {"loss": 1.0})  # a step that does not measure: its examples wait
    back = gns.Averages.restore(1e4, json.loads(json.dumps(s.state)))
    assert back == s and back.pending == 64


def test_sq_norm_concatenates_the_small_tensors_and_reduces_large_ones_in_place():
    big = gns.CONCAT_MAX_ELEMENTS + 1
    tree = {"kernel": np.full((big,), 0.5, np.float32), "bias": np.arange(3.0, dtype=np.float32),
            "scale": np.float32([2.0])}
    assert float(gns.sq_norm(tree)) == pytest.approx(0.25 * big + 5 + 4)
    jaxpr = str(jax.make_jaxpr(gns.sq_norm)(tree))
    # the two small tensors copied into one vector of 4; the large one never copied
    assert jaxpr.count("concatenate") == 1 and "f32[4] = concatenate" in jaxpr.replace("\n", " ")


def test_halves_hold_whole_ghost_batches():
    assert gns.halves_possible(64, 0) and gns.halves_possible(64, 16)
    assert not gns.halves_possible(63, 0)
    assert gns.halves_possible(96, 64)  # ghost batches of 48: a half holds exactly one
    assert not gns.halves_possible(24, 8)  # halves of 12 would cut a ghost batch of 8
    assert not gns.halves_possible(40, 40)  # one ghost batch of 40 cannot halve


def compiled_text_and_flops(devices, measure, accumulation=1):
    from noise_scale.models.mnist1d import MLP
    from tests.test_parallel import batch, schedule

    # the MLP with ghost batch norm compiles in a fraction of the CNN's time; the same step
    model, mesh = MLP(ghost_size=8), parallel.make_mesh(jax.devices()[:devices])
    tx = optim.create_optimizer(optimizer_config(), schedule())
    state = parallel.create_train_state(model, tx, jax.random.key(0), jnp.zeros((1, 40)), mesh)
    step = parallel.make_train_step(model, tx, mesh, batch_size=64, has_batch_stats=True,
                                    accumulation_steps=accumulation,
                                    measure=gns.Measure(halves=True) if measure else None)
    compiled = step.lower(state, parallel.shard_batch(batch(0), mesh)).compile()
    params = jax.tree.leaves(state.params)
    return compiled.as_text(), compiled.cost_analysis()["flops"], len(params), sum(
        p.size for p in params)


def count(text, op):
    import re

    return len(re.findall(rf"\s{op}\(", text))


@pytest.mark.parametrize("devices,accumulation",  # (2, 4): ~6 s more, in the slow tier
                         [(8, 1), pytest.param(2, 4, marks=pytest.mark.slow)])
def test_the_measurement_adds_reductions_and_one_scalar_to_the_all_reduce(devices, accumulation):
    off, flops_off, leaves, params = compiled_text_and_flops(devices, False, accumulation)
    on, flops_on, _, _ = compiled_text_and_flops(devices, True, accumulation)
    assert count(on, "all-reduce") == count(off, "all-reduce") == 1  # no collective of its own
    operands = lambda t: t.split(" all-reduce(")[1].split(")")[0].count("%")  # noqa: E731
    assert operands(on) == operands(off) + 1  # the small batches' mean |g|²
    # |g|² and |ḡ|², each one reduction over the concatenated gradient (not one per tensor)
    assert leaves > 1 and count(on, "reduce") - count(off, "reduce") == 2
    for heavy in ("convolution", "dot"):
        assert count(on, heavy) == count(off, heavy)
    # a few FLOPs per parameter for each squared norm (measured 5 in all for 8 devices)
    norms = max(accumulation, 1) + 1
    assert flops_on - flops_off <= 3 * norms * params


def test_one_device_halves_cost_the_same_flops_plus_the_norms():
    # two half-batch gradients in place of one: the same matmul FLOPs, plus three norms
    off, flops_off, _, params = compiled_text_and_flops(1, False)
    on, flops_on, _, _ = compiled_text_and_flops(1, True)
    assert flops_on - flops_off <= 3 * 3 * params


def test_noise_figure_draws_measured_runs_and_skips_the_rest(tmp_path):
    from noise_scale.experiments import figure

    measured = [{"epoch": e, "batch_size": b, "noise_scale_measured": m}
                for e, b, m in ((1, 32, 100.0), (2, 160, 190.0), (3, 800, 600.0))]
    old = [{"epoch": 1, "batch_size": 32}]  # a run from before the measurement
    curves = figure.noise_curves({"increase_batch": [measured], "decay_lr": [old]})
    assert [c["name"] for c in curves] == ["increase_batch"]
    assert curves[0]["measured"] == [100.0, 190.0, 600.0]
    figure.plot_noise_scale(curves, tmp_path / "n.png", boundaries=(1.0, 2.0))
    assert (tmp_path / "n.png").stat().st_size > 0


def test_noise_figure_draws_the_interval_and_the_caps_thresholds(tmp_path):
    """B_simple ± 1.96 SE from the records, and each decision's c × bound at its boundary."""
    from noise_scale.experiments import figure

    reads = [{"stage": 1, "batch_size": 160, "grew": True, "measured": 900.0,
              "lower": 850.0, "cap": 170.0},
             {"stage": 2, "batch_size": 800, "grew": False, "measured": 1200.0,
              "lower": 700.0, "cap": 140.0}]
    rows = [{"epoch": e, "stage": s, "batch_size": b, "noise_scale_measured": m,
             "noise_scale_measured_se": se}
            for e, s, b, m, se in ((1, 0, 32, 100.0, 10.0), (2, 1, 160, 190.0, 200.0),
                                   (3, 2, 160, 600.0, 50.0))]
    rows[-1]["cap_bounds"] = reads
    (curve,) = figure.noise_curves({"measured_cap": [rows]})
    low, high = zip(*curve["interval"])
    assert low[0] == pytest.approx(100 - 19.6) and high[0] == pytest.approx(100 + 19.6)
    assert low[1] == pytest.approx(1.9)  # an interval reaching 0 is cut at B_simple / 100
    assert [(e, r["grew"]) for e, r in curve["decisions"]] == [(1, True), (2, False)]
    figure.plot_noise_scale([curve], tmp_path / "n.png", boundaries=(1.0, 2.0))
    assert (tmp_path / "n.png").stat().st_size > 0
