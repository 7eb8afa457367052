"""Figures: schedules against epochs (runs against epochs and updates: ``experiments.figure``).

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
