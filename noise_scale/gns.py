"""The gradient noise scale B_simple = tr(Σ)/|G|², measured inside the train step for free.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training", appendix A)
estimate |G|² and tr(Σ) without bias from the squared norms of mean gradients at two
batch sizes, B_small < B_big:

    |G|²  ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)
    tr Σ  ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

They assume i.i.d. draws. The sampler draws without replacement within an epoch
(``data.sampler``), so a batch of B from the N examples has E|g_B|² = |G|² +
tr Σ·(N/B − 1)/(N − 1), with Σ the covariance of the N per-example gradients (1/N
normalisation). Read with the i.i.d. formulas, the tr Σ estimate is N/(N − 1) too high
and the |G|² estimate low by tr Σ/(N − 1): B_simple then reads B·N/(N − B) for a true
B, and any true value ≥ N reads |G|² ≤ 0. ``estimates`` solves the two equations at
B_small and B_big with this finite-population term instead (``Measure.dataset_size``);
both estimates are then unbiased under the sampler. (A batch that spans an epoch's end
mixes two permutations: exact only up to that rare overlap.)

Data parallelism already computes both. Each device's own mean gradient (or each
micro-batch's, with accumulation) is a gradient at B_small; the averaged one is the
gradient at B_big = B. The step squares each small gradient's norm where it is made
(``sq_norm``: the small tensors in one reduction over their concatenation, the large
ones each in place; no gradient buffer kept),
the square is averaged over devices by the gradient ``pmean`` that already runs (one
more scalar in that all-reduce), and the averaged gradient's norm is squared once more.
On one device without accumulation there is no second batch size for free, so the step
computes its gradient as two halves side by side (the same FLOPs; not a ``scan``, which
XLA:CPU runs ~10× slower for convolutions) — each half must hold whole ghost batches,
or batch norm would normalise over other groups than the full batch does.

Only every k-th update measures (``config.noise_scale_every_steps``), and the others
run a program without the measurement: a measuring stage compiles two programs, the
plain step (exactly the step of a run that does not measure) and the measuring one,
and the host picks by the update count (``parallel.StageStep``). The measuring step
returns its two raw estimates as two more metrics and nothing else: it carries no
state. One program with a ``lax.cond`` on a step phase and the averages as device
state cost 6-9 % of a small CPU step even on the steps that skipped the norms
(benchmarks/RESULTS.md); the measuring program alone costs ~3 %, once in k updates.

Each step's estimates are very noisy; the numerator and the denominator are smoothed
separately (bias-corrected exponential moving averages, ``Averages``) and divided
afterwards. The averages are kept on the host, in float64, folded in as the loop
fetches the step metrics (all processes fetch the same all-reduced values, so all
agree), and saved in the checkpoint's meta, so a resume continues them exactly. They
decay per *example* seen, not per step: a measuring step's estimate stands for every
example since the last one and the averages decay by exp(−examples/τ), so neither k
nor a batch change alters the smoothing horizon τ (in examples) — but never by more
than 1 − 1/M per measurement (``config.noise_scale_min_measurements``), so a late
stage's average still holds M measurements. With the measured cap every update
measures in the stretch before a boundary where the cap decides (``cap.dense_from``).
Each record carries B_simple's standard error (delta method, ``Averages``).

The gradient measured is the objective's: the optimizer's coupled L2 adds λw to every
gradient, which shifts the squared norms by a known amount (``objective_shift``).

B_simple is the *simple* noise scale, not the critical batch size: it assumes a
well-conditioned Hessian, and the critical batch is of the same order, task-dependent.
With Adam it measures the raw (not the preconditioned) gradients.
"""

from __future__ import annotations

import dataclasses
import math

# The step's extra metrics, after parallel.STEP_METRICS' own four: the measuring step's
# unbiased estimates of |G|² and tr Σ (absent from a step that does not measure).
STEP_METRICS = ("gradient_norm_sq_raw", "gradient_noise_trace_raw")
RAW = STEP_METRICS  # the names the records and metrics.RAW_NOISE use


@dataclasses.dataclass(frozen=True)
class Measure:
    """How one stage's steps measure: whether to split in halves, and how often.

    (The smoothing horizon is the host's, ``Averages``: the compiled step never sees it.)
    """

    halves: bool = False  # one device, no accumulation: two half-batch gradients
    every_steps: int = 1  # k: the measuring program runs on every k-th update only
    # N, the examples the sampler draws from without replacement (inf: fresh i.i.d. draws,
    # the paper's formulas); the estimates are unbiased for this population
    dataset_size: float = math.inf
    # λ of the L2 the optimizer adds to the gradient (``optim.l2_coefficient``): the
    # measured gradient is the objective's, data loss + λ/2·|w|² (``objective_shift``)
    weight_decay: float = 0.0


