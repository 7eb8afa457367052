"""A schedule for people: a table, JSON, a side-by-side comparison and a B/ε/g figure
(against epochs or against updates).

Rendering only: every number comes from the schedule and its plan
(``noise_scale.schedule.core``); nothing here decides anything about a run.
"""

from __future__ import annotations

import json
import math

import numpy as np

from noise_scale import theory
from noise_scale.errors import ScheduleError
from noise_scale.schedule.core import Schedule, smallest_slice
from noise_scale.schedule.ladder import update_bound


def to_dict(schedule: Schedule, num_devices: int = 1, max_device_batch: int = 0,
            slices: tuple[int, ...] = (), adam: list[dict] | None = None) -> dict:
    """The schedule and its plan as plain JSON-able data (``--json``, ``schedule.json``).

    ``slices``: device counts to choose from; each stage then says the smallest on which it
    needs no accumulation (``slice``; None if none). ``adam``: per stage, Adam's b2, eps and
    weight_decay at its batch (``adaptive.per_batch``), shown as ``adam_b2``, ``adam_eps``
    and ``weight_decay``. ``noise_scale`` is g, or Adam's T = η/√B (``noise_model``).
    """
    plans = schedule.plan(num_devices, max_device_batch)
    stages = []
    for i, (s, p, g) in enumerate(zip(schedule.stages, plans, schedule.noise_scales())):
        row = {
            "start_epoch": s.start_epoch,
            "end_epoch": s.end_epoch,
            "batch_size": s.batch_size,
            "learning_rate": s.learning_rate,
            "momentum": s.momentum,
            "warmup_epochs": schedule.stage_warmup_epochs(i),
            "noise_scale": g,
            "updates": p.updates,
            "examples": p.end_example - p.start_example,
            "per_device_batch": p.per_device_batch,
            "accumulation_steps": p.accumulation_steps,
        }
        if slices:
            row["slice"] = smallest_slice(s.batch_size, slices, max_device_batch)
        if adam is not None:
            row.update(adam_b2=adam[i]["b2"], adam_eps=adam[i]["eps"],
                       weight_decay=adam[i]["weight_decay"])
        if schedule.target_noise is not None:
            row["target_noise_scale"] = schedule.target_noise[i]
            row["noise_scale_error"] = g / schedule.target_noise[i] - 1.0
        if schedule.shape is not None:
            row.update(_shaped_ends(schedule, p))
        stages.append(row)
    shape = {} if schedule.shape is None else {
        "shape": schedule.shape.kind, "update_bound": update_bound(schedule.shape)}
    return {
        **shape,
        "name": schedule.name,
        "noise_model": schedule.noise_model,
        "dataset_size": schedule.dataset_size,
        "total_epochs": schedule.total_epochs,
        "total_updates": sum(p.updates for p in plans),
        "warmup_epochs": schedule.warmup_epochs,
        "warmup_start_lr": schedule.warmup_start_lr,
        "num_devices": num_devices,
        "stages": stages,
    }


def _shaped_ends(schedule: Schedule, plan) -> dict:
    """ε and g at a shaped stage's first and last step: within a stage they move."""
    first, last = plan.start_example, plan.end_example - plan.batch_size
    return {
        "learning_rate_start": schedule.learning_rate_at(first),
        "learning_rate_end": schedule.learning_rate_at(last),
        "noise_scale_start": schedule.noise_scale_at(first),
        "noise_scale_end": schedule.noise_scale_at(last),
    }


def to_json(schedule: Schedule, **kwargs) -> str:
    return json.dumps(to_dict(schedule, **kwargs), indent=2)


def _columns(head: list[str], rows: list[list[str]]) -> list[str]:
    """Right-aligned text columns: a header, a rule, the rows."""
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return [fmt(head), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]


def _table_row(schedule: Schedule, i: int, r: dict, show_devices: bool,
               show_slices: bool = False, show_decay: bool = False) -> list[str]:
    lr, g = f"{r['learning_rate']:.4g}", f"{r['noise_scale']:.4g}"
    if schedule.shape is not None:  # ε and g move inside the stage: first -> last step
        lr = f"{r['learning_rate_start']:.4g}->{r['learning_rate_end']:.4g}"
        g = f"{r['noise_scale_start']:.4g}->{r['noise_scale_end']:.4g}"
    if r["warmup_epochs"] > 0:
        lr = f"{lr} (warm-up {r['warmup_epochs']:g} ep from {schedule.warmup_start_lr:.3g})"
    row = [str(i), f"{r['start_epoch']:.4g}-{r['end_epoch']:.4g}", f"{r['batch_size']:,}", lr,
           f"{r['momentum']:g}", g]
    if "adam_b2" in r:
        row += [f"{r['adam_b2']:.6g}", f"{r['adam_eps']:.3g}"]
        if show_decay:
            row.append(f"{r['weight_decay']:.4g}")
    if schedule.target_noise is not None:
        row.append(f"{100 * r['noise_scale_error']:+.2f}%")
    if show_devices:
        accum, micro = r["accumulation_steps"], r["per_device_batch"] // r["accumulation_steps"]
        row += [f"{r['per_device_batch']:,}", f"{accum} x {micro:,}" if accum > 1 else "1"]
    if show_slices:
        n = r["slice"]
        row.append("none" if n is None else f"{n} ({r['batch_size'] // n:,}/device)")
    row.append(f"{r['updates']:,}")
    return row


