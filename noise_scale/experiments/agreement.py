"""Curve agreement: is a schedule's run distinguishable from the reference's, by a fixed rule?

Why curves and not final accuracies: on MNIST-1D every schedule, and even no
decay at all, ends within a few tenths of a point, so a final-accuracy test
cannot tell the paper's schedule from no schedule. What a wrong noise scale
changes is the path: the training loss after each step and how much the test
accuracy swings. The rule (fixed before the control runs existed; see
``RULE``):

- **Statistics** of two single-seed runs a and b, over the evaluations after
  the reference's first boundary (epoch > b₁, shared evaluation indices):
  ``loss`` = max |ln(training loss_a / training loss_b)| and ``accuracy`` =
  max |test accuracy_a − test accuracy_b| in points.
- **Noise floor**: the same statistics between two seeds of the reference,
  averaged over every pair of its seeds.
- **A schedule's statistics**: the same, between one of its seeds and a
  *different* seed of the reference, averaged over every such pair (s ≠ t).
  Cross-seed, like the floor: two runs of one schedule with the same seed share
  the initialisation and the data order, so seed-matched pairs would be
  compared against a floor they cannot have. Single curves, not means over
  seeds, because the floor is measured on single curves.
- **Verdict**: distinguishable iff statistic > K × floor for either curve,
  K = ``MULTIPLIER``; else indistinguishable. With one seed there is no floor
  and no verdict.

The comparison is **reproduced** iff every equivalent schedule is
indistinguishable and every control distinguishable; schedules that raise the
momentum are reported with their cost (the paper expects about a point) and
not held to it.
"""

from __future__ import annotations

import itertools
import math

DEFAULT_REFERENCE = "decay_lr"  # a config file may name another: REFERENCE = "goyal"
MULTIPLIER = 2.0  # K: a difference must exceed twice what two seeds of the reference show
RULE = (
    "after the reference's first boundary, statistic(a, b) = (max |ln(train loss_a / "
    "train loss_b)|, max |test accuracy_a − test accuracy_b| in points) over shared per-epoch "
    "evaluations; floor = its mean over pairs of the reference's own seeds; a schedule's "
    "statistic = its mean over pairs (schedule seed s, reference seed t ≠ s); distinguishable "
    f"iff statistic > {MULTIPLIER:g} × floor for either curve, else indistinguishable"
)
DISTINGUISHABLE, INDISTINGUISHABLE = "distinguishable", "indistinguishable"
EQUIVALENT, CONTROL, COSTLY, REFERENCE_ROLE = "equivalent", "control", "with cost", "reference"
_TINY_LOSS = 1e-12


def _key(record: dict, eval_every: float) -> int:
    """Evaluation index (an evaluation's epoch overshoots its multiple of eval_every by < B/N)."""
    return int(round(record["epoch"] / eval_every))


def pair_statistics(a: list[dict], b: list[dict], first_boundary: float,
                    eval_every: float = 1.0) -> dict:
    """{"loss": max |ln loss ratio|, "accuracy": max |gap| (points)} after the first boundary."""
    after = lambda recs: {_key(r, eval_every): r for r in recs
                          if _key(r, eval_every) * eval_every > first_boundary + 1e-9}
    ra, rb = after(a), after(b)
    shared = sorted(set(ra) & set(rb))
    if not shared:
        raise ValueError(f"no evaluation after epoch {first_boundary:g} is shared by both runs")
    loss = max(abs(math.log(max(ra[k]["train_loss"], _TINY_LOSS)
                            / max(rb[k]["train_loss"], _TINY_LOSS))) for k in shared)
    acc = max(100.0 * abs(ra[k]["test_accuracy"] - rb[k]["test_accuracy"]) for k in shared)
    return {"loss": loss, "accuracy": acc}


def _mean(stats: list[dict]) -> dict:
    return {c: sum(s[c] for s in stats) / len(stats) for c in ("loss", "accuracy")}


def noise_floor(reference: list[list[dict]], first_boundary: float,
                eval_every: float = 1.0) -> dict | None:
    """Mean statistics over every pair of the reference's seeds; None with one seed."""
    pairs = list(itertools.combinations(reference, 2))
    if not pairs:
        return None
    return _mean([pair_statistics(a, b, first_boundary, eval_every) for a, b in pairs])


