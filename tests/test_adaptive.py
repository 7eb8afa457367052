"""Adam by its own noise scale: the square-root rule, b2 per example, ε_adam/√κ, AdamW's λ."""

import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from noise_scale import adaptive, config_lib, optim, theory
from noise_scale.config import validation
from noise_scale.errors import ConfigError
from noise_scale.schedule import schedule_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def adam(variant="increase_batch_sqrt", file="mnist1d_adam.py", **overrides):
    return config_lib.load_config(f"configs/{file}:{variant}",
                                  [(k, str(v)) for k, v in overrides.items()])


# ------------------------------------------------------------------ theory
@pytest.mark.parametrize("kappa", [2.0, 5.0, 25.0, 125.0, 0.3])
def test_the_temperature_is_invariant_under_b_times_kappa_and_eta_times_root_kappa(kappa):
    t = theory.adam_temperature(1e-3, 32)
    assert theory.adam_temperature(1e-3 * math.sqrt(kappa), 32 * kappa) == pytest.approx(
        t, rel=1e-12)
    # and not under SGD's pairing (B×κ, η×κ), unless κ = 1
    assert theory.adam_temperature(1e-3 * kappa, 32 * kappa) == pytest.approx(
        t * math.sqrt(kappa), rel=1e-12)


def test_the_solvers_invert_the_temperature():
    t = theory.adam_temperature(3e-4, 800)
    assert theory.solve_adam_batch_size(t, 3e-4) == pytest.approx(800, rel=1e-12)
    assert theory.solve_adam_learning_rate(t, 800) == pytest.approx(3e-4, rel=1e-12)
    assert theory.scale_batch_for_adam_learning_rate(32, 5.0) == 800  # B ∝ η²
    model = theory.NOISE_MODELS["adam_sqrt"]
    assert model.solve_batch_size(model.value(1e-3, 160, 40_000, 0.9), 1e-3, 40_000, 0.9) == \
        pytest.approx(160, rel=1e-12)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="learning_rate"):
            theory.adam_temperature(bad, 32)


def test_b2_eps_and_adamw_decay_follow_kappa():
    assert theory.adam_b2_for_batch(0.999, 160, 32) == pytest.approx(0.999**5, abs=1e-15)
    assert theory.adam_eps_for_batch(1e-8, 800, 32) == pytest.approx(1e-8 / 5, rel=1e-12)
    assert theory.adamw_decay_for_batch(0.1, 800, 32, "sqrt") == pytest.approx(0.5, rel=1e-12)
    assert theory.adamw_decay_for_batch(0.1, 800, 32, "linear") == 0.1
    # 1 − b2' ≈ κ(1 − b2): the SDE rule's (1 − β2)×κ while κ(1 − β2) ≪ 1
    assert 1 - theory.adam_b2_for_batch(0.9999, 64, 32) == pytest.approx(2e-4, rel=1e-3)


# ------------------------------------------------------------------ the plans
def test_the_sqrt_plan_has_increase_batchs_update_count_and_eta_over_root_5_per_boundary():
    sgd = schedule_from_config(config_lib.load_config("configs/mnist1d.py:increase_batch"))
    sqrt = schedule_from_config(adam("increase_batch_sqrt"))
    ref = schedule_from_config(adam("decay_lr"))
    assert sqrt.total_updates == sgd.total_updates == 18_480
    assert [s.batch_size for s in sqrt.stages] == [32, 160, 800, 4000]
    lrs = [s.learning_rate for s in sqrt.stages]
    for a, b in zip(lrs, lrs[1:]):
        assert a / b == pytest.approx(math.sqrt(5), rel=1e-12)
    # every stage's temperature is the reference's (the reference decays η÷5 at B = 32)
    assert sqrt.noise_model == ref.noise_model == "adam_sqrt"
    assert sqrt.noise_scales() == pytest.approx(ref.noise_scales(), rel=1e-12)
    assert sqrt.noise_scales() == pytest.approx(list(sqrt.target_noise), rel=1e-12)
    # the linear arm is the paper's: B×5 at fixed η, SGD's g with b1 as m
    linear = schedule_from_config(adam("increase_batch_linear"))
    assert [s.learning_rate for s in linear.stages] == [1e-3] * 4
    assert linear.noise_model == "sgd" and linear.total_updates == 18_480


