"""The comparison's numbers, and report.md and summary.json written from them.

Per schedule: the final test accuracy (mean ± sample sd over seeds), updates
and how many fewer than ``decay_lr``, wall time, compiles, and the largest
per-epoch test-accuracy gap to ``decay_lr`` after the first boundary; then a
summary whose sentences are generated from those numbers, so the text can
never disagree with the table. Everything here is a pure function of the runs'
metric records except ``write_outputs``; the figure lives in ``figure.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from noise_scale.metrics import format_duration

REFERENCE = "decay_lr"


def mean_sd(values) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1); sd is 0 for a single value."""
    v = np.asarray(list(values), float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def updates_ratio(reference_updates: int, updates: int) -> float:
    """How many times fewer updates than the reference (> 1: fewer)."""
    return reference_updates / updates


def ratio_text(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    if abs(ratio - 1) < 0.05:
        return "same"
    return f"{ratio:.1f}× fewer" if ratio > 1 else f"{1 / ratio:.1f}× more"


def axes(reference_config) -> tuple[tuple[float, ...], float, float]:
    """(boundaries, first boundary, eval_every) in epochs: what the report and figure align on."""
    boundaries = tuple(float(b) for b in reference_config.schedule.boundaries)
    return boundaries, boundaries[0] if boundaries else 0.0, float(
        reference_config.eval_every_epochs)


def _key(record: dict, eval_every: float) -> int:
    """Evaluation index: records of different schedules at the same epoch share it.

    An evaluation happens at the first step past each multiple of eval_every
    epochs, so its epoch overshoots by < B/N; rounding absorbs that.
    """
    return int(round(record["epoch"] / eval_every))


def seed_curve(records_by_seed: list[list[dict]], metric: str, eval_every: float = 1.0) -> dict:
    """Per evaluation: epoch, updates, and the metric's mean, min and max over seeds."""
    grouped: dict[int, list[dict]] = {}
    for records in records_by_seed:
        for r in records:
            grouped.setdefault(_key(r, eval_every), []).append(r)
    keys = sorted(grouped)
    col = lambda f, name: np.array([f([r[name] for r in grouped[k]]) for k in keys], float)
    return {
        "key": np.array(keys),
        "epoch": col(np.mean, "epoch"),
        "updates": col(np.mean, "updates"),
        "mean": col(np.mean, metric),
        "lo": col(np.min, metric),
        "hi": col(np.max, metric),
    }


def max_gap_after(reference: list[list[dict]], records_by_seed: list[list[dict]],
                  first_boundary: float, eval_every: float = 1.0) -> tuple[float, float | None]:
    """Largest |mean test accuracy − reference's| (points) over evaluations at epochs >= the boundary.

    Means are over seeds at each evaluation; returns (gap, its epoch), (0, None) if
    no evaluation is shared.
    """
    ref = seed_curve(reference, "test_accuracy", eval_every)
    cur = seed_curve(records_by_seed, "test_accuracy", eval_every)
    ref_by_key = dict(zip(ref["key"].tolist(), ref["mean"]))
    gap, where = 0.0, None
    for k, e, m in zip(cur["key"].tolist(), cur["epoch"], cur["mean"]):
        if k in ref_by_key and k * eval_every >= first_boundary - 1e-9:
            g = 100.0 * abs(m - ref_by_key[k])
            if where is None or g > gap:
                gap, where = g, float(e)
    return gap, where


def summarize(runs: dict[str, list[list[dict]]], seeds: list[int], first_boundary: float,
              eval_every: float = 1.0, reference: str = REFERENCE) -> dict:
    """The report's numbers per variant (``runs``: variant → records per seed, in seed order)."""
    ref = runs.get(reference)
    ref_updates = ref[0][-1]["updates"] if ref else None
    variants = {}
    for name, by_seed in runs.items():
        finals = [100.0 * recs[-1]["test_accuracy"] for recs in by_seed]
        mean, sd = mean_sd(finals)
        updates = by_seed[0][-1]["updates"]
        gap, gap_epoch = (max_gap_after(ref, by_seed, first_boundary, eval_every)
                          if ref else (None, None))
        variants[name] = {
            "final_test_accuracy_mean": mean,
            "final_test_accuracy_sd": sd,
            "final_test_accuracy_per_seed": finals,
            "final_train_loss_mean": mean_sd(r[-1]["train_loss"] for r in by_seed)[0],
            "updates": updates,
            "updates_ratio_vs_decay_lr": updates_ratio(ref_updates, updates) if ref else None,
            "wall_time_mean": mean_sd(r[-1]["wall_time"] for r in by_seed)[0],
            "compiles": max(r[-1]["compiles"] for r in by_seed),
            "max_gap_after_first_stage": gap,
            "max_gap_epoch": gap_epoch,
        }
    return {
        "reference": reference if ref else None,
        "seeds": list(seeds),
        "first_boundary_epoch": first_boundary,
        "units": {"accuracy": "percent", "gap": "percentage points", "wall_time": "seconds",
                  "updates_ratio": "reference updates / updates (> 1: fewer)"},
        "variants": variants,
    }


def _compared(name: str, s: dict, ref_name: str, ref: dict, seeds: list, b: float) -> str:
    """One variant against the reference, in a sentence."""
    delta = s["final_test_accuracy_mean"] - ref["final_test_accuracy_mean"]
    if len(seeds) < 2:
        noise = "one seed, so no run-to-run noise estimate"
    else:
        band = 2.0 * math.hypot(s["final_test_accuracy_sd"], ref["final_test_accuracy_sd"])
        noise = ("within" if abs(delta) <= band else "outside") + (
            f" run-to-run noise, taken as 2·√(sd² + sd_ref²) = {band:.2f} points")
    return (
        f"{name} ends at {s['final_test_accuracy_mean']:.2f} % against {ref_name}'s "
        f"{ref['final_test_accuracy_mean']:.2f} % ({delta:+.2f} points, {noise}) with "
        f"{s['updates']:,} parameter updates ({ratio_text(s['updates_ratio_vs_decay_lr'])} "
        f"than {ref_name}'s {ref['updates']:,}); from epoch {b:g} on its per-epoch test "
        f"accuracy stays within {s['max_gap_after_first_stage']:.2f} points of {ref_name}'s"
        + (f" (largest at epoch {s['max_gap_epoch']:.3g})." if s["max_gap_epoch"] else ".")
    )


def summary_sentences(summary: dict) -> list[str]:
    """Plain-language findings, every number taken from ``summary``."""
    v, ref_name = summary["variants"], summary["reference"]
    if ref_name is None:
        best = max(v, key=lambda k: v[k]["final_test_accuracy_mean"])
        return [f"{REFERENCE} was not among the variants, so nothing is compared with it; the "
                f"highest final test accuracy is {best}'s "
                f"{v[best]['final_test_accuracy_mean']:.2f} %."]
    out = [_compared(name, s, ref_name, v[ref_name], summary["seeds"],
                     summary["first_boundary_epoch"])
           for name, s in v.items() if name != ref_name]
    others = [k for k in v if k != ref_name]
    if others:
        fewest = min(others, key=lambda k: v[k]["updates"])
        worst = min(v, key=lambda k: v[k]["final_test_accuracy_mean"])
        out.append(
            f"Fewest updates: {fewest} ({v[fewest]['updates']:,}, "
            f"{ratio_text(v[fewest]['updates_ratio_vs_decay_lr'])} than {ref_name}) at "
            f"{v[fewest]['final_test_accuracy_mean']:.2f} % final test accuracy. Lowest final "
            f"test accuracy: {worst} ({v[worst]['final_test_accuracy_mean']:.2f} %)."
        )
    return out


def render_report(summary: dict, title: str, context: list[str]) -> str:
    v, ref = summary["variants"], summary["reference"]
    b = summary["first_boundary_epoch"]
    n = len(summary["seeds"])
    ref_label = ref or REFERENCE
    lines = [f"# {title}", "", *context, "",
             f"Final test accuracy: mean ± sample sd over {n} seed{'s' if n > 1 else ''} "
             f"({', '.join(map(str, summary['seeds']))}). Wall time: mean over seeds. Gap: the "
             f"largest |test accuracy − {ref_label}'s| over the evaluations at epochs ≥ {b:g} "
             "(the first boundary), on the means over seeds. Compiles: train-step "
             "compilations of a run (the most over seeds).", "",
             f"| schedule | final test accuracy (%) | updates | vs {ref_label} | wall time | "
             f"compiles | max gap to {ref_label} from epoch {b:g} (points) |",
             "|---|---|---|---|---|---|---|"]
    for name, s in v.items():
        gap = "reference" if name == ref else "—" if s["max_gap_after_first_stage"] is None else (
            f"{s['max_gap_after_first_stage']:.2f}")
        ratio = "reference" if name == ref else ratio_text(s["updates_ratio_vs_decay_lr"])
        lines.append(
            f"| {name} | {s['final_test_accuracy_mean']:.2f} ± {s['final_test_accuracy_sd']:.2f} | "
            f"{s['updates']:,} | {ratio} | {format_duration(s['wall_time_mean'])} | "
            f"{s['compiles']} | {gap} |")
    lines += ["", "## Summary", ""]
    lines += [f"- {s}" for s in summary_sentences(summary)]
    lines += ["", "![test accuracy and training loss against epochs and updates](figure.png)", ""]
    return "\n".join(lines)


def write_outputs(outdir, by_variant: dict[str, list[list[dict]]], seeds: list[int], config,
                  notes: list[str], reference_config) -> dict:
    """summary.json and report.md into ``outdir``; returns the summary.

    ``config``: the ``config_lib.ConfigArgs`` the runs came from (named in both files).
    """
    boundaries, first, eval_every = axes(reference_config)
    summary = summarize(by_variant, seeds, first, eval_every)
    overrides = list(config.overrides)
    summary.update(config=config.spec, overrides=[f"{k}={v}" for k, v in overrides],
                   optimizer=reference_config.optimizer, notes=notes)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    s = reference_config.schedule
    context = [
        f"Config `{config.spec}`, optimizer {reference_config.optimizer}, N = "
        f"{reference_config.dataset_size:,}, {s.total_epochs:g} epochs, boundaries "
        f"{', '.join(f'{x:g}' for x in boundaries) or 'none'} (factor {s.factor:g})"
        + (f", overrides: `{' '.join(f'--config.{k}={v}' for k, v in overrides)}`"
           if overrides else "") + ".",
        *notes,
    ]
    title = f"Don't decay the learning rate, increase the batch size: {config.spec}"
    (outdir / "report.md").write_text(render_report(summary, title, context))
    return summary
