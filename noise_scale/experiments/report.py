"""The comparison's numbers, and report.md and summary.json written from them.

Per schedule: its role, the final test accuracy (mean ± sample sd over seeds),
updates and how many fewer than the reference (``decay_lr`` unless the config
names another), wall time, compiles, and the verdict of ``agreement``'s rule
with every window's paired interval; then whether the comparison is
reproduced, the rule with its operating characteristic (``power``), and a
summary whose sentences are generated from those numbers, so the text can
never disagree with the table. ``summarize`` is a pure function of the runs'
records; ``render_report`` of summary.json alone, so ``judge`` can rewrite a
committed report from its records. The figure lives in ``figure.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from noise_scale.experiments import agreement, power
from noise_scale.metrics import format_duration

REFERENCE = agreement.DEFAULT_REFERENCE


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


def summarize(runs: dict[str, list[list[dict]]], seeds: list[int], eval_every: float = 1.0,
              reference: str = REFERENCE, roles: dict[str, str] | None = None) -> dict:
    """The report's numbers per variant (``runs``: variant → records per seed, in seed order).

    ``roles``: variant → ``agreement`` role (default: the reference, and equivalents).
    """
    ref = runs.get(reference)
    ref_updates = ref[0][-1]["updates"] if ref else None
    roles = roles or {n: agreement.role(n, reference, (), None) for n in runs}
    agree = agreement.compare(runs, reference, roles, eval_every)
    variants = {}
    for name, by_seed in runs.items():
        finals = [100.0 * recs[-1]["test_accuracy"] for recs in by_seed]
        mean, sd = mean_sd(finals)
        updates = by_seed[0][-1]["updates"]
        variants[name] = {
            **agree["variants"][name],
            "final_test_accuracy_mean": mean,
            "final_test_accuracy_sd": sd,
            "final_test_accuracy_per_seed": finals,
            "final_train_loss_mean": mean_sd(r[-1]["train_loss"] for r in by_seed)[0],
            "updates": updates,
            "updates_ratio_vs_reference": updates_ratio(ref_updates, updates) if ref else None,
            "wall_time_mean": mean_sd(r[-1]["wall_time"] for r in by_seed)[0],
            "compiles": max(r[-1]["compiles"] for r in by_seed),
        }
    agree = {k: v for k, v in agree.items() if k != "variants"}
    agree["operating_characteristic"] = power.operating_characteristic(max(2, len(seeds)))
    return {
        "reference": reference if ref else None,
        "seeds": list(seeds),
        "eval_every_epochs": eval_every,
        "units": {"accuracy": "percent", "windows.accuracy": "percentage points",
                  "windows.loss": "natural log of the training-loss ratio",
                  "margin_units": "the widest 90 % interval end / the margin (< 1: inside)",
                  "wall_time": "seconds",
                  "updates_ratio": "reference updates / updates (> 1: fewer)"},
        "agreement": agree,
        "variants": variants,
    }


def _epochs(w: dict) -> str:
    return f"epochs {w['from_epoch']:.0f}–{w['to_epoch']:.0f}"


def _loss_text(c: dict, interval: bool = True) -> str:
    text = f"×{math.exp(c['mean']):.3f}"
    return text + (f" [{math.exp(c['low']):.3f}, {math.exp(c['high']):.3f}]" if interval else "")


def _acc_text(c: dict, interval: bool = True) -> str:
    return f"{c['mean']:+.3f}" + (f" [{c['low']:+.3f}, {c['high']:+.3f}]" if interval else "")


def _worst(s: dict, curve: str) -> dict | None:
    """The window whose interval reaches furthest toward (or past) the curve's margin."""
    return max(s["windows"], key=lambda w: w[curve]["margin_units"]) if s["windows"] else None


def _effect(s: dict) -> str:
    """Where and by how much a schedule misses: its worst window, in the curve's units."""
    w = max(s["windows"], key=lambda w: max(w[c]["margin_units"] for c in agreement.CURVES))
    c = max(agreement.CURVES, key=lambda c: w[c]["margin_units"])
    what = (f"training loss {_loss_text(w[c])} the reference's (margin ×"
            f"{math.exp(agreement.LOSS_MARGIN):.2f})" if c == "loss" else
            f"test accuracy {_acc_text(w[c])} points from the reference's (margin "
            f"±{agreement.ACCURACY_MARGIN:g})")
    return f"{_epochs(w)}: {what}"