def halves_possible(per_device: int, ghost_size: int) -> bool:
    """Whether a device's batch splits into two halves that each hold whole ghost batches."""
    from noise_scale.models.layers import effective_ghost_size

    if per_device % 2:
        return False
    return not ghost_size or (per_device // 2) % effective_ghost_size(per_device, ghost_size) == 0


def in_halves(devices: int, accumulation_steps: int) -> bool:
    """The rule for a second batch size where there is none: one device without
    accumulation measures with two halves of its batch (if ``halves_possible``)."""
    return devices == 1 and accumulation_steps == 1


def small_batches(devices: int, accumulation_steps: int, halves: bool) -> int:
    """How many gradients at B_small make up one gradient at B (1: nothing to compare)."""
    return devices * (accumulation_steps if accumulation_steps > 1 else 2 if halves else 1)


def measure_for(config, plan, devices: int) -> Measure | None:
    """The measurement for ``plan``'s compiled step, or None when the config turns it off."""
    if not config.measure_noise_scale:
        return None
    halves = (in_halves(devices, plan.accumulation_steps)
              and halves_possible(plan.micro_batch, config.ghost_batch_size))
    from noise_scale import optim

    return Measure(halves, config.noise_scale_every_steps, config.dataset_size,
                   optim.l2_coefficient(config))


def measured_gradient(config) -> str:
    """Whose gradient B_simple is of, as the record says: ``objective`` (the data loss plus
    the optimizer's coupled L2, if any) or ``data_loss`` (a decay that is no gradient term,
    AdamW's: the objective then has none either, and the data loss's is what is measured)."""
    from noise_scale import optim

    return "data_loss" if config.weight_decay and not optim.l2_coefficient(config) else "objective"


def ema_examples(config) -> float:
    """τ, the smoothing horizon in examples."""
    return config.noise_scale_ema_epochs * config.dataset_size


def averages_for(config, state=None) -> Averages | None:
    """The run's averages (from a checkpoint's ``state``), or None when it does not measure."""
    if not config.measure_noise_scale:
        return None
    return Averages.restore(ema_examples(config), state, config.noise_scale_min_measurements)


def programs_per_batch_size(config) -> int:
    """Programs a run compiles per batch size, at most: two where it measures on every k-th
    update with k > 1 (the plain step and the measuring one), else one."""
    return 2 if config.measure_noise_scale and config.noise_scale_every_steps > 1 else 1


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


# Leaves up to this many elements are squared as one concatenated vector; larger ones each
# in place. One reduction per tensor is a separate loop per device on XLA:CPU (the small
# CNN's measuring step cost ~4 % more that way), while concatenating a large tensor copies
# it (ResNet-50's 25M parameters: two more passes over the gradient per norm).
CONCAT_MAX_ELEMENTS = 1 << 16


def sq_norm(tree):
    """|g|² of a gradient pytree, accumulated in float32: the small leaves concatenated
    into one reduction, each large leaf reduced where it lies (``CONCAT_MAX_ELEMENTS``)."""
    import jax
    import jax.numpy as jnp

    leaves = [x.astype(jnp.float32).ravel() for x in jax.tree.leaves(tree)]
    small = [x for x in leaves if x.size <= CONCAT_MAX_ELEMENTS]
    terms = [jnp.dot(x, x) for x in leaves if x.size > CONCAT_MAX_ELEMENTS]
    if small:
        flat = jnp.concatenate(small) if len(small) > 1 else small[0]
        terms.append(jnp.dot(flat, flat))
    return sum(terms[1:], terms[0])


def objective_shift(grads, params, weight_decay: float, mask):
    """|g + λw|² − |g|² = 2λ w·g + λ²|w|² for the averaged gradient g, over ``mask``'s leaves.

    The objective's gradient is every gradient plus the same λw, so its squared norms are
    the data loss's plus a shift: exactly this one for the big batch, and for the mean over
    small batches too (their mean gradient is g). Adding it to both leaves tr Σ unchanged
    (a constant vector has no variance) and moves |G|² to |G + λw|², still unbiased (the
    shift is linear in g). Two dot products over the weights, once per measuring step.
    """
    import jax
    import jax.numpy as jnp

    pairs = [(w.astype(jnp.float32).ravel(), g.astype(jnp.float32).ravel())
             for w, g, m in zip(jax.tree.leaves(params), jax.tree.leaves(grads),
                                jax.tree.leaves(mask)) if m]
    return sum(weight_decay * jnp.dot(w, 2 * g + weight_decay * w) for w, g in pairs)


def estimates(small_sq, big_sq, b_small: int, b_big: int, dataset_size: float = math.inf):
    """Unbiased (|G|², tr Σ) from the mean |g|² at ``b_small`` and |g|² at ``b_big``, for
    batches drawn without replacement from ``dataset_size`` examples (inf: i.i.d.).

    E|g_b|² = |G|² + tr Σ·c(b) with c(b) = (N/b − 1)/(N − 1), so
    tr Σ = (|g_small|² − |g_big|²)/(c(b_small) − c(b_big)) and |G|² = |g_big|² − tr Σ·c(b_big);
    written as the i.i.d. formulas (the limit N → ∞) and their finite-N terms.
    """
    g2 = (b_big * big_sq - b_small * small_sq) / (b_big - b_small)
    trace = (small_sq - big_sq) / (1.0 / b_small - 1.0 / b_big)
    # the i.i.d. trace is the sample covariance's (÷ N − 1); the population's is (N − 1)/N of
    # it, and |G|² gains trace_iid/N (both 0 corrections for N = inf)
    return g2 + trace / dataset_size, trace * (1.0 - 1.0 / dataset_size)


@dataclasses.dataclass
class Averages:
    """Bias-corrected exponential moving averages of the two estimates, on the host.

    ``weight`` is 1 − Π decay: the bias correction (averages ÷ weight are unbiased from
    the first measurement on, as in Adam). ``pending`` counts the examples of the steps
    since the last measuring one: the next estimate stands for them too.

    The horizon is τ examples *or* ``min_measurements`` measurements, whichever is
    longer: a measurement decays the averages by max(exp(−examples/τ), 1 − 1/M). At a
    large B one measurement covers more than τ (B = 4,000, k = 10: 0.25 τ = 40,000
    examples in 10 updates), and without the floor the "average" would be one raw
    estimate. The second moments and ``weight_sq`` (Σ of the squared weights) give
    ``measurements`` (the effective number, weight²/weight_sq) and B_simple's standard
    error (``standard_error``).
    """

    ema_examples: float
    gradient_norm_sq: float = 0.0
    gradient_noise_trace: float = 0.0
    weight: float = 0.0
    pending: int = 0
    gradient_norm_sq_sq: float = 0.0  # the averages of |G|²², tr Σ² and |G|²·tr Σ
    gradient_noise_trace_sq: float = 0.0
    gradient_norm_sq_trace: float = 0.0
    weight_sq: float = 0.0
    min_measurements: int = dataclasses.field(default=1, kw_only=True)  # M: config, not state

    def update(self, g2: float, trace: float, examples: int) -> None:
        """One estimate into the averages, decayed per example seen (``examples`` of them),
        but never faster than 1 − 1/M per measurement."""
        decay = max(math.exp(-examples / self.ema_examples), 1.0 - 1.0 / self.min_measurements)
        new = 1.0 - decay
        for name, value in (("gradient_norm_sq", g2), ("gradient_noise_trace", trace),
                            ("gradient_norm_sq_sq", g2 * g2),
                            ("gradient_noise_trace_sq", trace * trace),
                            ("gradient_norm_sq_trace", g2 * trace), ("weight", 1.0)):
            setattr(self, name, decay * getattr(self, name) + new * value)
        self.weight_sq = decay * decay * self.weight_sq + new * new

    def add(self, batch_size: int, step: dict) -> None:
        """One step's unpacked metrics: a measuring step's estimates fold in every example
        since the last one; any other step only counts its examples."""
        self.pending += batch_size
        if RAW[0] in step:
            self.update(step[RAW[0]], step[RAW[1]], self.pending)
            self.pending = 0

    def smoothed(self) -> tuple[float, float]:
        """The bias-corrected averages (NaN before the first measured step)."""
        if self.weight <= 0:
            return math.nan, math.nan
        return self.gradient_norm_sq / self.weight, self.gradient_noise_trace / self.weight

    @property
    def noise_scale(self) -> float | None:
        return noise_scale(*self.smoothed())

    @property
    def measurements(self) -> float:
        """The effective number of measurements in the averages, weight² / Σ weight² (equal
        weights: their count; at the floor's stationary state, 2M − 1)."""
        return self.weight ** 2 / self.weight_sq if self.weight_sq > 0 else 0.0

    def standard_error(self) -> float | None:
        """B_simple's standard error by the delta method on the raw estimates.

        B = T/G from the averages T and G; Var B ≈ (Var T − 2B Cov(T, G) + B² Var G)/G²
        (``_moments``). Treats the measurements as independent and their spread as steady
        over the horizon. None with no B_simple or n ≤ 1.
        """
        b, moments = self.noise_scale, self._moments()
        if b is None or moments is None:
            return None
        g, _, var_g, var_t, cov = moments
        return math.sqrt(max(var_t - 2 * b * cov + b * b * var_g, 0.0)) / g

    def lower_bound(self, z: float) -> float | None:
        """A one-sided lower confidence bound of B_simple at ``z`` standard errors (Fieller's).

        The b with (T − bG)² ≤ z²·Var(T − bG) form the interval; its low end solves
        (G² − z² Var G) b² − 2(TG − z² Cov) b + (T² − z² Var T) = 0. Unlike B − z·SE it
        stays honest when |G|² is small beside its error: there, where G² ≤ z² Var G (|G|²
        not shown positive), the interval is unbounded and there is no bound (None), nor
        with fewer than two measurements.
        """
        moments = self._moments()
        if moments is None:
            return None
        g, t, var_g, var_t, cov = moments
        a, beta, gamma = g * g - z * z * var_g, t * g - z * z * cov, t * t - z * z * var_t
        if a <= 0:
            return None
        return (beta - math.sqrt(max(beta * beta - a * gamma, 0.0))) / a

    def _moments(self):
        """(G, T, Var G, Var T, Cov) of the averages, or None with n ≤ 1: each (co)variance
        is the raw estimates' weighted one ÷ (n − 1), n = ``measurements`` (reliability
        weights: exact for independent estimates of equal spread)."""
        n, w = self.measurements, self.weight
        if n <= 1 or w <= 0:
            return None
        g, t = self.smoothed()
        return (g, t, (self.gradient_norm_sq_sq / w - g * g) / (n - 1),
                (self.gradient_noise_trace_sq / w - t * t) / (n - 1),
                (self.gradient_norm_sq_trace / w - g * t) / (n - 1))

    @property
    def state(self) -> list:
        """What the checkpoint's meta holds (JSON floats round-trip exactly)."""
        return [self.gradient_norm_sq, self.gradient_noise_trace, self.weight, self.pending,
                self.gradient_norm_sq_sq, self.gradient_noise_trace_sq,
                self.gradient_norm_sq_trace, self.weight_sq]

    @classmethod
    def restore(cls, ema_examples: float, state=None, min_measurements: int = 1) -> Averages:
        """From a checkpoint's ``state``. One written before the second moments existed
        (four numbers) counts its history as one measurement at the averages' value: no
        spread is invented, and the standard error starts with the next measurements."""
        out = cls(ema_examples, *(state or ()), min_measurements=min_measurements)
        if state and len(state) == 4 and out.weight > 0:
            g, t = out.smoothed()
            out.gradient_norm_sq_sq, out.gradient_noise_trace_sq = g * g * out.weight, t * t * out.weight
            out.gradient_norm_sq_trace, out.weight_sq = g * t * out.weight, out.weight ** 2
        return out


def noise_scale(gradient_norm_sq, gradient_noise_trace) -> float | None:
    """B_simple = tr Σ / |G|²; None while |G|² is not yet measured positive."""
    if not (math.isfinite(gradient_norm_sq) and math.isfinite(gradient_noise_trace)):
        return None
    return gradient_noise_trace / gradient_norm_sq if gradient_norm_sq > 0 else None


def _finite_or_none(v) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def record_fields(averages: Averages | None, raw_means: dict, gradient: str) -> dict:
    """A record's noise-scale fields: B_simple, its standard error (delta method,
    ``Averages.standard_error``) and the effective number of measurements behind it, whose
    gradient it is (``measured_gradient``), the smoothed terms as the averages hold them
    now, and the example-weighted means of the raw estimates over the window. Empty when
    the run does not measure."""
    if averages is None:
        return {}
    g2, trace = averages.smoothed()
    return {
        "noise_scale_measured": noise_scale(g2, trace),
        "noise_scale_gradient": gradient,
        "noise_scale_measured_se": averages.standard_error(),
        "noise_scale_measurements": averages.measurements,
        "gradient_norm_sq": _finite_or_none(g2),
        "gradient_noise_trace": _finite_or_none(trace),
        **{k: _finite_or_none(raw_means.get(k)) for k in RAW},
    }