def test_b2_per_stage_is_b2_to_the_b_over_b0():
    for file in ("mnist1d_adam.py", "mnist1d_adamw.py"):
        config = adam("increase_batch_sqrt", file)
        for stage in schedule_from_config(config).stages:
            b2 = adaptive.per_batch(config, stage.batch_size)["b2"]
            assert abs(b2 - 0.999 ** (stage.batch_size / 32)) < 1e-12
        fixed = adam("increase_batch_sqrt_fixed_b2", file)
        assert {adaptive.per_batch(fixed, s.batch_size)["b2"]
                for s in schedule_from_config(fixed).stages} == {0.999}


@pytest.mark.parametrize("variant", ["increase_batch_sqrt", "increase_batch_linear"])
def test_adamw_keeps_the_references_weight_decay_timescale_at_every_stage(variant):
    ref_config, config = adam("decay_lr", "mnist1d_adamw.py"), adam(variant, "mnist1d_adamw.py")
    n = config.dataset_size

    def taus(c):
        return [theory.weight_decay_timescale(s.batch_size, s.learning_rate,
                                              adaptive.per_batch(c, s.batch_size)["weight_decay"],
                                              n) for s in schedule_from_config(c).stages]

    assert taus(config) == pytest.approx(taus(ref_config), rel=1e-12)
    assert taus(ref_config) == pytest.approx([8.0, 40.0, 200.0, 1000.0], rel=1e-12)
    # and the sqrt stages with the linear arm's λ (fixed) would not keep it
    if variant == "increase_batch_sqrt":
        fixed = [s.batch_size / (s.learning_rate * 0.1 * n)
                 for s in schedule_from_config(config).stages]
        assert fixed[-1] == pytest.approx(1000.0 * math.sqrt(125), rel=1e-9)


def test_b_proportional_to_eta_squared_and_the_cap_under_sqrt():
    """increased_lr (lr_scale 5) starts at B = 32·25 = 800; the hybrid rule at its cap puts
    ε = T·√cap, so every stage keeps the reference's temperature."""
    config = config_lib.load_config("configs/mnist1d.py:increased_lr",
                                    [("optimizer", "adam"), ("schedule.learning_rate", "0.001")])
    s = schedule_from_config(config)
    ref = schedule_from_config(adam("decay_lr"))
    assert [st.batch_size for st in s.stages] == [800, 4000, 4000, 4000]
    assert s.noise_scales() == pytest.approx(ref.noise_scales(), rel=1e-12)


def test_a_shaped_ladder_keeps_the_references_temperature_at_every_example():
    over = [("optimizer", "adam"), ("schedule.learning_rate", "0.001")]
    ladder = schedule_from_config(config_lib.load_config(
        "configs/mnist1d_cosine.py:cosine_increase_batch", over))
    ref = schedule_from_config(config_lib.load_config(
        "configs/mnist1d_cosine.py:cosine_decay_lr", over))
    assert len(ladder.stages) > 1 and ladder.total_updates < ref.total_updates
    for p in range(0, ladder.total_examples - 4000, 9_973):
        assert ladder.noise_scale_at(p) == pytest.approx(ref.noise_scale_at(p), rel=1e-9), p
        assert ladder.learning_rate_at(p) <= 1e-3 * (1 + 1e-12)  # never above η_max