def result_sentence(summary: dict) -> str:
    """Reproduced or not, and why, from the verdicts."""
    v, agree = summary["variants"], summary["agreement"]
    result = agree["result"]
    by_role = lambda role: [n for n, s in v.items() if s["role"] == role]
    if result is None:
        return ("No overall result: it needs the reference and every judged schedule with two "
                "or more seeds, and at least one control.")
    wrong = [n for n, s in v.items() if s["role"] in agreement.WANTED
             and s["verdict"] != agreement.WANTED[s["role"]]]
    head = f"**{result[0].upper() + result[1:]}**"
    if not wrong:
        return (f"{head}: every equivalent schedule ({', '.join(by_role(agreement.EQUIVALENT))}) "
                f"is equivalent to {summary['reference']} within the margins and every control "
                f"({', '.join(by_role(agreement.CONTROL))}) is distinguishable.")
    return f"{head}: " + "; ".join(
        f"{n} ({v[n]['role']}) is {v[n]['verdict']}" + (
            f", worst at {_effect(v[n])}" if v[n]["role"] != agreement.CONTROL
            and v[n]["windows"] else "") for n in wrong) + "."


def closest_call(summary: dict) -> str | None:
    """The judged equivalence nearest its margin, so a reader knows how firm the result is."""
    judged = {n: s for n, s in summary["variants"].items()
              if s["role"] == agreement.EQUIVALENT and s.get("margin_units") is not None}
    if not judged:
        return None
    name = min(judged, key=lambda n: abs(judged[n]["margin_units"] - 1))
    units = judged[name]["margin_units"]
    return (f"Closest call: {name} ({judged[name]['verdict']}), whose widest 90 % interval "
            f"end is {units:.2f}× its margin (below 1: inside), at {_effect(judged[name])}"
            + ("; a verdict this near 1 could flip with other seeds." if abs(units - 1) < 0.2
               else "."))


def _compared(name: str, s: dict, ref_name: str, ref: dict, seeds: list) -> str:
    """One variant against the reference, in a sentence."""
    delta = s["final_test_accuracy_mean"] - ref["final_test_accuracy_mean"]
    text = (f"{name} ({s['role']}) ends at {s['final_test_accuracy_mean']:.2f} % against "
            f"{ref_name}'s {ref['final_test_accuracy_mean']:.2f} % ({delta:+.2f} points) with "
            f"{s['updates']:,} parameter updates ({_than(s, ref_name, ref)})")
    if s["verdict"] is None:
        why = "one seed" if len(seeds) < 2 else "no window where its schedule differs"
        return text + f"; no verdict ({why})."
    return text + f"; {s['verdict']}, its widest window {_effect(s)}."


def _than(s: dict, ref_name: str, ref: dict) -> str:
    words = ratio_text(s["updates_ratio_vs_reference"])
    if words == "same":
        return f"about as many as {ref_name}'s {ref['updates']:,}"
    return f"{words} than {ref_name}'s {ref['updates']:,}"


def _fewer(s: dict, ref_name: str) -> str:
    words = ratio_text(s["updates_ratio_vs_reference"])
    return f"as many as {ref_name}" if words == "same" else f"{words} than {ref_name}"


def summary_sentences(summary: dict) -> list[str]:
    """Plain-language findings, every number taken from ``summary``."""
    v, ref_name = summary["variants"], summary["reference"]
    if ref_name is None:
        best = max(v, key=lambda k: v[k]["final_test_accuracy_mean"])
        return ["The reference was not among the variants, so nothing is compared with it; the "
                f"highest final test accuracy is {best}'s "
                f"{v[best]['final_test_accuracy_mean']:.2f} %."]
    out = [result_sentence(summary)]
    close = closest_call(summary)
    if close:
        out.append(close)
    out += [_compared(name, s, ref_name, v[ref_name], summary["seeds"])
            for name, s in v.items() if name != ref_name]
    others = [k for k in v if k != ref_name and v[k]["role"] != agreement.CONTROL]
    if others:
        fewest = min(others, key=lambda k: v[k]["updates"])
        out.append(
            f"Fewest updates (controls aside): {fewest} ({v[fewest]['updates']:,}, "
            f"{_fewer(v[fewest], ref_name)}) at "
            f"{v[fewest]['final_test_accuracy_mean']:.2f} % final test accuracy.")
    return out


def rule_lines(summary: dict) -> list[str]:
    """The written rule, its margins and its operating characteristic."""
    a = summary["agreement"]
    lines = ["## The rule (fixed in `noise_scale/experiments/agreement.py` before these runs)", "",
             f"Against {summary['reference'] or REFERENCE}: {a['rule']}. The comparison is "
             "**reproduced** iff every equivalent schedule is equivalent and every control "
             "distinguishable; schedules that raise the momentum are reported with their cost, "
             "not judged. The margins are twice the rms by which two seeds of the reference "
             "differ in a window's mean (measured on the earlier two-seed sets).", ""]
    oc = a.get("operating_characteristic")
    if oc:
        lines += ["Operating characteristic (`noise_scale/experiments/power.py`): P(equivalent) "
                  "by simulation against the true training-loss ratio in every window, with the "
                  "noise measured on same-seed pairs and, as a pessimistic bound, between two "
                  f"seeds ({oc[0]['replicates']:,} replicates each):", "",
                  *power.report_lines(oc), ""]
    return lines


