"""The measured cap: a batch increase happens only while the measured noise scale allows it.

``config.schedule.noise_cap`` = c > 0. At each boundary where the rule
(``increase_batch`` or ``hybrid``) would raise B, the run reads the smoothed
simple noise scale B_simple (``gns``; McCandlish et al. 2018) and grows the
batch only if the new B ≤ c × B_simple; otherwise that boundary's decay is ε's,
B kept (the paper's hybrid rule, with a measured cap in place of N/10). A later
boundary may grow B again once B_simple has caught up.

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

from noise_scale import gns, optim
from noise_scale.schedule.rules import capped_schedule


@dataclasses.dataclass(frozen=True)
class Decision:
    """The outcome at the start of stage ``stage``: whether B grew to ``batch_size``."""

    stage: int
    grow: bool
    batch_size: int  # the B the rule wanted
    measured: float  # the smoothed B_simple read at the boundary (nan: none yet)
    cap: float  # c × measured


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


def measured_noise_scale(averages: gns.Averages) -> float:
    """The smoothed B_simple of the run's averages (``gns.Averages``).

    nan before any measurement; +inf where the smoothed |G|² is not positive while tr Σ
    is: the estimate cannot tell the mean gradient from the noise, so the noise
    dominates and no finite batch is shown too large (late in training this happens
    often: both terms are small and |G|²'s unbiased estimate is noisy).
    """
    g2, trace = averages.smoothed()
    if not (math.isfinite(g2) and math.isfinite(trace)):
        return math.nan
    if g2 <= 0:
        return math.inf if trace > 0 else math.nan
    return trace / g2


def decide(config, decisions: list[bool], averages: gns.Averages,
           stage: int) -> Decision | None:
    """The decision at the start of ``stage`` (None where the rule does not raise B there).

    The cap holds B only on evidence: without a measured noise scale (nan) the rule's
    increase goes ahead, with a warning.
    """
    grown = capped_schedule(config, [*decisions, True])
    new, old = grown.stages[stage].batch_size, grown.stages[stage - 1].batch_size
    if new <= old:
        return None
    b_simple = measured_noise_scale(averages)
    cap = config.schedule.noise_cap * b_simple
    if math.isnan(b_simple):
        logging.warning("stage %d: no measured noise scale to cap B with; it grows to %d as "
                        "the rule says", stage, new)
    return Decision(stage, math.isnan(b_simple) or new <= cap, new, b_simple, cap)


def apply(run, state, decisions: list[bool]):
    """Re-plan ``run`` after ``decisions`` and put the new stage table into ``state``.

    Each batch size keeps the accumulation planned for it before (the memory check may
    have chosen it), so a decision reuses a step already compiled for that size.
    """
    schedule = capped_schedule(run.config, decisions)
    accumulation = {p.batch_size: p.accumulation_steps for p in run.plans}
    run.schedule = schedule
    run.plans = [dataclasses.replace(p, accumulation_steps=accumulation.get(
        p.batch_size, p.accumulation_steps)) for p in schedule.plan(
            run.mesh.size, run.config.max_device_batch)]
    run.sampler.schedule = schedule
    return state.replace(opt_state=optim.with_schedule(state.opt_state, schedule))


def record_fields(decisions: list[bool]) -> dict:
    """A record's view of the decisions so far: how many boundaries the cap held, and each
    boundary's outcome in order ("grew,held,..."; a boundary where the rule keeps B grows)."""
    return {"cap_held": sum(not d for d in decisions),
            "cap_decisions": ",".join("grew" if d else "held" for d in decisions)}
