"""The measured cap: a batch increase happens only while the measured noise scale allows it.

``config.schedule.noise_cap`` = c > 0. At each boundary where the rule
(``increase_batch`` or ``hybrid``) would raise B, the run reads the smoothed
simple noise scale B_simple (``gns``; McCandlish et al. 2018) and grows the
batch only on evidence: if the new B ≤ c × a one-sided 95 % lower confidence bound
of B_simple (Fieller's, ``gns.Averages.lower_bound``); otherwise that boundary's
decay is ε's, B kept (the paper's hybrid rule, with a measured cap in place of
N/10). No estimate, or none bounded above 0 (|G|² not shown positive), holds, with
a warning: the cap holds unless the measurement shows growth to be safe. A later
boundary may grow B again once B_simple has caught up.

Which c: in McCandlish's second-order model, one epoch of increase_batch (ε at kB)
and of decay_lr (ε/k at B) share the drift and the noise term, but the curvature
term is k× larger in increase_batch: relative to the noise term the excess is
(1 − 1/k)·B_new/B_noise. c = 1 (B_new up to B_simple) is McCandlish's efficiency
knee and lets that excess reach 80 % at k = 5; c = 0.2 keeps it ≤ 16 %, the
equivalence the paper tests. (B_simple = B_noise only for a Hessian ∝ I.)

Why it never recompiles and every process agrees:
- the batch sizes a capped run may take are those of the rule's own schedule
  (blocking only delays growth), so the plan, validation, the memory check and
  the slice checks made on it before training cover every outcome;
- the stage table (ends, ε, m) is optimizer state (``optim.with_schedule``),
  not a constant of the compiled step: a decision swaps it on the host;
- B_simple comes from all-reduced quantities, smoothed on the host in the same order
  by every process, so every process reads the same value and decides the same;
- the decisions are stored in the checkpoint meta (``cap_decisions``) and a
  resumed run replays them before it plans: the fingerprint holds the rule
  (``noise_cap``), not its outcome.
"""

from __future__ import annotations

import dataclasses
import math

from absl import logging

from noise_scale import gns
from noise_scale.schedule import Schedule, StagePlan
from noise_scale.schedule.rules import capped_schedule


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome at the start of stage ``stage``: whether B grew to ``batch_size``."""

    stage: int
    grow: bool
    batch_size: int  # the B the rule wanted
    measured: float  # the smoothed B_simple read at the boundary (nan: none, or |G|² ≤ 0)
    lower: float  # its lower confidence bound (nan: none)
    cap: float  # c × lower (nan: none)
    schedule: Schedule  # the plan after this decision: the loop installs it (``train.loop.Loop.install``)

    def read(self) -> dict:
        """What the records and the checkpoint keep of it: the evidence and the outcome
        (None where there was no estimate), for the report's decisions table."""
        def value(x):
            return None if math.isnan(x) else x
        return {"stage": self.stage, "batch_size": self.batch_size, "grew": self.grow,
                "measured": value(self.measured), "lower": value(self.lower),
                "cap": value(self.cap)}


def enabled(config) -> bool:
    return bool(config.schedule.get("noise_cap", 0))


def dense_from(config, plans, plan) -> int:
    """The first example of ``plan``'s dense stretch, where every update measures: the
    last ``config.noise_scale_dense_epochs`` before a boundary where the cap decides (the
    plan in force changes B there). ``plan.end_example`` (none) otherwise.

    Every k-th update alone leaves a late stage few measurements (B = 800, k = 10 on
    40,000 examples: 5 an epoch), and the decision reads the average at the boundary.
    """
    following = [p for p in plans if p.index == plan.index + 1]
    if not (enabled(config) and following and following[0].batch_size != plan.batch_size):
        return plan.end_example
    stretch = round(config.noise_scale_dense_epochs * config.dataset_size)
    return max(plan.start_example, plan.end_example - stretch)


# One-sided 95 %: a boundary grows B only if B_simple is that sure to be above B_new / c.
Z = 1.645


def decide(config, decisions: list[bool], averages: gns.Averages,
           stage: int) -> Decision | None:
    """The decision at the start of ``stage`` (None where the rule does not raise B there).

    B grows only if the new B ≤ c × B_simple's lower confidence bound; without one (no
    measurement yet, too few, or |G|² not shown positive) it holds, with a warning.
    """
    grown = capped_schedule(config, [*decisions, True])
    new, old = grown.stages[stage].batch_size, grown.stages[stage - 1].batch_size
    if new <= old:
        return None
    measured, lower = averages.noise_scale, averages.lower_bound(Z)
    c = config.schedule.noise_cap
    if lower is None or lower <= 0:
        logging.warning("stage %d: no measured noise scale bounded above 0 (B_simple %s, %.0f "
                        "measurements); B holds at %d instead of growing to %d", stage,
                        "none" if measured is None else f"{measured:.1f}",
                        averages.measurements, old, new)
        lower = math.nan
    grow = new <= c * lower  # False for nan
    return Decision(stage, grow, new, math.nan if measured is None else measured, lower,
                    c * lower, grown if grow else capped_schedule(config, [*decisions, False]))


def plans(schedule: Schedule, before: list[StagePlan], devices: int,
          max_device_batch: int) -> list[StagePlan]:
    """``schedule``'s stage plans, each batch size keeping the accumulation planned for it
    ``before`` (the memory check may have chosen it), so a decision reuses a step already
    compiled for that size."""
    accumulation = {p.batch_size: p.accumulation_steps for p in before}
    return [dataclasses.replace(p, accumulation_steps=accumulation.get(
        p.batch_size, p.accumulation_steps)) for p in schedule.plan(devices, max_device_batch)]


def record_fields(decisions: list[bool], reads: list[dict | None] = ()) -> dict:
    """A record's view of the decisions so far: how many boundaries the cap held, each
    boundary's outcome in order ("grew,held,..."; a boundary where the rule keeps B grows),
    and (``cap_bounds``) the evidence each decision read: B_simple, its lower bound and
    c × that bound (``Decision.read``; None at a boundary where the rule keeps B)."""
    fields = {"cap_held": sum(not d for d in decisions),
              "cap_decisions": ",".join("grew" if d else "held" for d in decisions)}
    if reads:
        fields["cap_bounds"] = list(reads)
    return fields
