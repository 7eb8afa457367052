"""Any learning-rate shape as a staged batch schedule that keeps the noise scale exactly.

The reference (``decay_lr``) runs at B0 with ε_ref(e) = ε0·s(e), noise scale
g_ref(e) = g0·s(e). The converted (``increase_batch``) schedule takes at most
``max_stages`` batch sizes B_0 < B_1 < … ≤ B_max and, inside stage k, the learning
rate that keeps the reference's g at every example (exact form, with the −1):

    ε(e) = g_ref(e)·(1 − m)/(N/B_k − 1) = ε_max · c(B_k) · s(e),
    c(B) = g0·(1 − m) / (ε_max·(N/B − 1)),

never above ε_max (ε0, or ε0·lr_scale for the B ∝ ε variant: the largest stable
learning rate the user gave). So B_k may start at the earliest epoch from which
s(e)·c(B_k) ≤ 1 for good (``Shape.earliest_at_most``), and never before the
reference's last rise (warm-up), so a warm-up never triggers a larger batch.
Past B_max the remaining decay is ε's (the hybrid rule), automatically.

Which batch sizes: the ladder minimising the total updates
U/N = Σ_k (e_{k+1} − e_k)/B_k over candidates (multiples of the rounding multiple,
a geometric grid from B_0 to B_max) by dynamic programming — exact for that grid,
where a fixed geometric ladder (the easy start, ``ladder_ratio`` r > 1: B_0·r^k) wastes
updates whenever the shape's decay is uneven (cosine is slow at first and fast later;
``tests/test_shapes.py`` measures the difference). Rounding B costs no g error here: ε
is solved for the rounded B itself.

Bound: with ε ≤ ε_max, B(e) ≤ B0·ε_max/ε_ref(e) (B ≪ N), so the saving is at most
1/mean(s) — 2× for cosine with unlimited stages (``update_bound``).
"""

from __future__ import annotations

import math

import numpy as np

from noise_scale import theory
from noise_scale.errors import ScheduleError
from noise_scale.schedule.core import Schedule, Stage
from noise_scale.schedule.shapes import Shape

CANDIDATES = 160  # geometric grid points between B_0 and B_max (before rounding)


def update_bound(shape: Shape) -> float:
    """The most a staged batch schedule can save over the reference: 1/mean(s)."""
    return 1.0 / shape.mean()


def stage_multiplier(batch_size: int, g0: float, learning_rate: float, momentum: float,
                     n: int, noise_model: str = "sgd") -> float:
    """c(B): the stage's ε over ε_max·s(e) that keeps g = g0·s(e) at batch B (or Adam's
    T = η/√B, ``noise_model`` adam_sqrt: c(B) = T0·√B/ε_max)."""
    solve = theory.NOISE_MODELS[noise_model].solve_learning_rate
    return solve(g0, batch_size, n, momentum) / learning_rate


