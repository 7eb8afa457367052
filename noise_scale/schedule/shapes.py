"""Learning-rate shapes: the reference schedule's ε(t)/ε0 as a function of epochs.

A shape is the multiplier s(e) ∈ [0, 1] of the reference learning rate at epoch
e (the reference is ``decay_lr``: ε_ref(e) = ε0·s(e) at the fixed batch B0).
Every stage of a schedule multiplies its own base learning rate by the same
s(e), so a converted ``increase_batch`` schedule keeps the reference's noise
scale g(e) = g0·s(e) at every example, with one compiled step per batch size.

The decay runs over the epochs after the warm-up, [warmup_epochs, total_epochs]
(as ``optax.warmup_cosine_decay_schedule``); the warm-up ramp itself is
``core.warmed_up``. ``value`` is written once for NumPy (the host, the plan)
and for traced JAX values (inside the compiled step): ``xp`` is the array
module.

Kinds: ``step`` (s ≡ 1: the step rules carry the decay in their stages),
``cosine``, ``linear``, ``exponential`` (to ``final_fraction`` at the end),
``polynomial`` (``power``), ``wsd`` (warmup-stable-decay: flat, then linear over
the last ``decay_fraction``) and ``piecewise`` (``knots``: (epoch, learning
rate) pairs, linear between; s is relative to the largest knot).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from noise_scale.config.names import SHAPES as KINDS
from noise_scale.errors import ScheduleError


@dataclasses.dataclass(frozen=True)
class Shape:
    kind: str
    total_epochs: float
    warmup_epochs: float = 0.0
    final_fraction: float = 0.0  # s at the end (cosine, linear, polynomial, wsd, exponential)
    power: float = 2.0  # polynomial
    decay_fraction: float = 0.2  # wsd: the share of the post-warm-up epochs that decays
    knots: tuple[tuple[float, float], ...] = ()  # piecewise: (epoch, learning rate)

    def __post_init__(self):
        object.__setattr__(self, "knots", tuple((float(e), float(v)) for e, v in self.knots))
        _validate(self)

    @property
    def peak_learning_rate(self) -> float:
        """piecewise: the largest knot, which s = 1 stands for."""
        return max(v for _, v in self.knots)

    def value(self, epoch, xp=np):
        """s(epoch): the reference learning rate over its peak (NumPy or traced JAX)."""
        if self.kind == "step":
            return xp.ones_like(epoch)
        if self.kind == "piecewise":
            es = xp.asarray([e for e, _ in self.knots])
            vs = xp.asarray([v / self.peak_learning_rate for _, v in self.knots])
            return xp.interp(epoch, es, vs)
        span = self.total_epochs - self.warmup_epochs
        t = xp.clip((epoch - self.warmup_epochs) / span, 0.0, 1.0)
        a = self.final_fraction
        if self.kind == "cosine":
            return a + (1 - a) * 0.5 * (1 + xp.cos(math.pi * t))
        if self.kind == "linear":
            return a + (1 - a) * (1 - t)
        if self.kind == "exponential":
            return a**t
        if self.kind == "polynomial":
            return a + (1 - a) * (1 - t) ** self.power
        # wsd: flat until 1 − decay_fraction of the span, then linear to the end
        d = self.decay_fraction
        return a + (1 - a) * xp.clip((1 - t) / d, 0.0, 1.0)

    def last_rise(self) -> float:
        """The epoch after which s never rises again: the end of warm-up or of the last
        increasing knot. A larger batch may only start from here."""
        start = self.warmup_epochs
        if self.kind == "piecewise":
            for (_, v0), (e1, v1) in zip(self.knots, self.knots[1:]):
                if v1 > v0:
                    start = max(start, e1)
        return start

    def earliest_at_most(self, level: float, tolerance: float = 1e-9) -> float:
        """The earliest epoch ≥ ``last_rise`` from which s stays ≤ ``level`` (inf if never).

        s is non-increasing after ``last_rise``, so this is a bisection; it returns the
        upper end of the final bracket, so s there is ≤ ``level`` (never just above).
        """
        lo, hi = self.last_rise(), self.total_epochs
        if float(self.value(np.float64(lo))) <= level:
            return lo
        if float(self.value(np.float64(hi))) > level:
            return math.inf
        while hi - lo > tolerance * max(1.0, self.total_epochs):
            mid = 0.5 * (lo + hi)
            if float(self.value(np.float64(mid))) <= level:
                hi = mid
            else:
                lo = mid
        return hi

    def mean(self, points: int = 20_001) -> float:
        """The average of s over training, counting the warm-up as 1 (nothing to save there)."""
        e = np.linspace(0.0, self.total_epochs, points)
        s = np.where(e < self.last_rise(), 1.0, self.value(e))
        return float(np.trapezoid(s, e) / self.total_epochs)


def _validate(s: Shape) -> None:
    def bad(field, value, valid):
        raise ScheduleError(f"schedule.{field}={value!r} is invalid for shape {s.kind!r}: it "
                            f"must be {valid}.",
                            field={"final_fraction": "final_lr_fraction"}.get(field, field))

    if s.kind not in KINDS:
        bad("shape", s.kind, "one of " + ", ".join(KINDS))
    if not (0.0 <= s.final_fraction < 1.0):
        bad("final_fraction", s.final_fraction, "in [0, 1)")
    if s.kind == "exponential" and s.final_fraction <= 0:
        bad("final_fraction", s.final_fraction, "> 0 (an exponential never reaches 0)")
    if s.kind == "polynomial" and not s.power > 0:
        bad("power", s.power, "> 0")
    if s.kind == "wsd" and not 0.0 < s.decay_fraction <= 1.0:
        bad("decay_fraction", s.decay_fraction, "in (0, 1]")
    if s.kind != "piecewise" and s.kind != "step" and s.total_epochs <= s.warmup_epochs:
        bad("warmup_epochs", s.warmup_epochs, f"below total_epochs={s.total_epochs:g}")
    if s.kind == "piecewise":
        epochs = [e for e, _ in s.knots]
        if len(s.knots) < 2 or epochs[0] != 0.0 or epochs[-1] != s.total_epochs:
            bad("knots", s.knots, f"at least two (epoch, learning rate) pairs from epoch 0 to "
                f"total_epochs={s.total_epochs:g}")
        if any(b <= a for a, b in zip(epochs, epochs[1:])):
            bad("knots", s.knots, "in strictly increasing epochs")
        if any(not (v >= 0 and math.isfinite(v)) for _, v in s.knots) or s.peak_learning_rate <= 0:
            bad("knots", s.knots, "learning rates >= 0, at least one > 0")