def table(schedule: Schedule, num_devices: int = 1, max_device_batch: int = 0,
          slices: tuple[int, ...] = (), adam: list[dict] | None = None) -> str:
    """A readable table: one row per stage, then totals.

    With ``slices``: per stage the smallest slice that runs it without accumulation, beside
    the per-device batch and accumulation on ``num_devices`` (the current slice). With
    ``adam`` (see ``to_dict``): Adam's b2 and eps per stage, and λ where it is not 0. The
    noise column is g, or T = η/√B under Adam's square-root rule.
    """
    d = to_dict(schedule, num_devices, max_device_batch, slices, adam)
    show_devices = num_devices > 1 or max_device_batch > 0 or bool(slices)
    show_decay = adam is not None and any(a["weight_decay"] for a in adam)
    symbol = theory.NOISE_MODELS[schedule.noise_model].symbol
    head = ["stage", "epochs", "B", "lr", "m" if adam is None else "b1",
            symbol if symbol == "g" else "T=lr/sqrt(B)"]
    if adam is not None:
        head += ["b2", "eps"] + (["lambda"] if show_decay else [])
    if schedule.target_noise is not None:
        head.append(f"{symbol} vs target")
    if show_devices:
        head += ["B/device", "accum"]
    if slices:
        head.append("slice, no accum")
    head.append("updates")
    rows = [_table_row(schedule, i, r, show_devices, bool(slices), show_decay)
            for i, r in enumerate(d["stages"])]
    title = f"{schedule.name or 'schedule'}: N = {schedule.dataset_size:,}"
    if show_devices:
        title += f", {num_devices} devices"
    sizes = len(schedule.batch_sizes())
    lines = [title, *_columns(head, rows),
             f"total: {schedule.total_epochs:g} epochs, {d['total_updates']:,} updates, "
             f"{sizes} batch size(s) -> {sizes} compile(s)"]
    if slices:
        lines.append(
            f"slices {', '.join(map(str, sorted(slices)))}"
            + (f" under max_device_batch={max_device_batch}" if max_device_batch else
               " (no max_device_batch: any slice runs any stage without accumulation)")
            + "; step times: a run measures examples_per_second per stage (metrics.jsonl), "
            "--measured=WORKDIR shows them; none is invented for slices not yet run")
    if schedule.shape is not None and schedule.shape.kind != "step":
        lines.append(f"shape {schedule.shape.kind}: with ε never above its start, no batch "
                     f"schedule needs fewer than 1/{d['update_bound']:.2f} of the reference's "
                     "updates (the bound 1/mean(ε_ref/ε0))")
    return "\n".join(lines)


def compare_table(a: Schedule, b: Schedule) -> str:
    """Two schedules side by side over every epoch range where both are constant.

    The last column is how far ``b``'s g departs from ``a``'s: where B is not
    ≪ N the batch route's g falls below the decay route's (the −1 in N/B − 1).
    """
    if a.dataset_size != b.dataset_size:
        raise ScheduleError(
            f"cannot compare schedules over different dataset sizes "
            f"({a.dataset_size} vs {b.dataset_size}).")
    edges = sorted({0.0, *(s.end_epoch for s in a.stages), *(s.end_epoch for s in b.stages)}
                   | {a.warmup_epochs, b.warmup_epochs})
    edges = [e for e in edges if e <= min(a.total_epochs, b.total_epochs)]
    # one currency: Adam's T = η/√B if either schedule is built on it (both are Adam's then)
    kind = "adam_sqrt" if "adam_sqrt" in (a.noise_model, b.noise_model) else "sgd"
    model, sym = theory.NOISE_MODELS[kind], theory.NOISE_MODELS[kind].symbol
    head = ["epochs", *(f"{q} {s.name}" for s in (a, b) for q in ("B", "lr", sym)),
            f"{sym} ratio"]
    rows, n = [], a.dataset_size

    def noise(s, p):
        return model.value(s.learning_rate_at(p), s.batch_size_at(p), n, s.momentum_at(p))

    for lo, hi in zip(edges, edges[1:]):
        p = int(math.ceil(max(lo, min(a.warmup_epochs, b.warmup_epochs, hi)) * n))
        p = min(max(int(math.ceil(lo * n)), p), int(hi * n) - 1)
        ga, gb = noise(a, p), noise(b, p)
        rows.append([f"{lo:g}-{hi:g}"] + [
            x for s, g in ((a, ga), (b, gb))
            for x in (f"{s.batch_size_at(p):,}", f"{s.learning_rate_at(p):.4g}", f"{g:.4g}")
        ] + [f"{gb / ga:.4f} ({100 * (gb / ga - 1):+.2f}%)"])
    return "\n".join([
        *_columns(head, rows),
        f"updates: {a.name} {a.total_updates:,}, {b.name} {b.total_updates:,} "
        f"({a.total_updates / b.total_updates:.2f}x fewer for {b.name})"])


