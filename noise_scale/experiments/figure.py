"""The comparison's figure: test accuracy and training loss against epochs and against updates.

Against epochs the schedules coincide (same g, same epochs); against parameter
updates (log x) the batch-size schedules finish early. That pair of panels is
the paper's figure, so it is drawn from the same seed curves the report uses.
Curves that coincide must all stay visible: the reference is a wide pale line
underneath, every other schedule has its own dash pattern and marker, the
controls are grey; a second test-accuracy row is zoomed to the epochs after
the first boundary, where the schedules (and the controls) differ (a continuous
shape has none: after the first quarter of training).
matplotlib with the Agg backend, so it draws on headless machines and CI.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from noise_scale.experiments import report  # noqa: E402

STYLES = ["-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 2, 4, 2))]
MARKERS = ["o", "s", "^", "v", "D", "P", "X"]
CONTROL_GREYS = ["0.45", "0.65", "0.3", "0.8"]
COLOURS = ["C0", "C1", "C2", "C4", "C5", "C6", "C8", "C9"]  # C3 (red) is the reference's


def figure_curves(runs: dict[str, list[list[dict]]], summary: dict, eval_every: float) -> list:
    """One curve per schedule for ``plot_runs``: mean and min–max over seeds per evaluation."""
    curves = []
    for name, by_seed in runs.items():
        acc = report.seed_curve(by_seed, "test_accuracy", eval_every)
        loss = report.seed_curve(by_seed, "train_loss", eval_every)
        s = summary["variants"][name]
        curves.append({
            "name": name, "updates_total": s["updates"], "role": s.get("role", ""),
            "verdict": s.get("verdict"),
            "epoch": acc["epoch"], "updates": acc["updates"],
            "test_accuracy": (100 * acc["mean"], 100 * acc["lo"], 100 * acc["hi"]),
            "train_loss": (loss["mean"], loss["lo"], loss["hi"]),
        })
    return curves


def write_figure(path, runs: dict[str, list[list[dict]]], summary: dict, spec: str,
                 reference_config) -> None:
    """figure.png (``path``: an ``epath.Path``) for the runs that ``summary`` describes."""
    boundaries, _, eval_every = report.axes(reference_config)
    n = len(summary["seeds"])
    result = (summary.get("agreement") or {}).get("result")
    with path.open("wb") as f:
        plot_runs(figure_curves(runs, summary, eval_every), f, boundaries=boundaries,
                  title=f"{spec} ({reference_config.optimizer}, {n} seed{'s' if n > 1 else ''})"
                  + (f": {result}" if result else ""))


def _styles(curves) -> list[dict]:
    """Colour, line style, marker and width per curve: every curve visible where they overlap.

    The reference is a wide pale red line underneath; the others are thinner on top,
    each with its own dash pattern and marker; controls are grey.
    """
    out, colour, grey = [], 0, 0
    for i, c in enumerate(curves):
        if c.get("role") == "reference":
            out.append(dict(color="C3", linestyle="-", marker=None, linewidth=3.5, alpha=0.35,
                            zorder=2))
            continue
        if c.get("role") == "control":
            color, grey = CONTROL_GREYS[grey % len(CONTROL_GREYS)], grey + 1
        else:
            color, colour = COLOURS[colour % len(COLOURS)], colour + 1
        out.append(dict(color=color, linestyle=STYLES[(i + 1) % len(STYLES)],
                        marker=MARKERS[i % len(MARKERS)], linewidth=1.4, alpha=0.95, zorder=3))
    return out


ZOOM_BELOW_REFERENCE = 2.0  # points: the zoomed row reaches this far below the reference's lowest
# Without boundaries (a continuous shape), the zoomed row starts this far into training, past
# the first epochs' steep rise that would otherwise set its range.
ZOOM_WITHOUT_BOUNDARIES = 0.25


def zoom_start(curves, boundaries) -> float:
    """The epoch the zoomed row starts after: the first boundary, or a quarter of training."""
    if boundaries:
        return boundaries[0]
    last = max((float(np.max(c["epoch"])) for c in curves if len(c["epoch"])), default=0.0)
    return ZOOM_WITHOUT_BOUNDARIES * last


def _zoom_limits(curves, first: float) -> tuple[float, float, bool] | None:
    """Test-accuracy range after the first boundary over every curve's band (controls too),
    but no lower than ZOOM_BELOW_REFERENCE points under the reference's band there (a run
    that collapsed would flatten the rest again; the full row above still shows it).

    Returns (low, high, whether some curve is cut off below), or None without evaluations.
    """
    values, ref_values = [], []
    for c in curves:
        keep = np.asarray(c["epoch"], float) > first
        band = [v for a in c["test_accuracy"] for v in np.asarray(a, float)[keep]]
        values += band
        if c.get("role") == "reference":
            ref_values += band
    if not values:
        return None
    lo, hi = min(values), max(values)
    cut = bool(ref_values) and lo < min(ref_values) - ZOOM_BELOW_REFERENCE
    if cut:
        lo = min(ref_values) - ZOOM_BELOW_REFERENCE
    pad = max(0.05, 0.08 * (hi - lo))
    return lo - pad, min(100.0, hi + pad), cut


def plot_runs(curves, path, boundaries=(), title: str = "") -> None:
    """3×2 panels: test accuracy (all of it, then zoomed after the first boundary) and
    training loss (log), against epochs (left) and parameter updates (right, log x).

    ``curves``: one dict per schedule with ``name``, ``updates_total``, ``epoch`` and
    ``updates`` (x values per evaluation), ``test_accuracy`` / ``train_loss`` as (mean,
    lo, hi) arrays over seeds (the band: lo–hi), optionally ``role`` (reference, control,
    ...) and ``verdict``. ``path``: a file name or a binary file object. Dotted lines mark
    the ``boundaries`` (epochs) on the left; on the right each curve marks its own
    boundaries with a hollow circle (the evaluation at that epoch).
    """
    fig, axes = plt.subplots(3, 2, figsize=(13, 12), constrained_layout=True)
    first = zoom_start(curves, boundaries)
    zoom = _zoom_limits(curves, first)
    for c, st in zip(curves, _styles(curves)):
        tag = c.get("role", "")
        if c.get("verdict") and tag != "reference":
            tag += f", {c['verdict']}"
        label = f"{c['name']} ({c['updates_total']:,} updates{', ' + tag if tag else ''})"
        epoch = np.asarray(c["epoch"], float)
        every = max(1, len(epoch) // 12)
        for row, metric in enumerate(("test_accuracy", "test_accuracy", "train_loss")):
            mean, lo, hi = (np.asarray(a, float) for a in c[metric])
            keep = epoch > first - 1e-9 if row == 1 else np.ones_like(epoch, bool)
            for col, x in enumerate((epoch, np.asarray(c["updates"], float))):
                ax = axes[row, col]
                ax.plot(x[keep], mean[keep], label=label, markevery=every, markersize=4,
                        markerfacecolor="none", **st)
                if np.any(hi > lo) and st["marker"]:
                    ax.fill_between(x[keep], lo[keep], hi[keep], color=st["color"], alpha=0.12,
                                    linewidth=0)
                if col == 1:  # this curve's own stage boundaries, on the updates axis
                    at = [int(np.argmin(np.abs(epoch - b))) for b in boundaries]
                    at = [j for j in at if keep[j]]
                    ax.plot(x[at], mean[at], linestyle="none", marker="o", markersize=8,
                            markerfacecolor="none", markeredgecolor=st["color"], zorder=4)
    _decorate(axes, zoom, boundaries, first)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _decorate(axes, zoom, boundaries, first: float) -> None:
    """Labels, scales, the zoomed row's limits, boundaries, titles and the legend."""
    after = "the first boundary" if boundaries else f"epoch {first:.3g}"
    titles = ("test accuracy (%)", f"test accuracy (%), after {after}", "training loss")
    for row, ylabel in enumerate(titles):
        for col, xlabel in enumerate(("epochs", "parameter updates (log)")):
            ax = axes[row, col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if row == 1 and zoom:
                ax.set_ylim(*zoom[:2])
                if zoom[2]:
                    ax.set_title("(some curves are below this range: see the row above)",
                                 fontsize="small")
            if row == 2:
                ax.set_yscale("log")
            if col == 1:
                ax.set_xscale("log")
            else:
                for b in boundaries:
                    ax.axvline(b, color="0.5", linestyle=":", linewidth=1.0)
    axes[0, 0].set_title("against epochs (dotted: stage boundaries)")
    axes[0, 1].set_title("against parameter updates (circles: each schedule's boundaries)")
    axes[0, 0].legend(fontsize="small", title="mean over seeds, band: min–max; grey: controls")


def noise_curves(runs: dict[str, list[list[dict]]]) -> list[dict]:
    """Per schedule (seed 0's run): epochs, the schedule's B and the measured B_simple.

    Schedules whose records hold no measurement (runs made before it existed, or with
    ``config.measure_noise_scale=false``) are left out; an empty list draws nothing.
    """
    out = []
    for name, by_seed in runs.items():
        rows = [r for r in by_seed[0] if r.get("noise_scale_measured")]
        if rows:  # B at every record; B_simple where |G|² was measured positive
            curve = {"name": name, "epoch": [r["epoch"] for r in by_seed[0]],
                     "batch_size": [r["batch_size"] for r in by_seed[0]],
                     "measured_epoch": [r["epoch"] for r in rows],
                     "measured": [r["noise_scale_measured"] for r in rows]}
            if all(r.get("noise_scale_measured_se") is not None for r in rows):
                curve["interval"] = [interval(r["noise_scale_measured"],
                                              r["noise_scale_measured_se"]) for r in rows]
            reads = by_seed[0][-1].get("cap_bounds") or []
            curve["decisions"] = [(_epoch_of_stage(by_seed[0], k), read) for k, read
                                  in enumerate(reads, start=1) if read and read["cap"]]
            out.append(curve)
    return out


def interval(measured: float, se: float, z: float = 1.96) -> tuple[float, float]:
    """B_simple's two-sided 95 % interval from its delta-method standard error (the
    records' ``noise_scale_measured_se``), its lower end kept above 0 for a log axis."""
    return max(measured - z * se, measured / 100), measured + z * se


def _epoch_of_stage(records: list[dict], stage: int) -> float:
    """The epoch where ``stage`` starts in these records (its first record's, less one
    evaluation interval: the decision is taken at the boundary itself)."""
    before = [r["epoch"] for r in records if r["stage"] < stage]
    return before[-1] if before else 0.0


def plot_noise_scale(curves: list[dict], path, boundaries=(), title: str = "") -> None:
    """One panel per schedule: its B (steps) and the measured B_simple (line), log y, over
    epochs — where each stage sits relative to the noise scale the gradients show."""
    cols = min(3, len(curves))
    rows = -(-len(curves) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False,
                             sharey=True, constrained_layout=True)
    for ax, c in zip(axes.flat, curves):
        ax.step(c["epoch"], c["batch_size"], where="pre", color="C3", label="schedule's B")
        ax.plot(c["measured_epoch"], c["measured"], "o-", color="C0", markersize=3,
                label="measured B_simple = tr Σ / |G|²")
        if c.get("interval"):
            low, high = zip(*c["interval"])
            ax.fill_between(c["measured_epoch"], low, high, color="C0", alpha=0.2, linewidth=0,
                            label="its 95 % interval (delta method)")
        for epoch, read in c.get("decisions", []):  # the cap's threshold at each boundary
            ax.plot([epoch], [read["cap"]], "^" if read["grew"] else "v", color="C2",
                    markersize=7, label="cap: c × lower bound (▲ grew, ▼ held)")
        for b in boundaries:
            ax.axvline(b, color="0.5", linestyle=":", linewidth=1.0)
        ax.set(title=c["name"], xlabel="epochs", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("batch size (examples)")
    handles = {}  # one legend entry per kind, from every panel
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    axes[0, 0].legend(handles.values(), handles.keys(), fontsize="small")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def write_noise_figure(path, runs: dict[str, list[list[dict]]], spec: str,
                       reference_config) -> bool:
    """noise_scale.png (``path``: an ``epath.Path``) when the runs measured it; whether drawn."""
    curves = noise_curves(runs)
    if not curves:
        return False
    boundaries, _, _ = report.axes(reference_config)
    with path.open("wb") as f:
        plot_noise_scale(curves, f, boundaries=boundaries,
                         title=f"{spec}: the measured noise scale against each schedule's B")
    return True
