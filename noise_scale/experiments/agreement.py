"""The verdict rule: is a schedule equivalent to the reference, with a stated error rate?

The seed is the unit. A schedule's seed s is paired with the reference's seed s:
they share the initialisation and the data order, so their curves differ only by
what the schedule changes. (Same-seed pairs of schedules with the same physics
differ by an sd of 0.01-0.05 in per-epoch ln loss; two seeds of one schedule by
0.13-0.18. Comparing across seeds threw that sensitivity away.)

- **Windows.** From the first evaluation where the schedule's (B, ε, m) differ
  from the reference's (from the first evaluation if they never differ: a
  control that reruns the reference), the evaluations are cut wherever either run changes
  stage (seed 0's records; a cap may move a later seed's boundary, which the
  paired means then average over). A cosine reference has one stage, so the
  schedule's own stages cut it; a step reference's boundaries cut everything.
- **Statistic.** Per window and seed, D_s = the mean over the window's
  evaluations of ln(train loss_schedule,s / train loss_reference,s), and the
  mean test-accuracy gap in points.
- **Equivalent** iff, in every window, the 90 % t-interval of the mean D over
  seeds lies inside ±``LOSS_MARGIN`` and the accuracy's inside
  ±``ACCURACY_MARGIN`` (a two one-sided test at 5 % per side; requiring every
  window is an intersection-union test, which needs no correction).
- **Distinguishable** iff some window's Bonferroni-corrected 95 % t-interval
  (over windows × the two curves) excludes 0, for either curve.
- The verdict of a control is distinguishable or indistinguishable; of any
  other schedule equivalent, else distinguishable (a difference shown) or
  inconclusive (neither shown: too few seeds for the noise).
- **Reproduced** iff every equivalent schedule is equivalent and every control
  distinguishable; schedules that raise the momentum are reported with their
  cost (the paper expects about a point) and not held to it.

The margins were fixed from the reference's own run-to-run variation, before any
run they judge, on the committed two-seed sets (docs/, December 2026; six sets,
stages after the first): two seeds of the reference differ in a stage's mean ln
loss by rms 0.071 and in its mean test accuracy by rms 0.14 points. A margin of
twice that says "closer to the reference than two of its own seeds typically
are": ln 1.15 (= 0.140) for the loss and 0.25 points for the accuracy.
``noise_scale.experiments.power`` simulates the rule's error rates with the
committed runs' noise structure; ``tests/test_power.py`` holds it to
P(equivalent | ratio 1.00) ≥ 0.95 and P(equivalent | ratio 1.25) ≤ 0.05.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as scipy_stats

DEFAULT_REFERENCE = "decay_lr"  # a config file may name another: REFERENCE = "goyal"
DEFAULT_SEEDS = 5
LOSS_MARGIN = math.log(1.15)  # ± on the mean ln training-loss ratio of a window
ACCURACY_MARGIN = 0.25  # ± on the mean test-accuracy gap of a window, in points
EQUIVALENCE_CONFIDENCE = 0.90  # two one-sided tests at 5 % each
DIFFERENCE_CONFIDENCE = 0.95  # before the Bonferroni correction over windows × curves
CURVES = ("loss", "accuracy")
MARGINS = {"loss": LOSS_MARGIN, "accuracy": ACCURACY_MARGIN}
RULE = (
    "seed s of a schedule paired with seed s of the reference; per window (from the first "
    "evaluation where B, ε or m differ, cut at every stage change of either run) D_s = mean "
    "ln(train loss ratio) and mean test-accuracy gap (points); equivalent iff every window's "
    f"90 % t-interval of the mean over seeds lies within ±ln {math.exp(LOSS_MARGIN):.2f} "
    f"(loss) and ±{ACCURACY_MARGIN:g} points (accuracy); distinguishable iff some window's "
    "Bonferroni-corrected (windows × 2 curves) 95 % t-interval excludes 0"
)
EQUIVALENT_VERDICT, DISTINGUISHABLE, INDISTINGUISHABLE, INCONCLUSIVE = (
    "equivalent", "distinguishable", "indistinguishable", "inconclusive")
EQUIVALENT, CONTROL, COSTLY, REFERENCE_ROLE = "equivalent", "control", "with cost", "reference"
_TINY_LOSS = 1e-12


def _key(record: dict, eval_every: float) -> int:
    """Evaluation index (an evaluation's epoch overshoots its multiple of eval_every by < B/N)."""
    return int(round(record["epoch"] / eval_every))


def by_key(records: list[dict], eval_every: float = 1.0) -> dict[int, dict]:
    return {_key(r, eval_every): r for r in records}


def _hyper(record: dict) -> tuple:
    return record["batch_size"], record["learning_rate"], record["momentum"]


def _same(a: tuple, b: tuple) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-12) for x, y in zip(a, b))


