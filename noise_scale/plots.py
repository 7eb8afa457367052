"""Figures: schedules against epochs (and, in reproduce, runs against epochs and updates).

matplotlib with the Agg backend, so plots work on headless TPU VMs and CI.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def schedule_curves(schedule, points: int = 2000):
    """(epochs, B, ε, g) sampled densely enough to show steps and the warm-up ramp."""
    n = schedule.dataset_size
    epochs = np.linspace(0, schedule.total_epochs, points, endpoint=False)
    pos = (epochs * n).astype(np.int64)
    b = np.array([schedule.batch_size_at(int(p)) for p in pos])
    lr = np.array([schedule.learning_rate_at(int(p)) for p in pos])
    g = np.array([schedule.noise_scale_at(int(p)) for p in pos])
    return epochs, b, lr, g


def plot_schedules(schedules, path: str) -> None:
    """Three panels, log scale: batch size, learning rate and noise scale against epochs."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
    for s in schedules:
        epochs, b, lr, g = schedule_curves(s)
        label = f"{s.name} ({s.total_updates:,} updates)"
        for ax, y in zip(axes, (b, lr, g)):
            ax.plot(epochs, y, label=label, drawstyle="steps-post")
    for ax, title in zip(
        axes, ("batch size B", "learning rate ε", "noise scale g = ε/(1−m)(N/B−1)")
    ):
        ax.set_yscale("log")
        ax.set_xlabel("epochs")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