# -------------------------------------------------------------- the optimizer
def _step(config, batch_size, steps=3):
    s = schedule_from_config(config)
    tx = optim.create_optimizer(config, s)
    params = {"kernel": jnp.arange(6.0).reshape(2, 3) / 7, "bias": jnp.ones(3)}
    rng = np.random.default_rng(0)
    state, out = tx.init(params), []
    for _ in range(steps):
        grads = {k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
        u, state = tx.update(grads, state, params, batch_size=batch_size)
        out.append((grads, u))
    return params, out


@pytest.mark.parametrize("file,factory", [
    ("mnist1d_adam.py", lambda hp: optax.adam(1e-3, b1=0.9, b2=hp["b2"], eps=hp["eps"])),
    ("mnist1d_adamw.py", lambda hp: optax.adamw(1e-3, b1=0.9, b2=hp["b2"], eps=hp["eps"],
                                                  weight_decay=hp["weight_decay"],
                                                  mask=optim.decay_mask)),
])
def test_the_compiled_update_uses_the_per_batch_b2_eps_and_lambda(file, factory):
    """At B = 160 (κ = 5) the update equals optax's with b2 = .999⁵, ε/√5 and (AdamW) λ·√5;
    the first stage's η (1e-3) is what the clock reads at position 0."""
    config = adam("increase_batch_sqrt", file)
    hp = adaptive.per_batch(config, 160)
    assert hp["b2"] == pytest.approx(0.999**5) and hp["eps"] == pytest.approx(1e-8 / 5**0.5)
    params, out = _step(config, 160, steps=4)
    ref, fixed = factory(hp), factory(dict(hp, b2=0.999))
    r_state, f_state = ref.init(params), fixed.init(params)
    for grads, u in out:
        expected, r_state = ref.update(grads, r_state, params)
        other, f_state = fixed.update(grads, f_state, params)
        for k in params:
            np.testing.assert_allclose(u[k], expected[k], rtol=2e-5, atol=1e-9)
    # and by the fourth step b2 = .999 would have given another update: the rescale acts
    assert not np.allclose(u["kernel"], other["kernel"], rtol=1e-3, atol=0)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("overrides,field", [
    ({"schedule.adam_rule": "sqrt"}, "schedule.adam_rule"),  # the SGD family
    ({"optimizer": "adam", "schedule.adam_rule": "root"}, "schedule.adam_rule"),
    ({"optimizer": "adam", "schedule.learning_rate": 1e-3, "adam_b2": 0.1}, "adam_b2"),  # → 0
    ({"optimizer": "adam", "schedule.learning_rate": 1e-3, "adam_b2": 0.9999999,
      "schedule.lr_scale": 0.1}, "adam_b2"),  # B0 = 1 < 32: b2^(1/32) rounds to 1 in float32
    ({"optimizer": "adamw", "schedule.raise_momentum_to": 0.98}, "schedule.raise_momentum_to"),
])
def test_bad_adam_input_names_the_field(overrides, field):
    config = config_lib.load_config("configs/mnist1d.py:increase_batch",
                                    [(k, str(v)) for k, v in overrides.items()])
    with pytest.raises(ConfigError) as info:
        validation.validate_config(config)
    assert str(info.value).startswith(f"config.{field}="), str(info.value)
    assert "Fix: " in str(info.value)


def test_the_fixes_named_are_valid():
    validation.validate_config(adam("increase_batch_sqrt", adam_b2_rescale=False, adam_b2=0.1))
    validation.validate_config(config_lib.load_config(
        "configs/mnist1d.py:increased_momentum",
        [("optimizer", "adam"), ("schedule.adam_rule", "linear")]))


def test_adam_rule_with_sgd_exits_2_naming_the_field_before_any_work(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([sys.executable, "-m", "noise_scale.main",
                        "--config=configs/mnist1d.py:increase_batch",
                        "--config.schedule.adam_rule=sqrt", f"--workdir={tmp_path / 'run'}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "config.schedule.adam_rule='sqrt' is invalid" in r.stderr
    assert not (tmp_path / "run").exists()
