"""ImageNet with ResNet-50 v1.5: Goyal et al.'s recipe and the paper's rules on it.

N = 1,281,167, 90 epochs; the reference (Goyal et al. 2017, "Accurate, Large
Minibatch SGD") uses B = 8,192, ε = 0.1·B/256 = 3.2 reached by a linear warm-up
from 0.1 over 5 epochs, ε ×0.1 at epochs 30, 60, 80, Nesterov momentum 0.9,
weight decay 1e-4 not on batch-norm or bias parameters, batch-norm statistics
over 32 examples. Smith et al. (2018, v2) apply the batch rule to this schedule
(76.1 % top-1 in under 30 minutes on a TPU pod). Update counts are Σ epochs·N/B.

Variants (``--config=configs/imagenet_resnet50.py:VARIANT``):
  goyal, increase_batch, momentum_090, momentum_095, momentum_0975.
With a cosine in place of the steps: ``configs/imagenet_resnet50_cosine.py``.
"""

from noise_scale import default_config

N = 1_281_167


def goyal(c):
    """B = 8,192, ε 0.1→3.2 warm-up (5 ep), ×0.1 at 30, 60, 80; 14,076 updates. Goyal et al."""
    c.schedule.rule = "decay_lr"


def increase_batch(c):
    """B 8,192 → 81,920 at epoch 30, then ε ×0.1 at 60, 80; 5,631 updates (paper: <6,000)."""
    c.schedule.rule = "hybrid"
    c.schedule.max_batch_size = 81_920


def momentum_090(c):
    """m = .9, B 8,192 → 65,536 at 30 (ε takes the remaining ×0.8), ε decays at 60, 80.

    5,865 updates. *Reconstructed* max-batch-65,536 family (docs/paper.md).
    """
    c.schedule.rule = "hybrid"
    c.schedule.max_batch_size = 65_536


def momentum_095(c):
    """m = .95, B0 = 16,384 (B ∝ 1/(1−m)) → 65,536 at 30 (ε ×0.4); 3,519 updates. *Reconstructed*."""
    momentum_090(c)
    c.schedule.raise_momentum_to = 0.95


def momentum_0975(c):
    """m = .975, B0 = 32,768 → 65,536 at 30 (ε ×0.2); 2,346 updates (paper: 77 % in <2,500).

    *Reconstructed*.
    """
    momentum_090(c)
    c.schedule.raise_momentum_to = 0.975


VARIANTS = {
    f.__name__: f for f in (goyal, increase_batch, momentum_090, momentum_095, momentum_0975)
}
REFERENCE = "goyal"  # what every schedule is compared with


def get_config(variant: str = "increase_batch"):
    c = default_config.get_config()
    c.dataset = "imagenet2012"
    c.dataset_size = N
    c.image_size = 224
    c.model = "resnet50"
    c.ghost_batch_size = 32
    c.optimizer = "nesterov"
    c.weight_decay = 1e-4
    c.label_smoothing = 0.0
    c.dtype = "bfloat16"
    c.eval_batch_size = 1000
    c.max_device_batch = 256
    c.log_every_steps = 10
    s = c.schedule
    s.batch_size, s.learning_rate, s.momentum = 8192, 3.2, 0.9
    s.total_epochs, s.boundaries, s.factor = 90.0, (30.0, 60.0, 80.0), 10.0
    s.warmup_epochs, s.warmup_start_lr = 5.0, 0.1
    if variant not in VARIANTS:
        raise ValueError(
            f"unknown variant {variant!r} of configs/imagenet_resnet50.py; choose one of "
            f"{', '.join(VARIANTS)} (e.g. --config=configs/imagenet_resnet50.py:increase_batch)."
        )
    VARIANTS[variant](c)
    c.variant = variant
    c.lock()
    return c
