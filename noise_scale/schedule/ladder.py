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
where a fixed geometric ladder (the easy start) wastes updates whenever the shape's
decay is uneven (cosine is slow at first and fast later). Rounding B costs no g error
here: ε is solved for the rounded B itself.

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
                     n: int) -> float:
    """c(B): the stage's ε over ε_max·s(e) that keeps g = g0·s(e) at batch B."""
    return theory.solve_learning_rate(g0, batch_size, n, momentum) / learning_rate


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


def shaped_schedule(rule: str, *, shape: Shape, dataset_size: int, batch_size: int,
                    learning_rate: float, momentum: float, reference_noise: float,
                    max_batch_size: int, max_stages: int, multiple: int,
                    warmup_start_lr: float, name: str) -> Schedule:
    """A schedule of any shape: one stage for ``decay_lr``, a ladder for the other rules.

    ``learning_rate`` is ε_max (the first stage's ε at s = 1), ``batch_size`` the first
    stage's B, ``reference_noise`` g0 (the unscaled reference's g at s = 1).
    """
    n, total = dataset_size, shape.total_epochs
    if max_stages < 1:
        raise ScheduleError(f"max_stages must be >= 1, got {max_stages}.")
    if rule == "decay_lr" or max_stages == 1:
        sizes, starts = [batch_size], [0.0]
    else:
        cap = max_batch_size or n // 10
        sizes = candidates(batch_size, max(cap, batch_size), multiple)
        starts = [0.0] + [
            shape.earliest_at_most(1.0 / stage_multiplier(b, reference_noise, learning_rate,
                                                          momentum, n)) for b in sizes[1:]]
        chosen = best_ladder(sizes, starts, total, n, max_stages)
        sizes, starts = [sizes[j] for j in chosen], [starts[j] for j in chosen]
    edges = [*starts, total]
    # Stage k's ε is ε_max·c(B_k)·s(e), ≤ ε_max from its start on. The first B, rounded up
    # past the solved one, can have c > 1: it takes ε_max itself (its g a fraction of a
    # percent below the reference's, which the table shows).
    rates = [learning_rate * stage_multiplier(b, reference_noise, learning_rate, momentum, n)
             for b in sizes]
    rates[0] = min(rates[0], learning_rate)
    stages = tuple(Stage(edges[k], edges[k + 1], b, rates[k], momentum)
                   for k, b in enumerate(sizes))
    return Schedule(dataset_size=n, stages=stages, warmup_epochs=shape.warmup_epochs,
                    warmup_start_lr=warmup_start_lr, name=name, shape=shape)