def windows(run: list[dict], reference: list[dict], eval_every: float = 1.0) -> list[list[int]]:
    """Evaluation indices per window (see the module docstring), from one seed's records."""
    a, b = by_key(run, eval_every), by_key(reference, eval_every)
    keys = sorted(set(a) & set(b))
    if not keys:
        return []
    # the same schedule as the reference (a control that reran it) is judged over every stage
    first = next((k for k in keys if not _same(_hyper(a[k]), _hyper(b[k]))), keys[0])
    out, last = [], None
    for k in keys[keys.index(first):]:
        stage = (a[k]["stage"], b[k]["stage"])
        if stage != last:
            out.append([])
            last = stage
        out[-1].append(k)
    return out


def paired_means(runs: list[list[dict]], reference: list[list[dict]], keys: list[int],
                 eval_every: float = 1.0) -> dict[str, np.ndarray]:
    """Per curve, D_s over the window ``keys`` for each seed s both hold (seed order)."""
    out = {c: [] for c in CURVES}
    for run, ref in zip(runs, reference):
        a, b = by_key(run, eval_every), by_key(ref, eval_every)
        missing = [k for k in keys if k not in a or k not in b]
        if missing:
            raise ValueError(f"evaluations {missing[:3]} (× eval_every) missing from a seed")
        out["loss"].append(np.mean([math.log(max(a[k]["train_loss"], _TINY_LOSS)
                                              / max(b[k]["train_loss"], _TINY_LOSS))
                                     for k in keys]))
        out["accuracy"].append(np.mean([100.0 * (a[k]["test_accuracy"] - b[k]["test_accuracy"])
                                         for k in keys]))
    return {c: np.asarray(v, float) for c, v in out.items()}


def interval(values, confidence: float):
    """(mean, low, high): the two-sided t-interval of the mean over the last axis (the seeds,
    two or more); arrays for a stack of comparisons, floats for one."""
    v = np.asarray(values, float)
    mean = v.mean(-1)
    half = (scipy_stats.t.ppf(0.5 + confidence / 2, v.shape[-1] - 1) * v.std(-1, ddof=1)
            / math.sqrt(v.shape[-1]))
    return mean, mean - half, mean + half


def equivalent(means: list[dict[str, np.ndarray]]):
    """Every window's 90 % interval inside the margin, both curves: the rule's equivalence.

    ``means``: per window, curve → D over seeds (last axis; leading axes: a stack of
    comparisons, as ``power`` simulates them).
    """
    ok = True
    for m in means:
        for c in CURVES:
            _, lo, hi = interval(m[c], EQUIVALENCE_CONFIDENCE)
            ok = ok & (lo > -MARGINS[c]) & (hi < MARGINS[c])
    return ok


def judge_windows(means: list[dict[str, np.ndarray]]) -> tuple[list[dict], bool, bool]:
    """Per window its intervals; (windows, equivalent, distinguishable). Needs ≥ 2 seeds."""
    difference_confidence = 1 - (1 - DIFFERENCE_CONFIDENCE) / max(1, 2 * len(means))
    out, differs = [], False
    for m in means:
        w = {}
        for c in CURVES:
            mean, lo, hi = interval(m[c], EQUIVALENCE_CONFIDENCE)
            _, dlo, dhi = interval(m[c], difference_confidence)
            differs = differs or bool(dlo > 0 or dhi < 0)
            w[c] = {"mean": float(mean), "low": float(lo), "high": float(hi),
                    "difference_low": float(dlo), "difference_high": float(dhi),
                    "per_seed": [float(x) for x in m[c]],
                    "margin_units": float(max(abs(lo), abs(hi)) / MARGINS[c])}
        out.append(w)
    return out, bool(equivalent(means)), differs


