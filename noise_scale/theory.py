"""The noise-scale calculus of Smith & Le (2017) and Smith et al. (2018).

SGD with learning rate ε, batch size B, momentum m (u-form: v ← m·v + ∇L,
w ← w − ε·v) on N training examples fluctuates with the scale

    g = ε / (1 − m) · (N / B − 1)

Everything here is pure Python on floats so that schedules, configs and the
command line can use it without touching an accelerator. Every function
validates its arguments and raises :class:`ValueError` naming the argument,
because a silently wrong g would silently change an experiment.
"""

from __future__ import annotations

import math

__all__ = [
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
        raise ValueError(f"{name} must be a positive finite number, got {value!r}.")


def _check_momentum(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1) (0 = plain SGD), got {value!r}; "
            "momentum 1 would make the effective learning rate ε/(1−m) infinite."
        )


def _check_batch(batch_size: float, dataset_size: float) -> None:
    _check_positive("dataset_size", dataset_size)
    _check_positive("batch_size", batch_size)
    if batch_size > dataset_size:
        raise ValueError(
            f"batch_size {batch_size} exceeds dataset_size {dataset_size}; a batch "
            "cannot hold more than the whole training set."
        )


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
        raise ValueError(
            "batch_size equals dataset_size: full-batch descent has g = 0 for every "
            "learning rate, so no learning rate reaches a positive target g."
        )
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
        raise ValueError(
            "batch_size equals dataset_size: full-batch descent has g = 0 for every "
            "momentum, so no momentum reaches a positive target g (m -> 1 only makes "
            "the step infinite). Choose a batch_size below dataset_size."
        )
    sgd_noise = learning_rate * (dataset_size / batch_size - 1.0)
    momentum = 1.0 - sgd_noise / noise
    if momentum < 0.0:
        raise ValueError(
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
