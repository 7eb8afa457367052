"""The gradient noise scale B_simple = tr(Σ)/|G|², measured inside the train step for free.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training", appendix A)
estimate |G|² and tr(Σ) without bias from the squared norms of mean gradients at two
batch sizes, B_small < B_big:

    |G|²  ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)
    tr Σ  ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

Data parallelism already computes both. Each device's own mean gradient (or each
micro-batch's, with accumulation) is a gradient at B_small; the averaged one is the
gradient at B_big = B. The step squares each small gradient's norm where it is made
(``sq_norm``: one reduction, no gradient buffer kept), the square is averaged over
devices by the gradient ``pmean`` that already runs (one more scalar in that
all-reduce), and the averaged gradient's norm is squared once more. On one device
without accumulation there is no second batch size for free, so the step computes
its gradient as two halves side by side (the same FLOPs; not a ``scan``, which
XLA:CPU runs ~10× slower for convolutions) — each half must hold whole ghost batches,
or batch norm would normalise over other groups than the full batch does.

Each step's estimates are very noisy; the numerator and the denominator are smoothed
separately (bias-corrected exponential moving averages) and divided afterwards. The
averages decay per *example* seen, not per step: weight ``exp(−B/τ)`` per step of
batch B, so a batch-size change leaves the smoothing horizon τ (in examples) alone.
Their state lives in ``TrainState.noise`` and so travels with every checkpoint.

The norms are computed on every k-th step only (``config.noise_scale_every_steps``):
inside the compiled step a ``lax.cond`` on the state's step phase runs the reductions
on a measuring step and skips them otherwise (the all-reduced scalar is then 0, still
riding in the gradients' all-reduce). A measuring step's estimate stands for every
example since the last one: the averages decay by exp(−(examples since)/τ), still per
example, so neither k nor a batch change alters the smoothing horizon.

B_simple is the *simple* noise scale, not the critical batch size: it assumes a
well-conditioned Hessian, and the critical batch is usually somewhat below it. With
Adam it measures the raw (not the preconditioned) gradients.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from noise_scale.models.layers import effective_ghost_size

# The step's extra metrics, after parallel.STEP_METRICS' own four (raw: this step's
# estimates, NaN where the stage cannot measure; smoothed: bias-corrected averages).
STEP_METRICS = ("gradient_norm_sq_raw", "gradient_noise_trace_raw",
                "gradient_norm_sq", "gradient_noise_trace")
RAW = STEP_METRICS[:2]  # = metrics.RAW_NOISE


class NoiseState(NamedTuple):
    """Exponential moving averages of the two estimates, and the weight they carry.

    ``weight`` is 1 − Π decay: the bias correction (averages ÷ weight are unbiased
    from the first step on, as in Adam).
    """

    gradient_norm_sq: jax.Array
    gradient_noise_trace: jax.Array
    weight: jax.Array
    phase: jax.Array  # int32: steps since the last measuring step, mod k (0: measure now)
    pending: jax.Array  # int32: examples of the unmeasured steps since the last measuring one


def init_state() -> NoiseState:
    # separate buffers, not one shared: the step donates its state, and a buffer donated
    # twice fails
    return NoiseState(*(jnp.zeros([], jnp.float32) for _ in range(3)),
                      *(jnp.zeros([], jnp.int32) for _ in range(2)))


@dataclasses.dataclass(frozen=True)
class Measure:
    """How one compiled step measures: the smoothing horizon and whether to split in halves."""

    ema_examples: float  # τ: a step of batch B decays the averages by exp(−B/τ)
    halves: bool = False  # one device, no accumulation: two half-batch gradients
    every_steps: int = 1  # k: the norms are computed on every k-th step only


def halves_possible(per_device: int, ghost_size: int) -> bool:
    """Whether a device's batch splits into two halves that each hold whole ghost batches."""
    if per_device % 2:
        return False
    return not ghost_size or (per_device // 2) % effective_ghost_size(per_device, ghost_size) == 0


def small_batches(devices: int, accumulation_steps: int, halves: bool) -> int:
    """How many gradients at B_small make up one gradient at B (1: nothing to compare)."""
    return devices * (accumulation_steps if accumulation_steps > 1 else 2 if halves else 1)


def measure_for(config, plan, devices: int) -> Measure | None:
    """The measurement for ``plan``'s compiled step, or None when the config turns it off."""
    if not config.measure_noise_scale:
        return None
    halves = (devices == 1 and plan.accumulation_steps == 1
              and halves_possible(plan.micro_batch, config.ghost_batch_size))
    return Measure(config.noise_scale_ema_epochs * config.dataset_size, halves,
                   config.noise_scale_every_steps)


def unmeasured_stages(config, plans, devices: int) -> list[str]:
    """Warnings for stages with no second batch size (one device, a batch that cannot halve)."""
    out = []
    for p in plans:
        m = measure_for(config, p, devices)
        if m is not None and small_batches(devices, p.accumulation_steps, m.halves) < 2:
            out.append(
                f"stage {p.index}: B={p.batch_size} on one device does not split into two "
                f"halves of whole ghost batches (config.ghost_batch_size="
                f"{config.ghost_batch_size}), so the gradient noise scale is not measured in "
                "this stage; the smoothed values carry over from the stage before.")
    return out


def sq_norm(tree) -> jax.Array:
    """|g|² of a gradient pytree, accumulated in float32."""
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree))