AXES = ("epochs", "updates")  # what the figure's x-axis can count


def curves(schedule: Schedule, points: int = 2000, x: str = "epochs"):
    """(x, B, ε, g) sampled densely enough to show steps and the warm-up ramp.

    ``x``: ``"epochs"`` or ``"updates"`` (the updates made by that point of the run).
    """
    if x not in AXES:
        raise ScheduleError(f"x must be one of {', '.join(AXES)}; got {x!r}.")
    epochs = np.linspace(0, schedule.total_epochs, points, endpoint=False)
    pos = [int(p) for p in (epochs * schedule.dataset_size).astype(np.int64)]
    xs = epochs if x == "epochs" else np.array([schedule.updates_at(p) for p in pos])
    return (xs, np.array([schedule.batch_size_at(p) for p in pos]),
            np.array([schedule.learning_rate_at(p) for p in pos]),
            np.array([schedule.noise_scale_at(p) for p in pos]))


def figure(schedules: list[Schedule], x: str = "epochs"):
    """Three panels, log scale: B, ε and g against ``x`` (epochs or updates); a Figure.

    Draws on whatever matplotlib backend is active (inline in a notebook).
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for s in schedules:
        xs, *ys = curves(s, x=x)
        for ax, y in zip(axes, ys):
            ax.plot(xs, y, label=f"{s.name} ({s.total_updates:,} updates)",
                    drawstyle="steps-post")
    for ax, title in zip(axes, ("batch size B", "learning rate ε",
                                "noise scale g = ε/(1−m)(N/B−1)")):
        ax.set_yscale("log")
        ax.set_xlabel("parameter updates" if x == "updates" else "epochs")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    return fig


def plot(schedules: list[Schedule], path, x: str = "epochs") -> None:
    """``figure`` written to ``path`` (headless: the Agg backend, for TPU VMs and CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = figure(schedules, x)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measured(schedule: Schedule, records: list[dict]) -> list[dict]:
    """Per stage and per slice it ran on, what a run measured: the step-time model.

    From a run's records (``metrics.jsonl``): the median ``examples_per_second`` of the
    stage's records on each (devices, per-device batch, accumulation) it ran with, its
    updates per second (÷ B) and the time the whole stage takes at that rate. Nothing is
    extrapolated to slices the run never used: a stage not measured has no row.
    """
    import statistics

    out = []
    for i, stage in enumerate(schedule.stages):
        by_slice: dict[tuple, list[float]] = {}
        for r in records:
            if r.get("stage") == i and r.get("batch_size") == stage.batch_size \
                    and r.get("examples_per_second", 0) > 0:
                devices = r.get("devices", 1)  # per_device_batch: records since issue 15
                key = (devices, r.get("per_device_batch", stage.batch_size // devices),
                       r.get("accumulation_steps", 1))
                by_slice.setdefault(key, []).append(r["examples_per_second"])
        examples = (stage.end_epoch - stage.start_epoch) * schedule.dataset_size
        for (devices, per_device, accum), rates in sorted(by_slice.items()):
            rate = statistics.median(rates)
            out.append({"stage": i, "batch_size": stage.batch_size, "devices": devices,
                        "per_device_batch": per_device, "accumulation_steps": accum,
                        "records": len(rates), "examples_per_second": rate,
                        "updates_per_second": rate / stage.batch_size,
                        "stage_seconds": examples / rate})
    return out


def measured_table(schedule: Schedule, records: list[dict], where: str) -> str:
    """``measured`` as text, with the stages no record covers named."""
    rows = measured(schedule, records)
    if not rows:
        return f"measured in {where}: no record matches this schedule's stages"
    head = ["stage", "B", "devices", "B/device", "accum", "records", "examples/s", "updates/s",
            "stage takes"]
    body = [[str(r["stage"]), f"{r['batch_size']:,}", str(r["devices"]),
             f"{r['per_device_batch']:,}",
             str(r["accumulation_steps"]), str(r["records"]),
             f"{r['examples_per_second']:,.0f}", f"{r['updates_per_second']:,.2f}",
             _duration(r["stage_seconds"])] for r in rows]
    missing = sorted(set(range(len(schedule.stages))) - {r["stage"] for r in rows})
    lines = [f"measured in {where} (median of each stage's records, compiles excluded):",
             *_columns(head, body)]
    if missing:
        lines.append(f"not measured: stage(s) {', '.join(map(str, missing))}")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
