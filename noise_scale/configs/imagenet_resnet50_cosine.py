"""ImageNet ResNet-50 with Goyal's warm-up and then a cosine in place of the steps.

The model, data, B0 = 8,192, ε 0.1 → 3.2 over 5 warm-up epochs, Nesterov m = .9 and 90
epochs of ``configs/imagenet_resnet50.py``; after the warm-up ε = 3.2·½(1 + cos(π·t)) to
0 at epoch 90 (the common modern recipe; not in the paper). ``increase_batch`` of a shape
keeps the reference's g at every example with at most 6 batch sizes up to 65,536, never
during the warm-up (``noise_scale.schedule.ladder``): no saving is possible there, so the
bound is 1.89×, not 2×.

Variants: cosine (reference), cosine_increase_batch.
"""

from noise_scale import config_lib

REFERENCE = "cosine"


def cosine(c):
    """Reference: B = 8,192, warm-up to 3.2 over 5 epochs, then a cosine; 14,076 updates."""
    c.schedule.rule = "decay_lr"


def cosine_increase_batch(c):
    """≤ 6 batch sizes up to 65,536 with the reference's g at every example; 8,532 updates.

    B 8,192 → 10,240 → 12,288 → 16,384 → 26,624 → 65,536 from epochs 30.2, 38.4, 47.7,
    58.4, 70.9; 1.65× fewer than ``cosine`` (bound 1.89×). Batch sizes are multiples of
    64 × ghost 32 = 2,048: whole micro-batches of 256 on any slice of up to 8 devices (the
    step presets' sizes are such multiples too).
    """
    c.schedule.rule = "increase_batch"
    c.schedule.max_batch_size = 65_536
    c.schedule.batch_multiple = 64


VARIANTS = {f.__name__: f for f in (cosine, cosine_increase_batch)}


def _cosine(c):
    c.schedule.shape, c.schedule.boundaries = "cosine", ()


def get_config(variant: str = "cosine_increase_batch"):
    return config_lib.derived_config("imagenet_resnet50.py:goyal", __file__, VARIANTS, variant, _cosine)