def estimates(small_sq, big_sq, b_small: int, b_big: int) -> tuple[jax.Array, jax.Array]:
    """Unbiased (|G|², tr Σ) from the mean |g|² at ``b_small`` and |g|² at ``b_big``."""
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    return g2, trace


def update(state: NoiseState, g2, trace, examples, ema_examples: float) -> NoiseState:
    """One estimate into the averages, decayed per example seen (``examples`` of them)."""
    decay = jnp.exp(-jnp.asarray(examples, jnp.float32) / jnp.float32(ema_examples))
    mix = lambda avg, x: decay * avg + (1 - decay) * x  # noqa: E731
    return state._replace(gradient_norm_sq=mix(state.gradient_norm_sq, g2),
                          gradient_noise_trace=mix(state.gradient_noise_trace, trace),
                          weight=mix(state.weight, jnp.float32(1)))


def measuring_now(state: NoiseState) -> jax.Array:
    """Whether this step computes the norms (a traced bool: the ``lax.cond``'s predicate)."""
    return state.phase == 0


def advance(state: NoiseState, now, small_sq, big_sq, b_small: int, batch_size: int,
            measure: Measure):
    """(state, raw estimates) after one step; a step with ``now`` false only counts its
    examples and step (raw: NaN), a measuring one folds in all examples since the last."""
    examples = state.pending + batch_size
    raw = estimates(small_sq, big_sq, b_small, batch_size)
    new = update(state, *raw, examples, measure.ema_examples)
    new = jax.tree.map(lambda a, b: jnp.where(now, a, b), new, state)
    return new._replace(phase=(state.phase + 1) % measure.every_steps,
                        pending=jnp.where(now, 0, examples)), \
        tuple(jnp.where(now, r, jnp.nan) for r in raw)


def smoothed(state: NoiseState) -> tuple[jax.Array, jax.Array]:
    """The bias-corrected averages (NaN before the first measured step)."""
    w = jnp.where(state.weight > 0, state.weight, jnp.nan)
    return state.gradient_norm_sq / w, state.gradient_noise_trace / w


def step_metrics(state: NoiseState, raw) -> list[jax.Array]:
    """The four STEP_METRICS values of a step: raw (g2, trace) then the smoothed pair."""
    return [*raw, *smoothed(state)]


def noise_scale(gradient_norm_sq, gradient_noise_trace) -> float | None:
    """B_simple = tr Σ / |G|²; None while |G|² is not yet measured positive."""
    if not (math.isfinite(gradient_norm_sq) and math.isfinite(gradient_noise_trace)):
        return None
    return gradient_noise_trace / gradient_norm_sq if gradient_norm_sq > 0 else None


def measured(step: dict) -> float | None:
    """B_simple from a step's unpacked metrics (None where the step does not measure)."""
    return noise_scale(step.get("gradient_norm_sq", math.nan),
                       step.get("gradient_noise_trace", math.nan))


def _finite_or_none(v) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def record_fields(last: dict, raw_means: dict) -> dict:
    """A record's noise-scale fields: B_simple and the smoothed terms at the window's last
    step, and the example-weighted means of the raw estimates over the window.
    Empty when the step does not measure."""
    if "gradient_norm_sq" not in last:
        return {}
    g2, trace = last["gradient_norm_sq"], last["gradient_noise_trace"]
    return {
        "noise_scale_measured": measured(last),
        "gradient_norm_sq": _finite_or_none(g2),
        "gradient_noise_trace": _finite_or_none(trace),
        **{k: _finite_or_none(raw_means.get(k)) for k in RAW},
    }