def candidates(first: int, cap: int, multiple: int) -> list[int]:
    """Batch sizes the ladder may use: a geometric grid, rounded to ``multiple``."""
    if cap <= first:
        return [first]
    grid = np.geomspace(first, cap, CANDIDATES)
    out = {first, (cap // multiple) * multiple}
    out |= {int(round(b / multiple)) * multiple for b in grid}
    return sorted(b for b in out if first <= b <= cap)


def best_ladder(sizes: list[int], starts: list[float], total: float, n: int,
                max_stages: int) -> list[int]:
    """Indices into ``sizes`` of the ladder with the fewest updates (sizes[0] first).

    ``starts[j]``: the earliest epoch B = sizes[j] may start (inf: never). A stage
    must last at least the two batches it meets at its ends, so the walk gives it an
    update.
    """
    inf = math.inf
    # cost[j]: fewest (updates/N) before sizes[j] starts, ending the ladder there later
    best = {0: (0.0, [0])}
    for _ in range(max_stages - 1):
        nxt = dict(best)
        for i, (cost, path) in best.items():
            for j in range(i + 1, len(sizes)):
                e = starts[j]
                if e == inf or e - starts[i] < (sizes[i] + sizes[j]) / n \
                        or total - e < 2 * sizes[j] / n:
                    continue
                c = cost + (e - starts[i]) / sizes[i]
                if j not in nxt or c < nxt[j][0]:
                    nxt[j] = (c, path + [j])
        best = nxt
    finals = {j: cost + (total - starts[j]) / sizes[j] for j, (cost, _) in best.items()}
    return best[min(finals, key=finals.get)][1]


def geometric_ladder(sizes: list[int], starts: list[float], total: float, n: int) -> list[int]:
    """Indices of the fixed ladder ``sizes`` that can take a stage of their own.

    A size is kept when it can start (finite ``starts``), at least the two batches it
    meets after the previous kept size and two of its own batches before the end —
    the same conditions ``best_ladder`` imposes.
    """
    kept = [0]
    for j in range(1, len(sizes)):
        i = kept[-1]
        if (starts[j] != math.inf and starts[j] - starts[i] >= (sizes[i] + sizes[j]) / n
                and total - starts[j] >= 2 * sizes[j] / n):
            kept.append(j)
    return kept


def geometric_sizes(first: int, cap: int, multiple: int, ratio: float,
                    max_stages: int) -> list[int]:
    """B_0·r^k rounded to ``multiple``, at most ``max_stages`` of them, none above ``cap``."""
    sizes = [first]
    while len(sizes) < max_stages:
        b = int(round(first * ratio ** len(sizes) / multiple)) * multiple
        if b > cap:
            break
        if b > sizes[-1]:
            sizes.append(b)
        elif ratio ** len(sizes) > cap / first:
            break
        else:  # a ratio so close to 1 that rounding repeats a size: take the next multiple
            sizes.append(sizes[-1] + multiple)
    return sizes


def ladder_sizes(shape: Shape, *, n: int, batch_size: int, learning_rate: float,
                 momentum: float, reference_noise: float, max_batch_size: int,
                 max_stages: int, multiple: int,
                 ladder_ratio: float, noise_model: str = "sgd") -> tuple[list[int], list[float]]:
    """The converted schedule's batch sizes and the epochs they start at."""
    cap = max(max_batch_size or n // 10, batch_size)
    if ladder_ratio:
        sizes = geometric_sizes(batch_size, cap, multiple, ladder_ratio, max_stages)
    else:
        sizes = candidates(batch_size, cap, multiple)
    starts = [0.0] + [
        shape.earliest_at_most(1.0 / stage_multiplier(b, reference_noise, learning_rate,
                                                      momentum, n, noise_model))
        for b in sizes[1:]]
    if ladder_ratio:
        chosen = geometric_ladder(sizes, starts, shape.total_epochs, n)
    else:
        chosen = best_ladder(sizes, starts, shape.total_epochs, n, max_stages)
    return [sizes[j] for j in chosen], [starts[j] for j in chosen]


def shaped_schedule(rule: str, *, shape: Shape, dataset_size: int, batch_size: int,
                    learning_rate: float, momentum: float, reference_noise: float,
                    max_batch_size: int, max_stages: int, multiple: int,
                    warmup_start_lr: float, name: str, ladder_ratio: float = 0.0,
                    noise_model: str = "sgd") -> Schedule:
    """A schedule of any shape: one stage for ``decay_lr``, a ladder for the other rules.

    ``learning_rate`` is ε_max (the first stage's ε at s = 1), ``batch_size`` the first
    stage's B, ``reference_noise`` g0 (the unscaled reference's g at s = 1),
    ``ladder_ratio`` 0 for the fewest updates or r > 1 for the ladder B_0·r^k.
    """
    n, total = dataset_size, shape.total_epochs
    if max_stages < 1:
        raise ScheduleError(f"max_stages must be >= 1, got {max_stages}.")
    if ladder_ratio and not ladder_ratio > 1:
        raise ScheduleError(f"ladder_ratio must be 0 or > 1, got {ladder_ratio}.")
    if rule == "decay_lr" or max_stages == 1:
        sizes, starts = [batch_size], [0.0]
    else:
        sizes, starts = ladder_sizes(
            shape, n=n, batch_size=batch_size, learning_rate=learning_rate, momentum=momentum,
            reference_noise=reference_noise, max_batch_size=max_batch_size,
            max_stages=max_stages, multiple=multiple, ladder_ratio=ladder_ratio,
            noise_model=noise_model)
    edges = [*starts, total]
    # Stage k's ε is ε_max·c(B_k)·s(e), ≤ ε_max from its start on. The first B, rounded up
    # past the solved one, can have c > 1: it takes ε_max itself (its g a fraction of a
    # percent below the reference's, which the table shows).
    rates = [learning_rate * stage_multiplier(b, reference_noise, learning_rate, momentum, n,
                                              noise_model) for b in sizes]
    rates[0] = min(rates[0], learning_rate)
    stages = tuple(Stage(edges[k], edges[k + 1], b, rates[k], momentum)
                   for k, b in enumerate(sizes))
    return Schedule(dataset_size=n, stages=stages, warmup_epochs=shape.warmup_epochs,
                    warmup_start_lr=warmup_start_lr, name=name, shape=shape,
                    noise_model=noise_model)