def window_lines(summary: dict) -> list[str]:
    """Per judged schedule, each window's paired means and 90 % intervals."""
    lines = ["## Per window (seed-paired; mean [90 % interval] over seeds)", "",
             "| schedule | window | evaluations | training loss ratio | test accuracy gap "
             "(points) |", "|---|---|---|---|---|"]
    for name, s in summary["variants"].items():
        for w in s["windows"]:
            lines.append(f"| {name} | {_epochs(w)} | {w['evaluations']} | "
                         f"{_loss_text(w['loss'])} | {_acc_text(w['accuracy'])} |")
    return lines + [""]


def render_report(summary: dict) -> str:
    """report.md from summary.json alone (``judge`` rewrites it from the records)."""
    v, ref = summary["variants"], summary["reference"]
    n = len(summary["seeds"])
    ref_label = ref or REFERENCE
    lines = [f"# {summary.get('title', 'The comparison')}", "", *summary.get("context", []), "",
             f"Final test accuracy: mean ± sample sd over {n} seed{'s' if n > 1 else ''} "
             f"({', '.join(map(str, summary['seeds']))}). Wall time: mean over seeds. "
             "Compiles: train-step compilations of a run (the most over seeds). Loss ratio and "
             "accuracy gap: the window whose 90 % interval reaches furthest, seed-paired with "
             "the reference; margin units: that reach / the margin (below 1: inside).", "",
             f"| schedule | role | final test accuracy (%) | updates | vs {ref_label} | wall time "
             "| compiles | loss ratio [90 %] | accuracy gap [90 %] | margin units | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in v.items():
        ratio = "reference" if name == ref else ratio_text(s["updates_ratio_vs_reference"])
        wl, wa = _worst(s, "loss"), _worst(s, "accuracy")
        lines.append(
            f"| {name} | {s['role']} | {s['final_test_accuracy_mean']:.2f} ± "
            f"{s['final_test_accuracy_sd']:.2f} | {s['updates']:,} | {ratio} | "
            f"{format_duration(s['wall_time_mean'])} | {s['compiles']} | "
            f"{_loss_text(wl['loss']) if wl else '—'} | "
            f"{_acc_text(wa['accuracy']) if wa else '—'} | "
            + (f"{s['margin_units']:.2f}" if s["margin_units"] is not None else "—")
            + f" | {'reference' if name == ref else s['verdict'] or '—'} |")
    lines += ["", "## Summary", ""]
    lines += [f"- {s}" for s in summary_sentences(summary)]
    lines += ["", *rule_lines(summary), *window_lines(summary),
              "![test accuracy and training loss against epochs and updates](figure.png)", ""]
    return "\n".join(lines)


def write_outputs(outdir, by_variant: dict[str, list[list[dict]]], seeds: list[int], config,
                  notes: list[str], reference_config, reference: str = REFERENCE,
                  roles: dict[str, str] | None = None) -> dict:
    """summary.json and report.md into ``outdir``; returns the summary.

    ``config``: the ``config_lib.ConfigArgs`` the runs came from (named in both files).
    """
    boundaries, _, eval_every = axes(reference_config)
    summary = summarize(by_variant, seeds, eval_every, reference, roles)
    overrides = list(config.overrides)
    s = reference_config.schedule
    context = [
        f"Config `{config.spec}`, optimizer {reference_config.optimizer}, N = "
        f"{reference_config.dataset_size:,}, {s.total_epochs:g} epochs, boundaries "
        f"{', '.join(f'{x:g}' for x in boundaries) or 'none'} (factor {s.factor:g})"
        + (f", overrides: `{' '.join(f'--config.{k}={v}' for k, v in overrides)}`"
           if overrides else "") + ".",
        *notes,
    ]
    summary.update(config=config.spec, overrides=[f"{k}={v}" for k, v in overrides],
                   optimizer=reference_config.optimizer, notes=notes, context=context,
                   title=f"Don't decay the learning rate, increase the batch size: {config.spec}")
    write_summary(outdir, summary)
    return summary


def write_summary(outdir, summary: dict) -> None:
    """summary.json and report.md (rendered from it) into ``outdir``."""
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (outdir / "report.md").write_text(render_report(summary))


def append_section(outdir, title: str, lines: list[str]) -> None:
    """Append a ``## title`` section of ``lines`` to report.md."""
    path = outdir / "report.md"
    path.write_text(path.read_text() + "\n".join(["", f"## {title}", "", *lines, ""]))


def add_noise_figure(outdir) -> None:
    """Append the measured-noise-scale figure (noise_scale.png) to report.md."""
    append_section(outdir, "The measured noise scale", [
        "B_simple = tr Σ / |G|², measured inside the train step from the gradients it "
        "already computes (noise_scale.gns; every config.noise_scale_every_steps-th step, "
        "smoothed per example seen), against each schedule's B (seed 0). It is a noise "
        "scale, not the critical batch size: batches well below it are in the regime where "
        "a larger batch still pays. Where the smoothed |G|² is not positive the point is "
        "missing: the mean gradient is lost in the noise.", "",
        "![the measured noise scale against each schedule's batch size](noise_scale.png)"])
