"""MNIST-1D at CPU scale: the paper's five CIFAR-10 rules on N = 40,000 examples.

MNIST-1D (Greydanus 2020) is generated offline by ``mnist1d.data.make_dataset``
with 50,000 samples (40,000 train, 10,000 test). The schedule mirrors CIFAR-10's
200 epochs with steps ×5 at 60/120/160 as 40 epochs with steps at 12/24/32:
B0 = 32, ε0 = 0.05, m = 0.9, cap B_max = N/10 = 4,000. A small 1-D CNN with
ghost batch norm over 16 examples trains to ~99 % test accuracy in a few minutes
on two CPU cores. (Without batch norm, ε = 0.05 at B = 32 is on the edge of
stability for this CNN: some seeds collapse to chance within 12 epochs.) Update counts follow docs/paper.md's arithmetic (Σ epochs·N/B).

Variants (``--config=configs/mnist1d.py:VARIANT``):
  decay_lr, hybrid, increase_batch, increased_lr, increased_momentum, measured_cap
  (increase_batch with B capped by the measured noise scale), and two
  controls that must come out distinguishable from decay_lr: constant_lr (no
  decay at all) and mismatched (B ×2 where ε would fall ×5, so g is not kept).
The same task with a cosine learning rate: ``configs/mnist1d_cosine.py``.
"""

from noise_scale import default_config

N = 40_000


def decay_lr(c):
    """Reference. (32, .05) → (32, .01) → (32, .002) → (32, .0004); 50,000 updates."""
    c.schedule.rule = "decay_lr"


def hybrid(c):
    """(32, .05) → (160, .05) → (160, .01) → (160, .002); 22,000 updates.

    As CIFAR-10's hybrid: one batch increase (cap 5·B0), then ε decays.
    """
    c.schedule.rule = "hybrid"
    c.schedule.max_batch_size = 160


def increase_batch(c):
    """B 32 → 160 → 800 → 4,000 at ε = .05; 18,480 updates (2.7× fewer).

    4,000 = N/10, where B ≪ N starts to fail: the last stage's g is 10 % below
    decay_lr's; ``--config.schedule.exact=True`` solves B = 3,639 instead.
    """
    c.schedule.rule = "increase_batch"


def increased_lr(c):
    """B ∝ ε: ε0 = .25, B0 = 160, ×5 to the cap 4,000, then ε decays; 3,760 updates.

    (160, .25) → (800, .25) → (4000, .25) → (4000, .05). Reconstructed from the
    CIFAR-10 rule as docs/paper.md documents it.
    """
    c.schedule.rule = "hybrid"
    c.schedule.lr_scale = 5.0
    c.schedule.max_batch_size = N // 10


def increased_momentum(c):
    """B ∝ 1/(1−m) on top of increased_lr: m = .98, B0 = 800, cap 4,000; 880 updates.

    (800, .25) → (4000, .25) → (4000, .05) → (4000, .01), all at m = .98.
    """
    increased_lr(c)
    c.schedule.raise_momentum_to = 0.98


def measured_cap(c):
    """increase_batch under the measured cap: B grows at a boundary only while the new B ≤
    c × a 95 % lower confidence bound of the smoothed measured noise scale B_simple
    (McCandlish et al. 2018; ``noise_scale.cap``), else ε takes that step (the hybrid rule).
    18,480 updates if every increase happens, 50,000 if none does. c = 0.2, the default
    chosen from the equivalence error (``cap``; configs/mnist1d_cap.py uses it too), not
    c = 1, McCandlish's efficiency knee: at c = 1 the committed run (docs/mnist1d before
    this change) held at least one boundary in every seed (18,800 to 50,000 updates).
    Prediction, written before its runs: equivalent to decay_lr (c = 0.2 holds at least
    as many boundaries as c = 1 did, so it trains at least as close to decay_lr).
    """
    c.schedule.rule = "increase_batch"
    c.schedule.noise_cap = 0.2


def constant_lr(c):
    """Control: no decay, (32, .05) for all 40 epochs; 50,000 updates. g never falls."""
    c.schedule.rule = "decay_lr"
    c.schedule.boundaries = ()


def mismatched(c):
    """Control: B 32 → 64 → 128 → 256 at ε = .05 (×2 where ε would fall ×5); 26,250 updates.

    g falls ×2 per step instead of ×5: the last stage's g is 15.6× decay_lr's.
    """
    c.schedule.rule = "increase_batch"
    c.schedule.batch_factor = 2.0


VARIANTS = {
    f.__name__: f for f in (decay_lr, hybrid, increase_batch, increased_lr, increased_momentum,
                            measured_cap, constant_lr, mismatched)
}
REFERENCE = "decay_lr"  # what every schedule is compared with
CONTROLS = ("constant_lr", "mismatched")  # must come out distinguishable from REFERENCE


def get_config(variant: str = "increase_batch"):
    c = default_config.get_config()
    c.dataset = "mnist1d"
    c.dataset_size = N
    c.model = "cnn"
    c.cnn_channels = (16, 32, 32)  # 2-2.7x the examples/s of (32, 64, 64) on CPU
    c.ghost_batch_size = 16  # as the paper: batch-norm statistics over a fixed 16 examples
    c.eval_batch_size = 2000
    c.measure_noise_scale = True  # the report's noise-scale figure (noise_scale.gns)
    s = c.schedule
    s.batch_size, s.learning_rate, s.momentum = 32, 0.05, 0.9
    s.total_epochs, s.boundaries, s.factor = 40.0, (12.0, 24.0, 32.0), 5.0
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r} of configs/mnist1d.py; choose one of "
            f"{', '.join(VARIANTS)} (e.g. --config=configs/mnist1d.py:increase_batch)."
        )
    VARIANTS[variant](c)
    c.variant = variant
    c.lock()
    return c
