"""The comparison's figure: test accuracy and training loss against epochs and against updates.

Against epochs the schedules coincide (same g, same epochs); against parameter
updates (log x) the batch-size schedules finish early. That pair of panels is
the paper's figure, so it is drawn from the same seed curves the report uses.
matplotlib with the Agg backend, so it draws on headless machines and CI.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from noise_scale.experiments import report  # noqa: E402


def figure_curves(runs: dict[str, list[list[dict]]], summary: dict, eval_every: float) -> list:
    """One curve per schedule for ``plot_runs``: mean and min–max over seeds per evaluation."""
    curves = []
    for name, by_seed in runs.items():
        acc = report.seed_curve(by_seed, "test_accuracy", eval_every)
        loss = report.seed_curve(by_seed, "train_loss", eval_every)
        curves.append({
            "name": name, "updates_total": summary["variants"][name]["updates"],
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
    with path.open("wb") as f:
        plot_runs(figure_curves(runs, summary, eval_every), f, boundaries=boundaries,
                  title=f"{spec} ({reference_config.optimizer}, {n} seed{'s' if n > 1 else ''})")


def plot_runs(curves, path, boundaries=(), title: str = "") -> None:
    """2×2 panels: test accuracy and training loss (log) against epochs and updates (log x).

    ``curves``: one dict per schedule with ``name``, ``updates_total``, ``epoch`` and
    ``updates`` (x values per evaluation), and ``test_accuracy`` / ``train_loss`` as
    (mean, lo, hi) arrays over seeds; the band is drawn between lo and hi. ``path``
    is a file name or a binary file object. Dashed lines mark the ``boundaries``
    (epochs) in the left column.
    """
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    for i, c in enumerate(curves):
        color = f"C{i}"
        label = f"{c['name']} ({c['updates_total']:,} updates)"
        for row, metric in enumerate(("test_accuracy", "train_loss")):
            mean, lo, hi = (np.asarray(a, float) for a in c[metric])
            for col, x in enumerate((c["epoch"], c["updates"])):
                ax = axes[row, col]
                ax.plot(x, mean, color=color, label=label, marker="." if len(x) < 30 else None)
                if np.any(hi > lo):
                    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    for row, ylabel in enumerate(("test accuracy (%)", "training loss")):
        for col, xlabel in enumerate(("epochs", "parameter updates")):
            ax = axes[row, col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if row == 1:
                ax.set_yscale("log")
            if col == 1:
                ax.set_xscale("log")
            else:
                for b in boundaries:
                    ax.axvline(b, color="0.6", linestyle="--", linewidth=0.8)
    axes[0, 0].set_title("against epochs")
    axes[0, 1].set_title("against parameter updates")
    axes[0, 0].legend(fontsize="small", title="mean over seeds, band: min–max")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
