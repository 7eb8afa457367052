"""The noise-scale calculus of Smith & Le (2017) and Smith et al. (2018).

SGD with learning rate ε, batch size B, momentum m (u-form: v ← m·v + ∇L,
w ← w − ε·v) on N training examples fluctuates with the scale

    g = ε / (1 − m) · (N / B − 1)

Everything here is pure Python on floats so that schedules, configs and the
command line can use it without touching an accelerator. Every function
validates its arguments and raises :class:`~noise_scale.errors.ScheduleError` (a
``ValueError``) naming the argument in its message and its ``field``, because a
silently wrong g would silently change an experiment.

Adaptive optimizers (Adam, AdamW) have their own temperature, T = η/√B (the
square-root rule, :func:`adam_temperature`), and :data:`NOISE_MODELS` lets the
schedule rules solve either one with the same code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from noise_scale.errors import ScheduleError

__all__ = [
    "NOISE_MODELS",
    "NoiseModel",
    "adam_b2_for_batch",
    "adam_eps_for_batch",
    "adam_temperature",
    "adamw_decay_for_batch",
    "scale_batch_for_adam_learning_rate",
    "solve_adam_batch_size",
    "solve_adam_learning_rate",
    "weight_decay_timescale",
    "effective_learning_rate",
    "noise_scale",
    "solve_batch_size",
    "solve_learning_rate",
    "solve_momentum",
    "scale_batch_for_learning_rate",
    "scale_batch_for_momentum",
]


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ScheduleError(f"{name} must be a positive finite number, got {value!r}.",
                            field=name if name.isidentifier() else None)


def _check_momentum(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ScheduleError(
            f"{name} must lie in [0, 1) (0 = plain SGD), got {value!r}; "
            "momentum 1 would make the effective learning rate ε/(1−m) infinite.", field=name)


def _check_batch(batch_size: float, dataset_size: float) -> None:
    _check_positive("dataset_size", dataset_size)
    _check_positive("batch_size", batch_size)
    if batch_size > dataset_size:
        raise ScheduleError(
            f"batch_size {batch_size} exceeds dataset_size {dataset_size}; a batch "
            "cannot hold more than the whole training set.", field="batch_size")


def effective_learning_rate(learning_rate: float, momentum: float = 0.0) -> float:
    """ε / (1 − m): the step a momentum optimizer takes in steady state."""
    _check_positive("learning_rate", learning_rate)
    _check_momentum("momentum", momentum)
    return learning_rate / (1.0 - momentum)


def noise_scale(
    learning_rate: float, batch_size: float, dataset_size: float, momentum: float = 0.0
) -> float:
    """The exact noise scale g = ε/(1−m)·(N/B − 1).

    Zero when B = N (full-batch gradient descent has no noise).
    """
    _check_batch(batch_size, dataset_size)
    return effective_learning_rate(learning_rate, momentum) * (dataset_size / batch_size - 1.0)


def _check_target(noise: float) -> None:
    _check_positive("noise (target g)", noise)


def solve_batch_size(
    noise: float, learning_rate: float, dataset_size: float, momentum: float = 0.0
) -> float:
    """The (real-valued) B that gives noise scale ``noise``: B = N / (g(1−m)/ε + 1).

    Always lies in (0, N); rounding to a whole or device-divisible batch is the
    schedule's job, which reports the g error that rounding causes.
    """
    _check_target(noise)
    _check_positive("dataset_size", dataset_size)
    ratio = noise / effective_learning_rate(learning_rate, momentum)
    return dataset_size / (ratio + 1.0)


def solve_learning_rate(
    noise: float, batch_size: float, dataset_size: float, momentum: float = 0.0
) -> float:
    """The ε that gives noise scale ``noise``: ε = g(1−m) / (N/B − 1)."""
    _check_target(noise)
    _check_batch(batch_size, dataset_size)
    _check_momentum("momentum", momentum)
    if batch_size == dataset_size:
        raise ScheduleError(
            "batch_size equals dataset_size: full-batch descent has g = 0 for every "
            "learning rate, so no learning rate reaches a positive target g.", field="batch_size")
    return noise * (1.0 - momentum) / (dataset_size / batch_size - 1.0)


def solve_momentum(
    noise: float, learning_rate: float, batch_size: float, dataset_size: float
) -> float:
    """The m that gives noise scale ``noise``: m = 1 − ε(N/B − 1)/g.

    Raises if the target is below what plain SGD (m = 0) already gives, since
    momentum can only raise g, and if B = N, where g = 0 for every m.
    """
    _check_target(noise)
    _check_positive("learning_rate", learning_rate)
    _check_batch(batch_size, dataset_size)
    if batch_size == dataset_size:
        raise ScheduleError(
            "batch_size equals dataset_size: full-batch descent has g = 0 for every "
            "momentum, so no momentum reaches a positive target g (m -> 1 only makes "
            "the step infinite). Choose a batch_size below dataset_size.", field="batch_size")
    sgd_noise = learning_rate * (dataset_size / batch_size - 1.0)
    momentum = 1.0 - sgd_noise / noise
    if momentum < 0.0:
        raise ScheduleError(
            f"target g = {noise:g} is below plain SGD's g = {sgd_noise:g} at this "
            "learning rate and batch size; momentum only raises g. Lower the "
            "learning_rate or raise the batch_size instead."
        )
    return momentum


def scale_batch_for_learning_rate(batch_size: float, factor: float) -> float:
    """The B ∝ ε rule: multiplying ε by ``factor`` keeps g if B grows by ``factor``."""
    _check_positive("batch_size", batch_size)
    _check_positive("factor", factor)
    return batch_size * factor


def scale_batch_for_momentum(batch_size: float, momentum: float, new_momentum: float) -> float:
    """The B ∝ 1/(1−m) rule: the B that keeps g when m becomes ``new_momentum``."""
    _check_positive("batch_size", batch_size)
    _check_momentum("momentum", momentum)
    _check_momentum("new_momentum", new_momentum)
    return batch_size * (1.0 - momentum) / (1.0 - new_momentum)


# ----------------------------------------------------------------------------- Adam
def adam_temperature(learning_rate: float, batch_size: float) -> float:
    """T = η/√B: the noise temperature of Adam's update (the square-root rule).

    Derivation (Malladi, Lyu, Panigrahi & Arora, NeurIPS 2022, "On the SDEs and
    Scaling Rules for Adaptive Gradient Algorithms"). A mini-batch gradient of B
    examples is G + ξ with Cov ξ = Σ/B. In the noise-dominated regime (|G|² ≪ tr Σ/B,
    i.e. B well below the gradient noise scale B_simple = tr Σ/|G|²) Adam's second
    moment settles at v ≈ diag Σ/B, so its step is η·(G + ξ)/√v ≈ η√B·Σ^(-1/2)(G + ξ).
    Per example seen (1/B updates), the drift is η·Σ^(-1/2)G/√B and the noise variance
    η²/B: their ratio, the temperature of the SDE both limit to, is η/√B. Multiplying B
    by κ therefore keeps the dynamics if η grows by √κ (not κ, as SGD's g = ε/(1−m)·N/B
    would say), and a learning-rate decay ε÷k has the batch equivalent B×k with η÷√k
    (the same number of updates as SGD's B×k) or B×k² at fixed η.

    Where it fails: once B approaches B_simple, v is dominated by G² rather than by the
    noise, Adam's step becomes sign-like and no longer shrinks its noise as 1/√B; the
    rule then over-states the noise left. ε_adam must also stay small against √v
    (``adam_eps_for_batch`` scales it by 1/√κ for that reason). B ≪ N is assumed: the
    finite-N factor of SGD's form is not part of this one.
    """
    _check_positive("learning_rate", learning_rate)
    _check_positive("batch_size", batch_size)
    return learning_rate / math.sqrt(batch_size)


def solve_adam_batch_size(temperature: float, learning_rate: float) -> float:
    """The B at which η has temperature T: B = (η/T)²."""
    _check_positive("temperature", temperature)
    _check_positive("learning_rate", learning_rate)
    return (learning_rate / temperature) ** 2


def solve_adam_learning_rate(temperature: float, batch_size: float) -> float:
    """The η that gives temperature T at batch B: η = T·√B."""
    _check_positive("temperature", temperature)
    _check_positive("batch_size", batch_size)
    return temperature * math.sqrt(batch_size)


def scale_batch_for_adam_learning_rate(batch_size: float, factor: float) -> float:
    """The B ∝ η² rule: multiplying η by ``factor`` keeps T if B grows by ``factor``²."""
    _check_positive("batch_size", batch_size)
    _check_positive("factor", factor)
    return batch_size * factor**2


def adam_b2_for_batch(b2: float, batch_size: float, reference_batch_size: float) -> float:
    """β2' = β2^(B/B_ref): the second moment's memory fixed in *examples*, not updates.

    β2 = 0.999 remembers ~1,000 updates: 0.8 epoch of MNIST-1D at B = 32 but 100 epochs
    at B = 4,000. Raising it to the power B/B_ref keeps its half-life at the reference's
    number of examples (Marek et al., NeurIPS 2025), and 1 − β2' ≈ κ(1 − β2), the SDE
    rule's (1 − β2)×κ, while κ(1 − β2) ≪ 1.
    """
    if not (isinstance(b2, (int, float)) and 0.0 <= b2 < 1.0):
        raise ScheduleError(f"b2 must lie in [0, 1), got {b2!r}.", field="b2")
    _check_positive("batch_size", batch_size)
    _check_positive("reference_batch_size", reference_batch_size)
    return b2 ** (batch_size / reference_batch_size)


def adam_eps_for_batch(eps: float, batch_size: float, reference_batch_size: float) -> float:
    """ε_adam/√κ (κ = B/B_ref): √v shrinks as 1/√B, so ε_adam must too to stay as small
    against it as at the reference's batch (the SDE rule's ε_adam/√κ)."""
    _check_positive("eps", eps)
    _check_positive("batch_size", batch_size)
    _check_positive("reference_batch_size", reference_batch_size)
    return eps / math.sqrt(batch_size / reference_batch_size)


def adamw_decay_for_batch(weight_decay: float, batch_size: float, reference_batch_size: float,
                          rule: str) -> float:
    """AdamW's λ at batch B that keeps the weight-decay timescale τ = B/(η·λ·N) the reference's.

    Decoupled decay shrinks w by η·λ per update, so by η·λ/B per example: τ (in epochs)
    is B/(η·λ·N) (Bergsma et al. 2025, "Power Lines"). A stage that replaces the
    reference's (B_ref, η_ref) keeps τ when λ = λ_ref·(B/B_ref)·(η_ref/η). Under the
    ``sqrt`` rule the stage has the reference's temperature, η_ref = η·√(B_ref/B), so
    λ = λ_ref·√(B/B_ref); under the ``linear`` rule η_ref = η·B_ref/B and λ = λ_ref.
    Both depend on B alone, so λ is fixed per compiled step.
    """
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0):
        raise ScheduleError(f"weight_decay must be >= 0, got {weight_decay!r}.",
                            field="weight_decay")
    _check_positive("batch_size", batch_size)
    _check_positive("reference_batch_size", reference_batch_size)
    if rule == "sqrt":
        return weight_decay * math.sqrt(batch_size / reference_batch_size)
    if rule == "linear":
        return weight_decay
    raise ScheduleError(f"rule must be 'sqrt' or 'linear', got {rule!r}.", field="adam_rule")


def weight_decay_timescale(batch_size: float, learning_rate: float, weight_decay: float,
                           dataset_size: float) -> float:
    """τ = B/(η·λ·N): the epochs over which decoupled weight decay shrinks w by e."""
    _check_positive("batch_size", batch_size)
    _check_positive("learning_rate", learning_rate)
    _check_positive("weight_decay", weight_decay)
    _check_positive("dataset_size", dataset_size)
    return batch_size / (learning_rate * weight_decay * dataset_size)


# ------------------------------------------------------------------- noise models
@dataclasses.dataclass(frozen=True)
class NoiseModel:
    """How an optimizer's noise depends on (ε, B, N, m), for the schedule rules to solve.

    ``value(lr, B, N, m)``, ``solve_batch_size(t, lr, N, m)`` and
    ``solve_learning_rate(t, B, N, m)`` are each other's inverses; ``lr_step`` is the
    factor ε changes by when B grows by ``factor`` at equal noise along the paper's
    update-count (B×k per ε÷k step: 1 for SGD, 1/√k for Adam's square-root rule);
    ``batch_for_lr_scale(B, k)`` is B ∝ ε (SGD) or B ∝ η² (Adam).
    """

    name: str
    symbol: str  # how tables label the quantity
    value: Callable[[float, float, float, float], float]
    solve_batch_size: Callable[[float, float, float, float], float]
    solve_learning_rate: Callable[[float, float, float, float], float]
    lr_step: Callable[[float], float]
    batch_for_lr_scale: Callable[[float, float], float]


SGD_NOISE = NoiseModel(
    "sgd", "g", noise_scale, solve_batch_size, solve_learning_rate, lambda factor: 1.0,
    scale_batch_for_learning_rate)
ADAM_SQRT = NoiseModel(
    "adam_sqrt", "T",
    lambda lr, b, n, m: adam_temperature(lr, b),
    lambda t, lr, n, m: solve_adam_batch_size(t, lr),
    lambda t, b, n, m: solve_adam_learning_rate(t, b),
    lambda factor: 1.0 / math.sqrt(factor),
    scale_batch_for_adam_learning_rate)
NOISE_MODELS = {m.name: m for m in (SGD_NOISE, ADAM_SQRT)}
