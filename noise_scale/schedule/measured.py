"""The measured ladder (``schedule.rule = "measured"``): B grows where the branching probe
says the critical batch has, and the learning-rate shape's noise scale is kept throughout.

The run is cut into probe intervals of ``probe.every_epochs``: stage j covers epochs
[j·every, (j+1)·every) (the last one to ``total_epochs``). Stage 0 runs at B0 with the
shape's ε; at the start of each later stage the probe (``train.branching``) branches at
B·k, k = 1, 2, 4, …, and that stage and every later one take the largest candidate batch
size not above the measured critical batch — never smaller than the batch in force.
Each stage's ε is solved so that its noise scale equals the shape's reference at B0
(``ladder.stage_multiplier``, exact form): B grows ×k, ε follows (SGD: ≈ ×k; Adam under
the square-root rule: ×√k), the rule the probe's branches ran with. Where B does not grow
the shape alone decays ε, as in the reference.

Why a stage per probe interval, decided up front: the stage count, and so the optimizer's
stage table and every compiled step, is fixed before training (a decision only swaps the
table on the host, ``optim.with_schedule``), and the batch sizes a run may take are the
candidates below, all checked before the first compile. The decisions (one batch size per
probe point) are stored in records and checkpoints; a resume replays them
(``measured_schedule(..., decided)``), never re-measures them.

Candidates: B0·2^j rounded to the batch multiple, at most ``max_stages`` of them (the
compile budget K: one program per size) and none above ``max_batch_size`` (N/10 where 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from noise_scale.errors import ScheduleError
from noise_scale.schedule.core import Schedule, Stage
from noise_scale.schedule.ladder import stage_multiplier
from noise_scale.schedule.shapes import Shape


def probe_epochs(total_epochs: float, every_epochs: float) -> list[float]:
    """The epochs where the probe decides: every ``every_epochs``, before the end."""
    count = math.ceil(total_epochs / every_epochs - 1e-9)
    return [j * every_epochs for j in range(1, count)]


def candidate_sizes(first: int, cap: int, multiple: int, max_stages: int) -> list[int]:
    """B0·2^j rounded to ``multiple``, increasing, none above ``cap``, at most ``max_stages``."""
    sizes = [first]
    j = 1
    while len(sizes) < max_stages:
        b = max(multiple, round(first * 2**j / multiple) * multiple)
        if b > cap:
            break
        if b > sizes[-1]:
            sizes.append(b)
        j += 1
    return sizes


def next_batch(critical: float | None, current: int, candidates: Sequence[int]) -> int:
    """The batch for the stages from a probe on: the largest candidate not above the
    measured critical batch, never below ``current`` (no estimate: ``current``)."""
    if critical is None or not math.isfinite(critical):
        return current
    fits = [b for b in candidates if b <= critical]
    return max([current, *fits])


def measured_schedule(*, shape: Shape, dataset_size: int, batch_size: int,
                      learning_rate: float, momentum: float, reference_noise: float,
                      every_epochs: float, decided: Sequence[int] = (),
                      warmup_start_lr: float = 0.0, name: str = "measured",
                      noise_model: str = "sgd") -> Schedule:
    """The measured ladder after ``decided`` (the batch size chosen at each probe point
    so far; the points not yet decided keep the last one's batch).

    ``learning_rate`` is ε_max (B0's ε at s = 1) and ``reference_noise`` g0, B0's noise
    scale at s = 1: every stage's ε keeps g = g0·s(e) at its own batch size.
    """
    if shape.kind == "step":
        raise ScheduleError(
            "rule 'measured' follows a continuous learning-rate shape (cosine, linear, "
            "exponential, polynomial, wsd, piecewise); with shape 'step' the reference's "
            "decays sit at its boundaries, which the probe intervals do not. Set "
            "--config.schedule.shape=cosine (or another shape).", field="shape")
    edges = [0.0, *probe_epochs(shape.total_epochs, every_epochs), shape.total_epochs]
    if len(decided) > len(edges) - 2:
        raise ScheduleError(f"{len(decided)} probe decisions for {len(edges) - 2} probe "
                            "points: the decisions belong to another schedule.")
    sizes = [batch_size, *decided]
    sizes += [sizes[-1]] * (len(edges) - 1 - len(sizes))
    if any(b < a for a, b in zip(sizes, sizes[1:])):
        raise ScheduleError(f"probe decisions {list(decided)} shrink the batch; the measured "
                            "ladder never does.")
    stages = []
    for k, b in enumerate(sizes):
        lr = learning_rate * stage_multiplier(b, reference_noise, learning_rate, momentum,
                                              dataset_size, noise_model)
        if b == batch_size:  # B0: as the reference's own stage (``ladder.shaped_schedule``),
            lr = min(lr, learning_rate)  # so an undecided ladder is that run bit for bit
        stages.append(Stage(edges[k], edges[k + 1], b, lr, momentum))
    return Schedule(dataset_size=dataset_size, stages=tuple(stages),
                    warmup_epochs=shape.warmup_epochs, warmup_start_lr=warmup_start_lr,
                    name=name, shape=shape, noise_model=noise_model)
