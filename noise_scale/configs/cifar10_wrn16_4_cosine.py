"""CIFAR-10 WRN-16-4 with a cosine learning rate (the common modern recipe).

The model, data, B0 = 128, ε0 = .1, Nesterov m = .9 and 200 epochs of
``configs/cifar10_wrn16_4.py``, with ε = .1·½(1 + cos(π·e/200)) in place of the steps.
``increase_batch`` of a shape keeps the reference's g at every example with at most 6
batch sizes up to 5,120 (``noise_scale.schedule.ladder``); not in the paper: our
extension of its rule (bound 2×: 1/mean of the cosine).

Variants: cosine_decay_lr (reference), cosine_increase_batch, cosine_increased_lr.
"""

from noise_scale import config_lib

REFERENCE = "cosine_decay_lr"


def cosine_decay_lr(c):
    """Reference: B = 128, ε = .1 → 0 over 200 epochs; 78,125 updates."""
    c.schedule.rule = "decay_lr"


def cosine_increase_batch(c):
    """≤ 6 batch sizes up to 5,120 with the reference's g at every example; 48,307 updates.

    B 128 → 256 → 384 → 640 → 1,152 → 3,328 from epochs 100.2, 121.9, 141.3, 157.2, 175.7;
    1.62× fewer than cosine_decay_lr (bound 2×).
    """
    c.schedule.rule = "increase_batch"
    c.schedule.max_batch_size = 5120


def cosine_increased_lr(c):
    """B ∝ ε on top: ε0 = .5, B0 = 640, ladder to 5,120; 9,171 updates (8.5× fewer)."""
    cosine_increase_batch(c)
    c.schedule.lr_scale = 5.0


VARIANTS = {f.__name__: f for f in (cosine_decay_lr, cosine_increase_batch, cosine_increased_lr)}


def _cosine(c):
    c.schedule.shape, c.schedule.boundaries = "cosine", ()


def get_config(variant: str = "cosine_increase_batch"):
    return config_lib.derived_config("cifar10_wrn16_4.py:decay_lr", __file__, VARIANTS, variant, _cosine)