def statistics(runs: list[list[dict]], reference: list[list[dict]], first_boundary: float,
               eval_every: float = 1.0) -> dict | None:
    """Mean statistics over pairs (run seed s, reference seed t), s ≠ t; None without any.

    ``runs`` and ``reference``: records per seed, in seed order (index = seed position).
    """
    pairs = [(a, b) for (s, a), (t, b) in itertools.product(enumerate(runs), enumerate(reference))
             if s != t]
    if not pairs:
        return None
    return _mean([pair_statistics(a, b, first_boundary, eval_every) for a, b in pairs])


def verdict(stats: dict | None, floor: dict | None, multiplier: float = MULTIPLIER) -> str | None:
    """``distinguishable`` iff a statistic exceeds ``multiplier`` × its floor; None without both."""
    if stats is None or floor is None:
        return None
    if any(stats[c] > multiplier * floor[c] for c in ("loss", "accuracy")):
        return DISTINGUISHABLE
    return INDISTINGUISHABLE


def threshold_ratio(stats: dict | None, floor: dict | None,
                    multiplier: float = MULTIPLIER) -> float | None:
    """The larger statistic / (K × floor) of the two curves: > 1 is distinguishable.

    Not part of the rule; it says how close a verdict is to flipping.
    """
    if stats is None or floor is None:
        return None
    ratios = [stats[c] / (multiplier * floor[c]) if floor[c] > 0 else
              (math.inf if stats[c] > 0 else 0.0) for c in ("loss", "accuracy")]
    return max(ratios)


def role(name: str, reference: str, controls, config) -> str:
    """reference | control | with cost (it raises the momentum) | equivalent."""
    if name == reference:
        return REFERENCE_ROLE
    if name in controls:
        return CONTROL
    if config is not None and config.schedule.raise_momentum_to:
        return COSTLY
    return EQUIVALENT


def overall(verdicts: dict[str, str | None], roles: dict[str, str]) -> str | None:
    """``reproduced`` iff every equivalent is indistinguishable and every control distinguishable.

    ``not reproduced`` otherwise; None if a verdict is missing (one seed, or no reference),
    or if no control was run (nothing shows the test can fail).
    """
    judged = {n: r for n, r in roles.items() if r in (EQUIVALENT, CONTROL)}
    if not any(r == CONTROL for r in judged.values()) or any(verdicts.get(n) is None
                                                               for n in judged):
        return None
    want = {EQUIVALENT: INDISTINGUISHABLE, CONTROL: DISTINGUISHABLE}
    ok = all(verdicts[n] == want[r] for n, r in judged.items())
    return "reproduced" if ok else "not reproduced"


def compare(runs: dict[str, list[list[dict]]], reference: str, roles: dict[str, str],
            first_boundary: float, eval_every: float = 1.0) -> dict:
    """The rule applied to every schedule: floor, statistics, verdicts, the overall result."""
    ref = runs.get(reference)
    floor = noise_floor(ref, first_boundary, eval_every) if ref else None
    per_variant = {}
    for name, by_seed in runs.items():
        stats = statistics(by_seed, ref, first_boundary, eval_every) if ref else None
        per_variant[name] = {
            "role": roles.get(name, EQUIVALENT),
            "loss_log_ratio_max": stats and stats["loss"],
            "accuracy_gap_max": stats and stats["accuracy"],
            "verdict": verdict(stats, floor),
            "threshold_ratio": threshold_ratio(stats, floor),
        }
    verdicts = {n: v["verdict"] for n, v in per_variant.items()}
    return {
        "rule": RULE, "multiplier": MULTIPLIER, "pairs": "cross-seed (s ≠ t), single curves",
        "after_epoch": first_boundary,
        "floor": floor and {"loss_log_ratio_max": floor["loss"],
                            "accuracy_gap_max": floor["accuracy"]},
        "variants": per_variant,
        "result": overall(verdicts, {n: v["role"] for n, v in per_variant.items()}),
    }
