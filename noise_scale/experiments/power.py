"""The verdict rule's error rates, by simulation: how often it calls a schedule equivalent.

A verdict is only as good as its error rates, so the rule in ``agreement`` comes
with its operating characteristic: P(equivalent) against the true ratio of the
schedule's training loss to the reference's, at a given number of seeds.

Synthetic paired differences. For seed s and window w (``WINDOWS``: MNIST-1D's
step schedule after its first boundary, 12, 8 and 8 evaluations), the per-
evaluation difference is δ + u_{s,w} + e_{s,w}(t): δ the true effect (ln ratio
for the loss, points for the accuracy), u a seed offset (sd ``seed_sd``), e an
AR(1) series (sd ``sd``, lag-1 correlation ``lag1``). The rule sees only the
window means, exactly as it sees the records' (``agreement.judge_windows``).

Two noise structures, measured on the committed two-seed sets (docs/, December
2026) before any run the rule judges:

- ``PAIRED``: same-seed pairs of schedules with the same physics (hybrid and
  increase_batch against decay_lr, increase_batch and momentum_090 against goyal,
  cosine_increase_batch against cosine_decay_lr) — what the rule sees for an
  equivalent schedule. The largest SGD-family set is taken (cosine): loss sd
  0.10, lag-1 −0.2, seed offsets 0.05; accuracy 0.06 points, −0.2, 0.02. (Adam's
  same-seed pairs are as noisy as two seeds: 0.14; see ``CROSS_SEED``.)
- ``CROSS_SEED``: two seeds of the reference — the pessimistic bound, as if
  pairing gained nothing: loss sd 0.16, lag-1 −0.2, seed offsets 0.06;
  accuracy 0.07 points, 0.05, 0.12.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from noise_scale.experiments import agreement

WINDOWS = (12, 8, 8)
RATIOS = (1.0, 1.05, 1.10, 1.15, 1.20, 1.25, 1.35)
REPLICATES = 2000


class Noise(NamedTuple):
    """One curve's noise: per-evaluation sd, lag-1 autocorrelation, seed-offset sd."""

    sd: float
    lag1: float
    seed_sd: float


class Structure(NamedTuple):
    name: str
    loss: Noise
    accuracy: Noise


PAIRED = Structure("same-seed pairs (as measured)", Noise(0.10, -0.2, 0.05),
                   Noise(0.06, -0.2, 0.02))
CROSS_SEED = Structure("two seeds of the reference (pairing gains nothing)",
                       Noise(0.16, -0.2, 0.06), Noise(0.07, 0.05, 0.12))


def _window_means(rng, noise: Noise, effect: float, seeds: int, reps: int) -> list[np.ndarray]:
    """Per window, (reps, seeds) means of an AR(1) series plus seed offsets plus ``effect``."""
    out = []
    innovation = noise.sd * math.sqrt(1 - noise.lag1 ** 2)
    for n in WINDOWS:
        e = np.empty((reps, seeds, n))
        e[..., 0] = rng.normal(0, noise.sd, (reps, seeds))
        for t in range(1, n):
            e[..., t] = noise.lag1 * e[..., t - 1] + rng.normal(0, innovation, (reps, seeds))
        out.append(effect + rng.normal(0, noise.seed_sd, (reps, seeds)) + e.mean(-1))
    return out


def p_equivalent(ratio: float, seeds: int = agreement.DEFAULT_SEEDS,
                 structure: Structure = PAIRED, accuracy_gap: float = 0.0,
                 reps: int = REPLICATES, seed: int = 0) -> float:
    """The fraction of ``reps`` simulated comparisons the rule calls equivalent, for a true
    loss ratio ``ratio`` and accuracy gap ``accuracy_gap`` (points) in every window."""
    rng = np.random.default_rng(seed)
    loss = _window_means(rng, structure.loss, math.log(ratio), seeds, reps)
    acc = _window_means(rng, structure.accuracy, accuracy_gap, seeds, reps)
    means = [{"loss": lw, "accuracy": aw} for lw, aw in zip(loss, acc)]
    return float(np.mean(agreement.equivalent(means)))


def operating_characteristic(seeds: int = agreement.DEFAULT_SEEDS,
                             structures=(PAIRED, CROSS_SEED), ratios=RATIOS,
                             reps: int = REPLICATES) -> list[dict]:
    """Per noise structure, P(equivalent) at each true loss ratio (accuracy gap 0)."""
    return [{"structure": s.name, "seeds": seeds, "replicates": reps,
             "p_equivalent": {f"{r:.2f}": p_equivalent(r, seeds, s, reps=reps)
                              for r in ratios}} for s in structures]


def report_lines(characteristic: list[dict]) -> list[str]:
    """The operating characteristic as a markdown table."""
    ratios = list(characteristic[0]["p_equivalent"])
    lines = ["| noise (per window: " + " + ".join(map(str, WINDOWS)) + " evaluations), "
             f"{characteristic[0]['seeds']} seeds | " + " | ".join(f"×{r}" for r in ratios)
             + " |", "|---" * (len(ratios) + 1) + "|"]
    for row in characteristic:
        lines.append(f"| {row['structure']} | " + " | ".join(
            f"{row['p_equivalent'][r]:.3f}" for r in ratios) + " |")
    return lines