def verdict(role: str, same: bool, differs: bool) -> str:
    if role == CONTROL:
        return DISTINGUISHABLE if differs else INDISTINGUISHABLE
    if same:
        return EQUIVALENT_VERDICT
    return DISTINGUISHABLE if differs else INCONCLUSIVE


def judge(runs: list[list[dict]], reference: list[list[dict]], role: str,
          eval_every: float = 1.0) -> dict:
    """The rule for one schedule: its windows, intervals and verdict (None with < 2 seeds)."""
    keys = windows(runs[0], reference[0], eval_every)
    seeds = min(len(runs), len(reference))
    out = {"role": role, "seeds_paired": seeds, "windows": [], "verdict": None,
           "margin_units": None}
    if role == REFERENCE_ROLE or not keys or seeds < 2:
        return out
    means = [paired_means(runs, reference, k, eval_every) for k in keys]
    judged, same, differs = judge_windows(means)
    first = by_key(runs[0], eval_every)
    for k, w in zip(keys, judged):
        w.update(from_epoch=first[k[0]]["epoch"], to_epoch=first[k[-1]]["epoch"],
                 evaluations=len(k), stage=first[k[0]]["stage"])
    out.update(windows=judged, equivalent=same, distinguishable=differs,
               verdict=verdict(role, same, differs),
               margin_units=max(w[c]["margin_units"] for w in judged for c in CURVES))
    return out


def role(name: str, reference: str, controls, config) -> str:
    """reference | control | with cost (it raises the momentum) | equivalent."""
    if name == reference:
        return REFERENCE_ROLE
    if name in controls:
        return CONTROL
    if config is not None and config.schedule.raise_momentum_to:
        return COSTLY
    return EQUIVALENT


WANTED = {EQUIVALENT: EQUIVALENT_VERDICT, CONTROL: DISTINGUISHABLE}


def overall(verdicts: dict[str, str | None], roles: dict[str, str]) -> str | None:
    """``reproduced`` iff every equivalent schedule is equivalent and every control
    distinguishable; ``not reproduced`` otherwise; None if a verdict is missing (one seed,
    or no reference) or no control was run (nothing shows the test can fail)."""
    judged = {n: r for n, r in roles.items() if r in WANTED}
    if not any(r == CONTROL for r in judged.values()) or any(verdicts.get(n) is None
                                                               for n in judged):
        return None
    ok = all(verdicts[n] == WANTED[r] for n, r in judged.items())
    return "reproduced" if ok else "not reproduced"


def compare(runs: dict[str, list[list[dict]]], reference: str, roles: dict[str, str],
            eval_every: float = 1.0) -> dict:
    """The rule applied to every schedule: windows, intervals, verdicts, the overall result."""
    ref = runs.get(reference)
    per_variant = {name: judge(by_seed, ref, roles.get(name, EQUIVALENT), eval_every)
                   if ref else {"role": roles.get(name, EQUIVALENT), "verdict": None,
                                "windows": [], "margin_units": None}
                   for name, by_seed in runs.items()}
    verdicts = {n: v["verdict"] for n, v in per_variant.items()}
    return {
        "rule": RULE, "pairs": "same seed (s with s)",
        "loss_margin": LOSS_MARGIN, "accuracy_margin": ACCURACY_MARGIN,
        "equivalence_confidence": EQUIVALENCE_CONFIDENCE,
        "difference_confidence": DIFFERENCE_CONFIDENCE, "interval": "Student t over seeds",
        "variants": per_variant,
        "result": overall(verdicts, {n: v["role"] for n, v in per_variant.items()}),
    }
